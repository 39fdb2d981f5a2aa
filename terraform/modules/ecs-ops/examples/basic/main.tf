# Queue-depth autoscaling of the envdr ECS service in us-east-1, and weekly drills run there
# losing each other region.
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
}

output "drill_schedules" {
  value = module.ecs_ops.drill_schedules
}
