output "role_arns" {
  description = "ARNs of the envdr roles by short name: daemon, producer, operator, rewrap, drill, failover, gameday (known at plan time)."
  value       = local.roles
  depends_on  = [aws_iam_role.daemon, aws_iam_role.producer, aws_iam_role.operator, aws_iam_role.rewrap, aws_iam_role.drill, aws_iam_role.failover, aws_iam_role.gameday]
}

output "execution_role_arn" {
  description = "ARN of the ECS task execution role, or null."
  value       = one(aws_iam_role.execution[*].arn)
}

output "policies" {
  description = "The roles' IAM policies by the file name envdr policy render gives them."
  value       = { for r, p in local.policies : "iam-${r}.json" => p }
}

output "key_policies" {
  description = "Key policy JSON per region. It names the roles, which must exist before KMS accepts the policy, hence depends_on."
  value       = local.key_policies
  depends_on  = [aws_iam_role.daemon, aws_iam_role.producer, aws_iam_role.operator, aws_iam_role.rewrap, aws_iam_role.drill, aws_iam_role.failover, aws_iam_role.gameday]
}

output "s3_policies" {
  description = "The roles' S3 statements (part of each role's envdr policy) by role; empty without buckets."
  value       = { for r, st in local.s3_statements : r => jsonencode({ Version = "2012-10-17", Statement = st }) }
}
