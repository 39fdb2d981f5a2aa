variable "name" {
  description = "Trail name; the log bucket is NAME-ACCOUNT."
  type        = string
  default     = "envdr-kms"
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]{2,40}$", var.name))
    error_message = "name must be 3-41 lowercase letters, digits or - (it is part of the bucket name)."
  }
}

variable "account_id" {
  description = "AWS account ID (bucket name and bucket policy conditions)."
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
  description = "Home region of the multi-Region trail and its bucket."
  type        = string
}

variable "retention_days" {
  description = "Days to keep log files."
  type        = number
  default     = 400
  validation {
    condition     = var.retention_days >= 90
    error_message = "retention_days must be at least 90: key-use investigations look back months."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
