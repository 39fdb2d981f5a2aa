# Monitoring of envdr on ECS (issue 23), the counterpart of the Helm chart's ServiceMonitor and
# PrometheusRule:
#
# - CloudWatch alarms on what AWS itself measures, per region: the queue's oldest message, the
#   DLQ's depth, the global table's ReplicationLatency towards every other region, and no
#   running task (every daemon gone: missing data counts as breaching).
# - envdr's own metrics through an ADOT (AWS Distro for OpenTelemetry) collector sidecar in the
#   task definition (deploy/ecs/task-definition.json): it scrapes the daemon's /metrics and
#   remote-writes them to an Amazon Managed Service for Prometheus workspace, where this module
#   loads the very alert rules the Helm chart installs (files/prometheusrule.yaml, a copy of
#   deploy/monitoring/prometheusrule.yaml kept identical by test/deploycheck), the decryptability
#   SLO burn-rate alerts included. ADOT rather than EMF: the burn-rate alerts need the histogram's
#   buckets as counters, which remote write keeps and EMF does not.

variable "alarm_actions" {
  description = "SNS topic ARNs notified when a CloudWatch alarm fires or recovers."
  type        = list(string)
  default     = []
}

variable "dlq_name" {
  description = "Name of the region's dead-letter queue (empty: queue_name followed by -dlq)."
  type        = string
  default     = ""
}

variable "queue_age_alarm_seconds" {
  description = "Alarm when the queue's oldest message is older than this for 10 minutes (ApproximateAgeOfOldestMessage)."
  type        = number
  default     = 900
}

variable "table_name" {
  description = "The records global table (its ReplicationLatency from this region is alarmed on); null: no replication alarms."
  type        = string
  default     = null
}

variable "replica_regions" {
  description = "The table's other replica regions: one ReplicationLatency alarm each (dimension ReceivingRegion)."
  type        = list(string)
  default     = []
}

variable "replication_latency_alarm_ms" {
  description = "Alarm when the average ReplicationLatency towards a replica exceeds this many milliseconds for 15 minutes."
  type        = number
  default     = 5000
}

variable "s3_replication" {
  description = "The S3 data path: the replication rules whose source bucket is in this region (modules/buckets replication_rules, filtered by source_region); each gets alarms on S3's replication metrics. Empty: none."
  type = list(object({
    source_bucket      = string
    destination_bucket = string
    rule_id            = string
  }))
  default = []
}

variable "s3_replication_latency_alarm_seconds" {
  description = "Alarm when S3's ReplicationLatency towards a destination exceeds this many seconds for 5 minutes (900: Replication Time Control's 15 minutes)."
  type        = number
  default     = 900
}

variable "s3_pending_operations_alarm" {
  description = "Alarm when more than this many operations wait for replication to one destination for 15 minutes (OperationsPendingReplication)."
  type        = number
  default     = 1000
}

variable "amp_workspace_id" {
  description = "Amazon Managed Service for Prometheus workspace (in var.region) the ADOT sidecar remote-writes to; the alert rules are loaded there. null: none."
  type        = string
  default     = null
}

variable "daemon_task_role_arn" {
  description = "The envdr service's task role (envdr-daemon), which the ADOT sidecar runs with: granted aps:RemoteWrite on amp_workspace_id. Required with amp_workspace_id."
  type        = string
  default     = null
  validation {
    condition     = var.daemon_task_role_arn == null || can(regex("^arn:[^:]+:iam::[0-9]{12}:role/.+$", var.daemon_task_role_arn))
    error_message = "daemon_task_role_arn must be an IAM role ARN."
  }
}

variable "slo_objective" {
  description = "Decryptability SLO: the share of envelopes protected within slo_threshold_seconds (docs/RUNBOOK.md#slo-the-decryptability-objective)."
  type        = number
  default     = 0.9999
  validation {
    condition     = var.slo_objective > 0 && var.slo_objective < 1
    error_message = "slo_objective must be between 0 and 1, such as 0.9999."
  }
}

