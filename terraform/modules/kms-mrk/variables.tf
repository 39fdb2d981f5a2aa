variable "account_id" {
  description = "AWS account ID the key lives in; used to compose alias ARNs that are known at plan time."
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

variable "primary_region" {
  description = "Region of the multi-Region primary key (envdr's home region)."
  type        = string
}

variable "replica_regions" {
  description = "Regions that get an aws_kms_replica_key of the primary (every other region envdr wraps into)."
  type        = list(string)
  validation {
    condition     = length(var.replica_regions) == length(distinct(var.replica_regions))
    error_message = "replica_regions must not repeat a region."
  }
}

variable "alias" {
  description = "Alias name without the alias/ prefix; created in every region, so the envdr config can name alias ARNs."
  type        = string
  default     = "envdr"
  validation {
    condition     = can(regex("^[a-zA-Z0-9/_-]+$", var.alias)) && !startswith(var.alias, "aws/")
    error_message = "alias may hold letters, digits, /, _ and - and must not start with aws/."
  }
}

variable "policy" {
  description = "Key policy JSON (terraform/modules/iam output key_policies, or envdr policy render). The same document goes on the primary and every replica: replica policies that drift apart are a lint error."
  type        = string
  validation {
    condition     = can(jsondecode(var.policy).Statement)
    error_message = "policy must be a JSON policy document with a Statement."
  }
}

variable "rotation_period_in_days" {
  description = "Automatic rotation period of the key material (rotation is always on)."
  type        = number
  default     = 365
  validation {
    condition     = var.rotation_period_in_days >= 90 && var.rotation_period_in_days <= 2560
    error_message = "rotation_period_in_days must be 90 to 2560."
  }
}

variable "deletion_window_in_days" {
  description = "Waiting period before a scheduled deletion takes effect; long, because deleting the key loses every envelope."
  type        = number
  default     = 30
  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be 7 to 30."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
