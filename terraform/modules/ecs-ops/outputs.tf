output "scaling_policy_arn" {
  description = "The queue-depth target-tracking policy."
  value       = aws_appautoscaling_policy.backlog.arn
}

output "drill_schedules" {
  description = "EventBridge Scheduler schedule names, by lost region."
  value       = { for r, s in aws_scheduler_schedule.drill : r => s.name }
}

output "scan_schedules" {
  description = "EventBridge Scheduler schedule names of the sharded scan, by shard number (1 ... N)."
  value       = { for i, s in aws_scheduler_schedule.scan : i => s.name }
}

output "scan_merge_schedule" {
  description = "EventBridge Scheduler schedule name of the task that merges the scan's shard reports on S3 (null without scan_report_prefix or with one shard)."
  value       = one(aws_scheduler_schedule.scan_merge[*].name)
}

output "scheduler_role_arn" {
  description = "Role the scheduler runs the drill and scan tasks with (null without either)."
  value       = length(aws_iam_role.scheduler) > 0 ? aws_iam_role.scheduler[0].arn : null
}
