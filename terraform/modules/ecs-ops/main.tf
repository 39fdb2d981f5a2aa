# ECS counterpart of the Helm chart's KEDA scaling, drill CronJob and sharded scan Job: the envdr
# service's desired count follows the queue depth per task, and EventBridge Scheduler runs
# `envdr drill` (and, sharded, a full `envdr verify` or `drill`) as one-off tasks of the same
# task definition on a schedule, with the drill's own task role (envdr-drill: read-only) instead
# of the daemon's.

locals {
  resource_id = "service/${var.cluster_name}/${var.service_name}"
  drill_lose  = var.drill_schedule == null ? [] : var.drill_lose
  # Shard i of N (1-based, as --shard i/N takes it), by its number as a string.
  scan_shards = var.scan_schedule == null ? {} : { for i in range(1, var.scan_shards + 1) : tostring(i) => i }
  # Where one scheduled scan's reports go: PREFIX/VERB-<scheduled time>/shard-i (.json), and the
  # merged report beside them. The scheduler replaces <aws.scheduler.scheduled-time> with the
  # same time in every shard's and the merge's command (all fire at that time, window OFF).
  scan_run_prefix = var.scan_report_prefix == "" ? "" : "${trimsuffix(var.scan_report_prefix, "/")}/${var.scan_command}-<aws.scheduler.scheduled-time>"
  scan_merge      = length(local.scan_shards) > 1 && var.scan_report_prefix != ""
  scheduler       = length(local.drill_lose) > 0 || length(local.scan_shards) > 0
}

resource "aws_appautoscaling_target" "service" {
  region             = var.region
  service_namespace  = "ecs"
  resource_id        = local.resource_id
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_capacity
  max_capacity       = var.max_capacity
}

# Target tracking on the backlog per task: (visible + in flight) / running tasks. Running tasks
# come from Container Insights (enable it on the cluster).
resource "aws_appautoscaling_policy" "backlog" {
  region             = var.region
  name               = "${var.name}-backlog-per-task"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.service.service_namespace
  resource_id        = aws_appautoscaling_target.service.resource_id
  scalable_dimension = aws_appautoscaling_target.service.scalable_dimension

  target_tracking_scaling_policy_configuration {
    target_value = var.backlog_per_task
    # Scale out fast, in slowly: finishing a batch is cheaper than redelivering it.
    scale_out_cooldown = 60
    scale_in_cooldown  = 300

    customized_metric_specification {
      metrics {
        id          = "visible"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesVisible"
            dimensions {
              name  = "QueueName"
              value = var.queue_name
            }
          }
        }
      }
      metrics {
        id          = "inflight"
        return_data = false
        metric_stat {
          stat = "Sum"
          metric {
            namespace   = "AWS/SQS"
            metric_name = "ApproximateNumberOfMessagesNotVisible"
            dimensions {
              name  = "QueueName"
              value = var.queue_name
            }
          }
        }
      }
      metrics {
        id          = "tasks"
        return_data = false
        metric_stat {
          stat = "Average"
          metric {
            namespace   = "ECS/ContainerInsights"
            metric_name = "RunningTaskCount"
            dimensions {
              name  = "ClusterName"
              value = var.cluster_name
            }
            dimensions {
              name  = "ServiceName"
              value = var.service_name
            }
          }
        }
      }
      metrics {
        id          = "backlog"
        label       = "envdr queue depth per running task"
        expression  = "(visible + inflight) / IF(tasks < 1, 1, tasks)"
        return_data = true
      }
    }
  }
}

