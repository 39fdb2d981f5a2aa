variable "region" {
  description = "Region of the ECS service, its queue and the drill schedule (one instance of this module per region)."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "envdr"
}

variable "cluster_name" {
  description = "ECS cluster of the envdr service (deploy/ecs/service.json)."
  type        = string
}

variable "cluster_arn" {
  description = "ARN of that cluster (the drill task runs there)."
  type        = string
}

variable "service_name" {
  description = "The envdr ECS service whose desired count follows the queue."
  type        = string
  default     = "envdr"
}

variable "queue_name" {
  description = "Name of the region's event queue (its depth drives the scaling)."
  type        = string
}

variable "min_capacity" {
  description = "Fewest daemon tasks; at least 1 so a burst is never met by zero consumers."
  type        = number
  default     = 2
  validation {
    condition     = var.min_capacity >= 1
    error_message = "min_capacity must be at least 1."
  }
}

variable "max_capacity" {
  description = "Most daemon tasks."
  type        = number
  default     = 20
}

variable "backlog_per_task" {
  description = "Target queue depth (visible + in flight) per running task, as KEDA's queueLength on EKS: about worker.concurrency times a few seconds of work."
  type        = number
  default     = 50
}

variable "task_definition_arn" {
  description = "The envdr task definition (deploy/ecs/task-definition.json, registered); the drill runs it with its command overridden, so it reads the same config with the same role."
  type        = string
}

variable "drill_task_role_arn" {
  description = "The drill's task role (terraform/modules/iam's envdr-drill: read-only): the schedule overrides the task definition's daemon role with it and may pass only it and the execution role."
  type        = string
  validation {
    condition     = can(regex("^arn:[^:]+:iam::[0-9]{12}:role/.+$", var.drill_task_role_arn))
    error_message = "drill_task_role_arn must be an IAM role ARN."
  }
}

variable "execution_role_arn" {
  description = "The task execution role that the scheduler passes to the drill task."
  type        = string
}

variable "subnets" {
  description = "Private subnets for the drill task."
  type        = list(string)
}

variable "security_groups" {
  description = "Security groups for the drill task (egress 443 to the AWS endpoints)."
  type        = list(string)
}

variable "drill_schedule" {
  description = "EventBridge Scheduler expression of the drills (UTC); null turns them off."
  type        = string
  default     = "cron(17 3 ? * MON *)"
}

variable "drill_lose" {
  description = "Regions each scheduled drill loses (one schedule per region); never var.region itself."
  type        = list(string)
  default     = []
  validation {
    condition     = length(var.drill_lose) == length(distinct(var.drill_lose))
    error_message = "drill_lose lists a region twice."
  }
}

variable "drill_max_rpo" {
  description = "envdr drill --max-rpo: the drill fails when the recovery point is older."
  type        = string
  default     = "15m"
}

variable "drill_min_recoverable" {
  description = "envdr drill --min-recoverable, in percent."
  type        = number
  default     = 100
}

variable "pushgateway_url" {
  description = "Prometheus Pushgateway the drill pushes envdr_drill_* to (empty: none; the JSON report still lands in the task's logs)."
  type        = string
  default     = ""
}

variable "scan_schedule" {
  description = "EventBridge Scheduler expression of a sharded full scan (UTC), e.g. cron(0 1 1 * ? *) monthly; null (the default) turns it off."
  type        = string
  default     = null
}

variable "scan_shards" {
  description = "N: the scan's shards, one task each (--shard i/N). Each task spends up to the config's kms_rate per region: choose N from the KMS budget (docs/DRILLS.md#sharded-scans-choosing-n)."
  type        = number
  default     = 4
  validation {
    condition     = var.scan_shards >= 1 && var.scan_shards <= 1000 && floor(var.scan_shards) == var.scan_shards
    error_message = "scan_shards must be a whole number from 1 to 1000 (envdr --shard's limit)."
  }
}

variable "scan_command" {
  description = "The sharded scan: verify (read-only, --no-write) or drill (losing scan_lose)."
  type        = string
  default     = "verify"
  validation {
    condition     = contains(["verify", "drill"], var.scan_command)
    error_message = "scan_command must be verify or drill."
  }
}

variable "scan_lose" {
  description = "With scan_command drill: the region the drill loses (never var.region)."
  type        = string
  default     = ""
}

variable "scan_segments" {
  description = "Parallel scan segments per shard (--segments, the same in every shard): the table is read in scan_shards x scan_segments segments."
  type        = number
  default     = 4
}

variable "scan_report_prefix" {
  description = "s3://bucket/prefix the shards write their reports under (VERB-SCHEDULED_TIME/shard-i.json), merged by one more task into VERB-SCHEDULED_TIME/merged.json; empty: the reports are only in the tasks' logs (--json) and nothing merges them. The drill role needs s3:PutObject and s3:GetObject there."
  type        = string
  default     = ""
  validation {
    condition     = var.scan_report_prefix == "" || can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", var.scan_report_prefix))
    error_message = "scan_report_prefix must be s3://bucket/prefix or empty."
  }
}

variable "scan_merge_wait" {
  description = "How long the merge task waits for the shards' reports (envdr report merge --wait): longer than the slowest shard takes, e.g. 24h."
  type        = string
  default     = "24h"
  validation {
    condition     = can(regex("^([0-9]+(h|m|s))+$", var.scan_merge_wait))
    error_message = "scan_merge_wait must be a Go duration such as 24h or 90m."
  }
}
