variable "account_id" {
  description = "AWS account ID; used to compose the table ARNs at plan time."
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
  description = "Table name (the envdr config's table)."
  type        = string
  default     = "envdr-records"
  validation {
    condition     = can(regex("^[a-zA-Z0-9_.-]{3,255}$", var.name))
    error_message = "name must be 3-255 letters, digits, _, . or -."
  }
}

variable "home_region" {
  description = "Region of the table's first replica (envdr's home region)."
  type        = string
}

variable "replica_regions" {
  description = "Other regions that get a replica of the global table; every region envdr verifies in needs one."
  type        = list(string)
  validation {
    condition     = length(var.replica_regions) == length(distinct(var.replica_regions))
    error_message = "replica_regions must not repeat a region."
  }
}

variable "deletion_protection" {
  description = "Deletion protection on the table and every replica. Turn it off only to tear down a test setup."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Customer managed key for server-side encryption in the home region; null uses the AWS owned key. Set replica_kms_key_arns too."
  type        = string
  default     = null
}

variable "replica_kms_key_arns" {
  description = "With kms_key_arn: the customer managed key of each replica, by region, each in its own region (a multi-Region key's replicas fit)."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for r, k in var.replica_kms_key_arns : can(regex("^arn:[^:]+:kms:${r}:[0-9]{12}:key/.+$", k))])
    error_message = "Each replica_kms_key_arns value must be a KMS key ARN in the region it is listed for."
  }
}

variable "tags" {
  description = "Tags for the table and (propagated) its replicas."
  type        = map(string)
  default     = {}
}
