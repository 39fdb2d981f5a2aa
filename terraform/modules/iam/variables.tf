variable "account_id" {
  description = "AWS account ID of envdr's keys, roles, queue and table."
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

variable "name_prefix" {
  description = "Roles are PREFIX-daemon, PREFIX-producer and PREFIX-operator (envdr policy render assumes envdr)."
  type        = string
  default     = "envdr"
  validation {
    condition     = can(regex("^[a-zA-Z0-9+=,.@_-]{1,50}$", var.name_prefix))
    error_message = "name_prefix must be 1-50 characters valid in an IAM role name."
  }
}

variable "home_region" {
  description = "envdr's home region: where producers call GenerateDataKey."
  type        = string
}

variable "regions" {
  description = "Every envdr region: name, the key or alias ARN the envdr config names, and mode (mrk or independent)."
  type = list(object({
    name    = string
    key_arn = string
    mode    = string
  }))
  validation {
    condition     = alltrue([for r in var.regions : contains(["mrk", "independent"], r.mode)])
    error_message = "mode must be mrk or independent."
  }
  validation {
    condition     = alltrue([for r in var.regions : can(regex("^arn:[^:]+:kms:${r.name}:[0-9]{12}:(key|alias)/.+$", r.key_arn))])
    error_message = "key_arn must be a KMS key or alias ARN in the region it is listed for."
  }
}

variable "table_name" {
  description = "DynamoDB records table (a global table with a replica in every region)."
  type        = string
}

variable "queue_arn" {
  description = "ARN of the event queue."
  type        = string
  validation {
    condition     = can(regex("^arn:[^:]+:sqs:", var.queue_arn))
    error_message = "queue_arn must be an SQS queue ARN."
  }
}

variable "dlq_arn" {
  description = "ARN of the dead-letter queue; empty for none."
  type        = string
  default     = ""
}

variable "previous_key_arns" {
  description = "Key ARNs of the config's regions[].previous_keys and trusted_keys: still unwrapped by the daemon, operator and rewrap roles. (Alias ARNs there: envdr policy render scopes them by kms:ResourceAliases; not supported here.)"
  type        = list(string)
  default     = []
}

variable "region_queue_arns" {
  description = "ARNs of the other regions' event queues (config regions[].queue_url), when every region has its own."
  type        = list(string)
  default     = []
}

variable "region_dlq_arns" {
  description = "ARNs of the other regions' dead-letter queues (config regions[].dlq_url)."
  type        = list(string)
  default     = []
}

variable "queue_kms_key_arn" {
  description = "KMS key of the queue's SSE-KMS encryption; empty for SQS-managed encryption."
  type        = string
  default     = ""
}

variable "admin_arns" {
  description = "Key administrators named in the key policies; empty means the account root (administration through IAM, no use of the key)."
  type        = list(string)
  default     = []
}

variable "ecs" {
  description = "Let ECS tasks of this account assume the daemon role (ECS task role)."
  type        = bool
  default     = true
}

variable "eks_oidc_provider_arn" {
  description = "IAM OIDC provider ARN of the EKS cluster; when set, the daemon role trusts the envdr service account (IRSA)."
  type        = string
  default     = ""
}

variable "eks_namespace" {
  description = "Kubernetes namespace of the envdr service account."
  type        = string
  default     = "envdr"
}

variable "eks_service_account" {
  description = "Name of the envdr Kubernetes service account."
  type        = string
  default     = "envdr"
}

variable "eks_pod_identity" {
  description = "EKS Pod Identity associations for the daemon role: one per cluster, namespace and service account (the Helm chart's default service account is envdr-REGION). The role then trusts pods.eks.amazonaws.com for these clusters only."
  type = list(object({
    region          = string
    cluster_name    = string
    namespace       = string
    service_account = string
  }))
  default = []
}

variable "producer_trusted_arns" {
  description = "Principals that may assume the producer role; empty means the account (then IAM policies decide who)."
  type        = list(string)
  default     = []
}

variable "operator_trusted_arns" {
  description = "Principals that may assume the operator role; empty means the account."
  type        = list(string)
  default     = []
}

variable "ecs_execution_role" {
  description = "Also create an ECS task execution role (image pull, logs, reading the config parameter)."
  type        = bool
  default     = true
}

variable "config_parameter_arn" {
  description = "SSM parameter holding envdr.yaml for ECS; the execution role may read it. Empty for none."
  type        = string
  default     = ""
}

variable "config_parameter_arns" {
  description = "The same parameter in the other regions (a task started during the home region's outage reads its own region's copy)."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags for the roles."
  type        = map(string)
  default     = {}
}
