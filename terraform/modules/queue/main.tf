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
