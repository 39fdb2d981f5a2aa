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

variable "daemon_scrub" {
  description = "Whether envdr run scrubs (scrub.budget in its config): then the daemon role may also Scan the records table."
  type        = bool
  default     = false
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

variable "queue_kms_key_arns" {
  description = "KMS keys of the queues' SSE-KMS encryption, one per region (a key serves only the queues of its own region); empty for SQS-managed encryption."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for k in var.queue_kms_key_arns : can(regex("^arn:[^:]+:kms:[^:]+:[0-9]{12}:key/.+$", k))])
    error_message = "queue_kms_key_arns must be KMS key ARNs (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
  validation {
    condition     = length(var.queue_kms_key_arns) == length(distinct([for k in var.queue_kms_key_arns : split(":", k)[3]]))
    error_message = "queue_kms_key_arns lists two keys in one region: give one queue key per region."
  }
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

variable "eks_irsa" {
  description = "IRSA, per EKS cluster: its IAM OIDC provider ARN, the namespace, and the service accounts that may assume the daemon role (service_accounts) and the drill role (drill_service_accounts). The Helm chart names them envdr-REGION and envdr-REGION-drill; one cluster per region is one entry per region."
  type = list(object({
    oidc_provider_arn      = string
    namespace              = optional(string, "envdr")
    service_accounts       = list(string)
    drill_service_accounts = optional(list(string), [])
  }))
  default = []
  validation {
    condition     = alltrue([for c in var.eks_irsa : can(regex("^arn:[^:]+:iam::[0-9]{12}:oidc-provider/.+$", c.oidc_provider_arn))])
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN (arn:aws:iam::ACCOUNT:oidc-provider/oidc.eks.REGION.amazonaws.com/id/ID)."
  }
  validation {
    condition     = length(var.eks_irsa) == length(distinct([for c in var.eks_irsa : c.oidc_provider_arn]))
    error_message = "eks_irsa lists an OIDC provider twice: list all of a cluster's service accounts in one entry."
  }
}

variable "eks_pod_identity" {
  description = "EKS Pod Identity associations: one per cluster and namespace, for the daemon's service account (the Helm chart's default is envdr-REGION) and, if set, the drill's (envdr-REGION-drill) with the drill role. The roles then trust pods.eks.amazonaws.com for these clusters only."
  type = list(object({
    region                = string
    cluster_name          = string
    namespace             = string
    service_account       = string
    drill_service_account = optional(string, "")
  }))
  default = []
}

variable "producer_trusted_arns" {
  description = "Principals that may assume the producer role; empty means the account (then IAM policies decide who)."
  type        = list(string)
  default     = []
}

variable "failover_trusted_arns" {
  description = "Principals that may assume the failover role (UpdatePrimaryRegion: your key administrators); empty means the account."
  type        = list(string)
  default     = []
}

variable "operator_trusted_arns" {
  description = "Principals that may assume the operator, rewrap and gameday roles; empty means the account."
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

variable "buckets" {
  description = "The S3 data path: every region's bucket of envelopes (the envdr config's regions[].bucket); empty: no S3 access. Producers and game days write (PutObject, multipart); the daemon, operators, drills and game days read (GetObject); drills and game days list (ListBucket)."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for b in var.buckets : can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", b))])
    error_message = "buckets must be S3 bucket names."
  }
}