data "aws_iam_policy_document" "scheduler_trust" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["scheduler.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "scheduler" {
  statement {
    sid       = "RunTheDrillTask"
    actions   = ["ecs:RunTask"]
    resources = [var.task_definition_arn]
    condition {
      test     = "ArnLike"
      variable = "ecs:cluster"
      values   = [var.cluster_arn]
    }
  }
  statement {
    sid       = "PassTheTaskRoles"
    actions   = ["iam:PassRole"]
    resources = [var.drill_task_role_arn, var.execution_role_arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "scheduler" {
  count              = local.scheduler ? 1 : 0
  name               = "${var.name}-drill-scheduler-${var.region}"
  assume_role_policy = data.aws_iam_policy_document.scheduler_trust.json
}

resource "aws_iam_role_policy" "scheduler" {
  count  = local.scheduler ? 1 : 0
  name   = "run-envdr-drill"
  role   = aws_iam_role.scheduler[0].id
  policy = data.aws_iam_policy_document.scheduler.json
}

resource "aws_scheduler_schedule" "drill" {
  for_each                     = toset(local.drill_lose)
  region                       = var.region
  name                         = "${var.name}-drill-lose-${each.value}"
  description                  = "envdr drill --lose ${each.value}, run from ${var.region}"
  schedule_expression          = var.drill_schedule
  schedule_expression_timezone = "UTC"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = var.cluster_arn
    role_arn = aws_iam_role.scheduler[0].arn

    ecs_parameters {
      task_definition_arn = var.task_definition_arn
      launch_type         = "FARGATE"
      task_count          = 1
      network_configuration {
        subnets          = var.subnets
        security_groups  = var.security_groups
        assign_public_ip = false
      }
    }

    # The same task definition with the envdr container's command and the task role overridden
    # (the input is RunTask's overrides): the drill reads the same config as the daemon, as the
    # drill role. --json prints the report (with its SHA-256 digest) into the task's logs.
    input = jsonencode({
      taskRoleArn = var.drill_task_role_arn
      containerOverrides = [{
        name = "envdr"
        command = concat(
          ["drill", "--config", "/etc/envdr/envdr.yaml", "--lose", each.value, "--json", "--quiet",
          "--max-rpo", var.drill_max_rpo, "--min-recoverable", tostring(var.drill_min_recoverable)],
          var.pushgateway_url == "" ? [] : ["--pushgateway", var.pushgateway_url],
        )
      }]
    })

    retry_policy {
      maximum_retry_attempts = 0
    }
  }

  lifecycle {
    precondition {
      condition     = each.value != var.region
      error_message = "drill_lose must not list the region the drill runs in (${var.region})."
    }
  }
}

# A sharded full scan (docs/DRILLS.md#sharded-scans-choosing-n): N schedules on one expression,
# each starting one task that reads shard i of N (--shard i/N). ECS RunTask's count would start N
# identical tasks, and a task cannot learn its own index, so each shard is its own target with its
# own command. Flexible time window off: all N fire at the same scheduled time, which names the
# run in the report path (<aws.scheduler.scheduled-time>, replaced by the scheduler). Each task's
# report is printed in its logs (--json) and, with scan_report_prefix, written to S3, where the
# scan_merge schedule's task combines the N reports (envdr report merge, docs/DRILLS.md).
resource "aws_scheduler_schedule" "scan" {
  for_each                     = local.scan_shards
  region                       = var.region
  name                         = "${var.name}-${var.scan_command}-shard-${each.value}-of-${var.scan_shards}"
  description                  = "envdr ${var.scan_command} --shard ${each.value}/${var.scan_shards}, run from ${var.region}"
  schedule_expression          = var.scan_schedule
  schedule_expression_timezone = "UTC"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = var.cluster_arn
    role_arn = aws_iam_role.scheduler[0].arn

    ecs_parameters {
      task_definition_arn = var.task_definition_arn
      launch_type         = "FARGATE"
      task_count          = 1
      network_configuration {
        subnets          = var.subnets
        security_groups  = var.security_groups
        assign_public_ip = false
      }
    }

    # The drill role only reads: verify runs --no-write (the recording form writes verified_at
    # and needs the rewrap role).
    input = jsonencode({
      taskRoleArn = var.drill_task_role_arn
      containerOverrides = [{
        name = "envdr"
        command = concat(
          [var.scan_command, "--config", "/etc/envdr/envdr.yaml"],
          var.scan_command == "drill" ? ["--lose", var.scan_lose, "--max-rpo", var.drill_max_rpo, "--min-recoverable", tostring(var.drill_min_recoverable)] : ["--no-write"],
          ["--shard", "${each.value}/${var.scan_shards}", "--segments", tostring(var.scan_segments), "--json", "--quiet"],
          var.scan_report_prefix == "" ? [] : ["--report", "${local.scan_run_prefix}/shard-${each.value}"],
        )
      }]
    })

    retry_policy {
      maximum_retry_attempts = 0
    }
  }

  lifecycle {
    precondition {
      condition     = var.scan_command != "drill" || (var.scan_lose != "" && var.scan_lose != var.region)
      error_message = "scan_command drill needs scan_lose: a region other than the one the scan runs in (${var.region})."
    }
  }
}

# The merge of a sharded scan's reports (with scan_report_prefix and 2 shards or more): one more
# task at the same scheduled time, under the drill role, that waits for the N shards' reports on
# S3 (envdr report merge --wait: it reads nothing until they exist, and names the missing one if
# a shard never finishes) and files the merged report, with its digest, beside them as
# PREFIX/VERB-<scheduled time>/merged.json. It needs s3:GetObject on the shards' reports and
# s3:PutObject on the merged one (the same prefix). Its exit status is the whole scan's verdict.
resource "aws_scheduler_schedule" "scan_merge" {
  count                        = local.scan_merge ? 1 : 0
  region                       = var.region
  name                         = "${var.name}-${var.scan_command}-merge-of-${var.scan_shards}"
  description                  = "envdr report merge of the ${var.scan_shards} shards of ${var.scan_command}, run from ${var.region}"
  schedule_expression          = var.scan_schedule
  schedule_expression_timezone = "UTC"

  flexible_time_window {
    mode = "OFF"
  }

  target {
    arn      = var.cluster_arn
    role_arn = aws_iam_role.scheduler[0].arn

    ecs_parameters {
      task_definition_arn = var.task_definition_arn
      launch_type         = "FARGATE"
      task_count          = 1
      network_configuration {
        subnets          = var.subnets
        security_groups  = var.security_groups
        assign_public_ip = false
      }
    }

    input = jsonencode({
      taskRoleArn = var.drill_task_role_arn
      containerOverrides = [{
        name = "envdr"
        command = concat(
          ["report", "merge", "--config", "/etc/envdr/envdr.yaml", "--wait", var.scan_merge_wait, "--json", "--out", "${local.scan_run_prefix}/merged"],
          [for i in sort(keys(local.scan_shards)) : "${local.scan_run_prefix}/shard-${i}.json"],
        )
      }]
    })

    retry_policy {
      maximum_retry_attempts = 0
    }
  }
}
