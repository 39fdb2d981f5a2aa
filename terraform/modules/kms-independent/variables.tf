variable "account_id" {
  description = "AWS account ID the keys live in; used to compose alias ARNs that are known at plan time."
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

variable "regions" {
  description = "Regions that each get their own single-Region key (envdr mode: independent)."
  type        = list(string)
  validation {
    condition     = length(var.regions) > 0 && length(var.regions) == length(distinct(var.regions))
    error_message = "regions must list at least one region, each once."
  }
}

variable "alias" {
  description = "Alias name without the alias/ prefix, created for the key in every region."
  type        = string
  default     = "envdr"
  validation {
    condition     = can(regex("^[a-zA-Z0-9/_-]+$", var.alias)) && !startswith(var.alias, "aws/")
    error_message = "alias may hold letters, digits, /, _ and - and must not start with aws/."
  }
}

variable "policies" {
  description = "Key policy JSON per region (terraform/modules/iam output key_policies)."
  type        = map(string)
  validation {
    condition     = alltrue([for p in values(var.policies) : can(jsondecode(p).Statement)])
    error_message = "every policy must be a JSON policy document with a Statement."
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
  description = "Waiting period before a scheduled deletion takes effect."
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
