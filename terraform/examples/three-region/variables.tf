variable "account_id" {
  description = "AWS account ID to deploy into (composes ARNs at plan time; checked against real ARNs after apply)."
  type        = string
  validation {
    condition     = can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id must be a 12-digit AWS account ID."
  }
}

variable "home_region" {
  description = "Region where producers seal and the queue lives; holds the MRK primary."
  type        = string
  default     = "us-east-1"
}

variable "replica_regions" {
  description = "Regions that must open envelopes on their own if the home region is lost."
  type        = list(string)
  default     = ["eu-west-1", "ap-southeast-2"]
  validation {
    condition     = length(var.replica_regions) > 0
    error_message = "A DR setup needs at least one replica region."
  }
}

variable "name" {
  description = "Prefix of every resource name and the key alias."
  type        = string
  default     = "envdr"
}

variable "eks_oidc_provider_arns" {
  description = "IRSA: the IAM OIDC provider of the EKS cluster that runs envdr in each region, by region (one cluster per region, or the same provider for several). The Helm chart's release in region R uses the service accounts envdr-R and envdr-R-drill. Empty for ECS only."
  type        = map(string)
  default     = {}
}

variable "kms_rate" {
  description = "Each daemon's share of a region's KMS request quota (requests per second)."
  type        = number
  default     = 1000
}

variable "cloudtrail" {
  description = "Create a multi-Region trail for KMS events (skip if an organisation trail already records them)."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Deletion protection on the table; false only for throw-away test setups."
  type        = bool
  default     = true
}

variable "bucket_names" {
  description = "The S3 data path: bucket name by region; a region not listed gets NAME-data-ACCOUNT-REGION."
  type        = map(string)
  default     = {}
}

variable "bucket_sse" {
  description = "Bucket encryption: AES256 (SSE-S3) or aws:kms (SSE-KMS under a bucket key per region). Envelopes are encrypted client-side either way."
  type        = string
  default     = "AES256"
}

variable "object_lock" {
  description = "Object Lock default retention of the buckets ({ mode = GOVERNANCE|COMPLIANCE, days = N }), or null. Can be turned on later, never off (S3 keeps Object Lock enabled)."
  type = object({
    mode = string
    days = number
  })
  default = null
}

variable "noncurrent_version_expiration_days" {
  description = "Delete an object's noncurrent versions after this many days (null: keep them)."
  type        = number
  default     = 90
}
