variable "account_id" {
  description = "AWS account ID; used to compose the queue URLs and ARNs at plan time."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id must be a 12-digit AWS account ID."
  }
}

variable "partition" {
  description = "AWS partition (aws, aws-cn, aws-us-gov)."
  type        = string
  default     = "aws"
}

variable "region" {
  description = "Region of the queue (envdr's home region)."
  type        = string
}

variable "name" {
  description = "Queue name; the dead-letter queue is NAME-dlq."
  type        = string
  default     = "envdr-events"
  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,76}$", var.name))
    error_message = "name must be 1-76 letters, digits, _ or - (the -dlq suffix must still fit in 80)."
  }
}

variable "visibility_timeout_seconds" {
  description = "Initial visibility timeout; the daemon extends it while working, keep it at least worker.visibility (60 s)."
  type        = number
  default     = 120
  validation {
    condition     = var.visibility_timeout_seconds >= 60 && var.visibility_timeout_seconds <= 43200
    error_message = "visibility_timeout_seconds must be 60 to 43200."
  }
}

variable "max_receive_count" {
  description = "Deliveries before SQS moves an event to the DLQ (the daemon dead-letters poison events itself sooner)."
  type        = number
  default     = 10
  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be 1 to 1000."
  }
}

variable "message_retention_seconds" {
  description = "How long an unprocessed event is kept; cover the longest region outage you plan for."
  type        = number
  default     = 1209600
  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be 60 to 1209600 (14 days)."
  }
}

variable "kms_master_key_id" {
  description = "KMS key ARN for SSE-KMS, in the queue's own region (SQS uses no key of another region); null uses SQS-managed encryption (SSE-SQS). Pass every region's queue key to the iam module as queue_kms_key_arns."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for both queues."
  type        = map(string)
  default     = {}
}

variable "s3_bucket_arns" {
  description = "S3 buckets (the S3 data path: this region's bucket) whose event notifications may be sent to the events queue; empty: no queue policy."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for b in var.s3_bucket_arns : can(regex("^arn:[^:]+:s3:::[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", b))])
    error_message = "s3_bucket_arns must be S3 bucket ARNs (arn:aws:s3:::NAME)."
  }
}
