output "envdr_config" {
  description = "A ready envdr.yaml: terraform output -raw envdr_config > envdr.yaml"
  value       = local.envdr_yaml
}

output "config_parameter" {
  description = "SSM parameter holding the same config (ECS reads it at task start)."
  value       = aws_ssm_parameter.config[var.home_region].name
}

output "role_arns" {
  description = "Daemon (ECS task role / IRSA), producer and operator roles."
  value       = module.iam.role_arns
}

output "execution_role_arn" {
  description = "ECS task execution role."
  value       = module.iam.execution_role_arn
}

output "policy_render_options" {
  description = "The envdr policy render options that reproduce this setup's policies (make validate compares them)."
  value       = { queue_key = "", admins = [], roles = module.iam.role_arns }
}

output "key_policies" {
  description = "Key policy per region, as applied to the MRK primary and replicas."
  value       = module.iam.key_policies
}

output "buckets" {
  description = "The S3 data path: bucket name by region (the config's regions[].bucket)."
  value       = module.buckets.names
}

output "s3_replication_rules" {
  description = "The buckets' replication rules: the dimensions of S3's replication metrics (modules/ecs-ops s3_replication alarms on them)."
  value       = module.buckets.replication_rules
}
