locals {
  host     = "https://sqs.${var.region}.amazonaws.com/${var.account_id}"
  dlq_name = "${var.name}-dlq"
  arn      = "arn:${var.partition}:sqs:${var.region}:${var.account_id}:${var.name}"
  dlq_arn  = "arn:${var.partition}:sqs:${var.region}:${var.account_id}:${local.dlq_name}"
  sse_sqs  = var.kms_master_key_id == null
}

resource "aws_sqs_queue" "dlq" {
  region                    = var.region
  name                      = local.dlq_name
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = local.sse_sqs ? true : null
  kms_master_key_id         = var.kms_master_key_id
  tags                      = var.tags

  lifecycle {
    precondition {
      # Only a key ARN names its region (a key ID or alias is looked up in the queue's region).
      condition     = try(split(":", var.kms_master_key_id)[3] == var.region, true)
      error_message = "kms_master_key_id must be a key in the queue's region (${var.region}): SQS uses only keys of its own region."
    }
    postcondition {
      condition     = self.arn == local.dlq_arn
      error_message = "The DLQ ARN differs from the composed one: is account_id right?"
    }
  }
}

resource "aws_sqs_queue" "events" {
  region                     = var.region
  name                       = var.name
  visibility_timeout_seconds = var.visibility_timeout_seconds
  message_retention_seconds  = var.message_retention_seconds
  receive_wait_time_seconds  = 20
  sqs_managed_sse_enabled    = local.sse_sqs ? true : null
  kms_master_key_id          = var.kms_master_key_id
  # The composed ARN keeps the redrive policy known at plan time; depends_on orders creation.
  redrive_policy = jsonencode({
    deadLetterTargetArn = local.dlq_arn
    maxReceiveCount     = var.max_receive_count
  })
  tags       = var.tags
  depends_on = [aws_sqs_queue.dlq]

  lifecycle {
    postcondition {
      condition     = self.arn == local.arn
      error_message = "The queue ARN differs from the composed one: is account_id right?"
    }
  }
}

resource "aws_sqs_queue_redrive_allow_policy" "dlq" {
  region    = var.region
  queue_url = aws_sqs_queue.dlq.url
  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [local.arn]
  })
}

# S3 event notifications (the S3 data path): the region's bucket sends ObjectCreated events here.
# S3 publishes as the service principal; aws:SourceArn names the bucket and aws:SourceAccount
# its owner, so no other account's bucket of the same name can send (the confused-deputy guard
# of "Granting permissions to publish event notification messages to a destination").
resource "aws_sqs_queue_policy" "events" {
  count     = length(var.s3_bucket_arns) > 0 ? 1 : 0
  region    = var.region
  queue_url = aws_sqs_queue.events.url
  policy = jsonencode({
    Version = "2012-10-17"
    Id      = "${local.arn}/envdr-s3-notifications"
    Statement = [{
      Sid       = "S3ObjectCreatedNotifications"
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sqs:SendMessage"
      Resource  = local.arn
      Condition = {
        ArnLike      = { "aws:SourceArn" = var.s3_bucket_arns }
        StringEquals = { "aws:SourceAccount" = var.account_id }
      }
    }]
  })

  lifecycle {
    precondition {
      # S3 validates the destination when the notification is configured and refuses an
      # SSE-KMS queue whose key it may not use; the AWS managed key aws/sqs never lets it.
      condition     = var.kms_master_key_id == null || !can(regex("alias/aws/sqs$", var.kms_master_key_id))
      error_message = "S3 cannot send notifications to a queue encrypted with the AWS managed key alias/aws/sqs: use SSE-SQS (kms_master_key_id = null) or a customer managed key whose policy has s3_kms_key_policy_statement."
    }
  }
}
