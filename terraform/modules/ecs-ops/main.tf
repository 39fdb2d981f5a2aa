# ECS counterpart of the Helm chart's KEDA scaling and drill CronJob: the envdr service's desired
# count follows the queue depth per task, and EventBridge Scheduler runs `envdr drill` as a
# one-off task of the same task definition on a schedule, with the drill's own task role
# (envdr-drill: read-only) instead of the daemon's.

locals {
  resource_id = "service/${var.cluster_name}/${var.service_name}"
  drill_lose  = var.drill_schedule == null ? [] : var.drill_lose
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
  count              = length(local.drill_lose) > 0 ? 1 : 0
  name               = "${var.name}-drill-scheduler-${var.region}"
  assume_role_policy = data.aws_iam_policy_document.scheduler_trust.json
}

resource "aws_iam_role_policy" "scheduler" {
  count  = length(local.drill_lose) > 0 ? 1 : 0
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