variable "slo_threshold_seconds" {
  description = "Decryptability SLO threshold: a bucket of envdr_protection_seconds."
  type        = number
  default     = 15
  validation {
    condition     = contains([0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600, 1800, 3600], var.slo_threshold_seconds)
    error_message = "slo_threshold_seconds must be a bucket of envdr_protection_seconds: 0.25 0.5 1 2 3 5 7.5 10 15 20 30 60 120 300 600 1800 3600."
  }
}

locals {
  dlq_name = var.dlq_name != "" ? var.dlq_name : "${var.queue_name}-dlq"
  # The shipped rules with this deployment's SLO, as the Helm chart sets them; the sidecar's job
  # is envdr-REGION, which the rules' default job pattern matches.
  slo_le = replace(tostring(var.slo_threshold_seconds), ".", "\\\\.")
  rules_text = replace(replace(file("${path.module}/files/prometheusrule.yaml"),
    "vector(0.9999)", "vector(${var.slo_objective})"),
  "le=~\"15|15\\\\.0\"", "le=~\"${local.slo_le}|${local.slo_le}\\\\.0\"")
  # Amazon Managed Service for Prometheus takes plain Prometheus rule groups: the spec.
  rules = yamlencode({ groups = yamldecode(local.rules_text).spec.groups })
  # The daemon's task role, by name and account, for the remote-write grant.
  daemon_role_parts = var.daemon_task_role_arn == null ? ["", ""] : split("/", var.daemon_task_role_arn)
  daemon_role_name  = element(local.daemon_role_parts, length(local.daemon_role_parts) - 1)
  account_id        = var.daemon_task_role_arn == null ? "" : element(split(":", var.daemon_task_role_arn), 4)
}

