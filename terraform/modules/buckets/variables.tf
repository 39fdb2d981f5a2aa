variable "account_id" {
  description = "AWS account ID of the buckets, the replication role and the bucket keys (composes ARNs at plan time)."
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

variable "name" {
  description = "Prefix of the replication role (NAME-s3-replication) and of the bucket keys' aliases (alias/NAME-s3)."
  type        = string
  default     = "envdr"
}

variable "buckets" {
  description = "One bucket per envdr region: the region, the bucket name (the envdr config's regions[].bucket) and the ARN of the region's events queue that receives its ObjectCreated notifications (null: none). Every bucket replicates to every other (each region a peer)."
  type = list(object({
    region    = string
    name      = string
    queue_arn = optional(string)
  }))
  validation {
    condition     = length(var.buckets) == length(distinct([for b in var.buckets : b.region]))
    error_message = "buckets lists a region twice: one bucket per region (the region's replica of every other's objects)."
  }
  validation {
    condition     = alltrue([for b in var.buckets : can(regex("^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$", b.name))])
    error_message = "Bucket names must be 3-63 lower-case letters, digits and hyphens (no dots: they break TLS for virtual-hosted-style requests)."
  }
  validation {
    condition     = alltrue([for b in var.buckets : b.queue_arn == null || can(regex("^arn:[^:]+:sqs:${b.region}:[0-9]{12}:.+$", b.queue_arn))])
    error_message = "queue_arn must be an SQS queue ARN in the bucket's own region (S3 sends notifications only to queues of the bucket's region)."
  }
}

variable "sse" {
  description = "Server-side encryption: AES256 (SSE-S3, the default) or aws:kms (SSE-KMS under a customer managed key per region that the module creates, with S3 Bucket Keys). envdr envelopes are already encrypted client-side (AES-256-GCM under a KMS-wrapped data key), so SSE-KMS adds an access-control and audit layer, not confidentiality."
  type        = string
  default     = "AES256"
  validation {
    condition     = contains(["AES256", "aws:kms"], var.sse)
    error_message = "sse must be AES256 (SSE-S3) or aws:kms (SSE-KMS)."
  }
}

variable "kms_key_writer_arns" {
  description = "With sse = aws:kms: the roles that write objects (envdr's producer and gameday roles), granted the bucket key's kms:GenerateDataKey and kms:Decrypt (multipart uploads) in each region's key policy, only through S3 in that region."
  type        = list(string)
  default     = []
}

variable "kms_key_reader_arns" {
  description = "With sse = aws:kms: the roles that only read objects (envdr's daemon, operator and drill roles), granted the bucket key's kms:Decrypt, only through S3 in its region."
  type        = list(string)
  default     = []
}

variable "kms_key_admin_arns" {
  description = "With sse = aws:kms: administrators of the bucket keys (empty: the account root, which then administers through IAM and uses no key)."
  type        = list(string)
  default     = []
}

variable "object_lock" {
  description = "Object Lock default retention (null: off). It can be turned on for the existing (versioned) buckets, never off: S3 keeps Object Lock enabled, and setting this back to null removes only the default retention. mode is GOVERNANCE or COMPLIANCE (even the root user cannot shorten COMPLIANCE); days the retention of every new object version."
  type = object({
    mode = string
    days = number
  })
  default = null
  validation {
    condition     = var.object_lock == null || try(contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock.mode), false)
    error_message = "object_lock.mode must be GOVERNANCE or COMPLIANCE."
  }
  validation {
    condition     = var.object_lock == null || try(var.object_lock.days >= 1 && floor(var.object_lock.days) == var.object_lock.days, false)
    error_message = "object_lock.days must be a whole number of days, at least 1."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Delete an object version this many days after it stops being current (overwritten or deleted); null keeps every version. Object Lock retention still applies."
  type        = number
  default     = 90
  validation {
    condition     = var.noncurrent_version_expiration_days == null || try(var.noncurrent_version_expiration_days >= 1, false)
    error_message = "noncurrent_version_expiration_days must be at least 1, or null."
  }
}

variable "abort_incomplete_multipart_upload_days" {
  description = "Abort multipart uploads left incomplete this many days (envdr seal to s3:// streams as a multipart upload; an interrupted one leaves parts that are billed)."
  type        = number
  default     = 7
}

variable "replication" {
  description = "Cross-Region Replication from every bucket to every other one, with Replication Time Control (15 minutes) and replication metrics."
  type        = bool
  default     = true
}

variable "delete_marker_replication" {
  description = "Replicate delete markers. Off by default: a delete in one region then leaves the other regions' replicas readable, which is what a DR copy is for."
  type        = bool
  default     = false
}

variable "notification_events" {
  description = "S3 events sent to each region's events queue (envdr run reads ObjectCreated notifications)."
  type        = list(string)
  default     = ["s3:ObjectCreated:*"]
}

variable "notification_prefix" {
  description = "Only objects whose key starts with this prefix are notified (empty: all)."
  type        = string
  default     = ""
}

variable "force_destroy" {
  description = "Let terraform destroy delete buckets that still hold objects; for throw-away test setups only."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for the buckets, keys and role."
  type        = map(string)
  default     = {}
}
