output "queue_url" {
  description = "URL of the event queue (the envdr config's queue_url)."
  value       = "${local.host}/${var.name}"
  depends_on  = [aws_sqs_queue.events]
}

output "queue_arn" {
  description = "ARN of the event queue."
  value       = local.arn
  depends_on  = [aws_sqs_queue.events]
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
