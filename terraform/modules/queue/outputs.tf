output "queue_url" {
  description = "URL of the event queue (the envdr config's queue_url)."
  value       = "${local.host}/${var.name}"
  depends_on  = [aws_sqs_queue.events]
}

output "queue_arn" {
  description = "ARN of the event queue. Depends on the queue policy too: S3 checks it can send when a bucket's notification names the queue."
  value       = local.arn
  depends_on  = [aws_sqs_queue.events, aws_sqs_queue_policy.events]
}

output "dlq_url" {
  description = "URL of the dead-letter queue (the envdr config's dlq_url)."
  value       = "${local.host}/${local.dlq_name}"
  depends_on  = [aws_sqs_queue.dlq]
}

output "dlq_arn" {
  description = "ARN of the dead-letter queue."
  value       = local.dlq_arn
  depends_on  = [aws_sqs_queue.dlq]
}

output "s3_kms_key_policy_statement" {
  description = "With SSE-KMS (kms_master_key_id) and s3_bucket_arns: the statement the queue key's policy needs so that S3 can send notifications (S3 encrypts each message through SQS); null otherwise."
  value = var.kms_master_key_id == null || length(var.s3_bucket_arns) == 0 ? null : {
    Sid       = "S3NotificationsToEnvdrQueue"
    Effect    = "Allow"
    Principal = { Service = "s3.amazonaws.com" }
    Action    = ["kms:Decrypt", "kms:GenerateDataKey"]
    # The documented statement, without conditions: which bucket may send is the queue
    # policy's to decide (aws:SourceArn, aws:SourceAccount there).
    Resource = "*"
  }
}