resource "aws_cloudwatch_metric_alarm" "queue_age" {
  region              = var.region
  alarm_name          = "${var.name}-${var.region}-queue-age"
  alarm_description   = "envdr: the oldest event in ${var.queue_name} (${var.region}) is over ${var.queue_age_alarm_seconds} s old: replication is behind. docs/RUNBOOK.md#envdroldesteventold"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = var.queue_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 10
  threshold           = var.queue_age_alarm_seconds
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "dlq" {
  region              = var.region
  alarm_name          = "${var.name}-${var.region}-dlq-not-empty"
  alarm_description   = "envdr: events wait in the dead-letter queue ${local.dlq_name} (${var.region}); each is an envelope not replicated. docs/RUNBOOK.md#envdrdlqnotempty"
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = local.dlq_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_cloudwatch_metric_alarm" "replication_latency" {
  for_each            = var.table_name == null ? toset([]) : toset(var.replica_regions)
  region              = var.region
  alarm_name          = "${var.name}-${var.region}-replication-latency-${each.value}"
  alarm_description   = "envdr: DynamoDB replicates ${var.table_name} from ${var.region} to ${each.value} in over ${var.replication_latency_alarm_ms} ms. docs/RUNBOOK.md#envdrreplicationlatencyhigh"
  namespace           = "AWS/DynamoDB"
  metric_name         = "ReplicationLatency"
  dimensions          = { TableName = var.table_name, ReceivingRegion = each.value }
  statistic           = "Average"
  period              = 60
  evaluation_periods  = 15
  threshold           = var.replication_latency_alarm_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

# S3 Cross-Region Replication (the S3 data path), per rule, from the replication metrics that
# Replication Time Control turns on: an object not yet in a region's replica is data that region
# cannot serve (the data RPO a drill with --data reports). A failed replication is never retried
# by S3 live replication, so any is an alarm.
locals {
  s3_rules = { for r in var.s3_replication : "${r.source_bucket}/${r.rule_id}" => r }
  s3_alarms = {
    latency = {
      metric = "ReplicationLatency", statistic = "Maximum", threshold = var.s3_replication_latency_alarm_seconds, periods = 5
      what   = "replicates objects in over ${var.s3_replication_latency_alarm_seconds} s (Replication Time Control: 15 minutes)"
    }
    pending = {
      metric = "OperationsPendingReplication", statistic = "Maximum", threshold = var.s3_pending_operations_alarm, periods = 15
      what   = "has over ${var.s3_pending_operations_alarm} operations pending replication for 15 minutes"
    }
    failed = {
      metric = "OperationsFailedReplication", statistic = "Sum", threshold = 0, periods = 1
      what   = "failed to replicate objects: they are in one region only"
    }
  }
  s3_rule_alarms = merge([for k, r in local.s3_rules : { for a, spec in local.s3_alarms : "${k}/${a}" => merge(spec, r, { kind = a }) }]...)
}

resource "aws_cloudwatch_metric_alarm" "s3_replication" {
  for_each            = local.s3_rule_alarms
  region              = var.region
  alarm_name          = "${var.name}-${var.region}-s3-replication-${each.value.kind}-${each.value.destination_bucket}"
  alarm_description   = "envdr: S3 replication from ${each.value.source_bucket} to ${each.value.destination_bucket} (rule ${each.value.rule_id}) ${each.value.what}. docs/RUNBOOK.md#envdrs3replication"
  namespace           = "AWS/S3"
  metric_name         = each.value.metric
  dimensions          = { SourceBucket = each.value.source_bucket, DestinationBucket = each.value.destination_bucket, RuleId = each.value.rule_id }
  statistic           = each.value.statistic
  period              = 60
  evaluation_periods  = each.value.periods
  threshold           = each.value.threshold
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

# Every daemon gone: no running task, or no data at all (the service deleted, Container
# Insights off) counts as breaching, so silence is an alarm.
resource "aws_cloudwatch_metric_alarm" "no_running_tasks" {
  region              = var.region
  alarm_name          = "${var.name}-${var.region}-no-daemon"
  alarm_description   = "envdr: no daemon task runs in ${var.cluster_name}/${var.service_name} (${var.region}): its queue is not consumed. docs/RUNBOOK.md#envdrregiondaemonsabsent"
  namespace           = "ECS/ContainerInsights"
  metric_name         = "RunningTaskCount"
  dimensions          = { ClusterName = var.cluster_name, ServiceName = var.service_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  threshold           = 1
  comparison_operator = "LessThanThreshold"
  treat_missing_data  = "breaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
}

resource "aws_prometheus_rule_group_namespace" "envdr" {
  count = var.amp_workspace_id == null ? 0 : 1
  lifecycle {
    precondition {
      condition     = var.daemon_task_role_arn != null
      error_message = "amp_workspace_id needs daemon_task_role_arn: the ADOT sidecar writes with the daemon's task role."
    }
  }
  region       = var.region
  name         = "${var.name}-${var.region}"
  workspace_id = var.amp_workspace_id
  data         = local.rules
}

# The ADOT sidecar runs with the task role: it may remote-write to this workspace, nothing else.
data "aws_iam_policy_document" "remote_write" {
  count = var.amp_workspace_id == null ? 0 : 1
  statement {
    sid       = "RemoteWriteEnvdrMetrics"
    actions   = ["aps:RemoteWrite"]
    resources = ["arn:aws:aps:${var.region}:${local.account_id}:workspace/${var.amp_workspace_id}"]
  }
}

resource "aws_iam_role_policy" "remote_write" {
  count  = var.amp_workspace_id == null ? 0 : 1
  name   = "envdr-adot-remote-write-${var.region}"
  role   = local.daemon_role_name
  policy = data.aws_iam_policy_document.remote_write[0].json
}

output "amp_remote_write_url" {
  description = "Remote-write endpoint for the ADOT sidecar's prometheusremotewrite exporter (null without a workspace)."
  value       = var.amp_workspace_id == null ? null : "https://aps-workspaces.${var.region}.amazonaws.com/workspaces/${var.amp_workspace_id}/api/v1/remote_write"
}

output "alarm_names" {
  description = "The CloudWatch alarms, by what they watch."
  value = merge({
    queue_age = aws_cloudwatch_metric_alarm.queue_age.alarm_name
    dlq       = aws_cloudwatch_metric_alarm.dlq.alarm_name
    no_daemon = aws_cloudwatch_metric_alarm.no_running_tasks.alarm_name
    }, { for r, a in aws_cloudwatch_metric_alarm.replication_latency : "replication_latency_${r}" => a.alarm_name },
  { for k, a in aws_cloudwatch_metric_alarm.s3_replication : "s3_replication_${local.s3_rule_alarms[k].kind}_${local.s3_rule_alarms[k].destination_bucket}" => a.alarm_name })
}
