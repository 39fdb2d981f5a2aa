output "role_arns" {
  description = "ARNs of the daemon, producer, operator and rewrap roles (known at plan time)."
  value       = local.roles
  depends_on  = [aws_iam_role.daemon, aws_iam_role.producer, aws_iam_role.operator, aws_iam_role.rewrap]
}

output "execution_role_arn" {
  description = "ARN of the ECS task execution role, or null."
  value       = one(aws_iam_role.execution[*].arn)
}

output "policies" {
  description = "The roles' IAM policies by the file name envdr policy render gives them."
  value = {
    "iam-daemon.json"   = local.daemon_policy
    "iam-producer.json" = local.producer_policy
    "iam-operator.json" = local.operator_policy
    "iam-rewrap.json"   = local.rewrap_policy
  }
}

output "key_policies" {
  description = "Key policy JSON per region. It names the roles, which must exist before KMS accepts the policy, hence depends_on."
  value       = local.key_policies
  depends_on  = [aws_iam_role.daemon, aws_iam_role.producer, aws_iam_role.operator, aws_iam_role.rewrap]
}
