# Queue-depth autoscaling of the envdr ECS service in us-east-1, weekly drills run there
# losing each other region, and a monthly full verify in 4 shards.
provider "aws" {
  region = "us-east-1"
}

module "ecs_ops" {
  source              = "../.."
  region              = "us-east-1"
  cluster_name        = "envdr"
  cluster_arn         = "arn:aws:ecs:us-east-1:111122223333:cluster/envdr"
  queue_name          = "envdr-events"
  task_definition_arn = "arn:aws:ecs:us-east-1:111122223333:task-definition/envdr:7"
  drill_task_role_arn = "arn:aws:iam::111122223333:role/envdr-drill"
  execution_role_arn  = "arn:aws:iam::111122223333:role/envdr-task-execution"
  subnets             = ["subnet-0123456789abcdef0", "subnet-0fedcba9876543210"]
  security_groups     = ["sg-0123456789abcdef0"]
  drill_lose          = ["eu-west-1", "ap-southeast-2"]
  pushgateway_url     = "http://pushgateway.internal:9091"

  # A full verify on the first of each month, in 4 shards (4 tasks at kms_rate each).
  scan_schedule = "cron(0 1 1 * ? *)"
  scan_shards   = 4
  scan_segments = 8
  # The shards' reports and the merged one (written by one more task) on S3.
  scan_report_prefix = "s3://acme-envdr-reports/scans"

  # Monitoring: CloudWatch alarms to an SNS topic, envdr's metrics and alert rules in Amazon
  # Managed Service for Prometheus through the task's ADOT sidecar.
  alarm_actions        = ["arn:aws:sns:us-east-1:111122223333:envdr-alerts"]
  table_name           = "envdr-records"
  replica_regions      = ["eu-west-1", "ap-southeast-2"]
  amp_workspace_id     = "ws-0123abcd-4567-89ef-0123-456789abcdef"
  daemon_task_role_arn = "arn:aws:iam::111122223333:role/envdr-daemon"

  # The S3 data path: alarms on the replication of us-east-1's bucket to the other regions'
  # (modules/buckets replication_rules whose source_region is us-east-1).
  s3_replication = [for r in ["eu-west-1", "ap-southeast-2"] : {
    source_bucket      = "envdr-data-111122223333-us-east-1"
    destination_bucket = "envdr-data-111122223333-${r}"
    rule_id            = "envdr-to-${r}"
  }]
}

output "alarm_names" {
  value = module.ecs_ops.alarm_names
}

output "amp_remote_write_url" {
  value = module.ecs_ops.amp_remote_write_url
}

output "drill_schedules" {
  value = module.ecs_ops.drill_schedules
}

output "scan_schedules" {
  value = module.ecs_ops.scan_schedules
}

output "scan_merge_schedule" {
  value = module.ecs_ops.scan_merge_schedule
}
