output "names" {
  description = "Bucket name by region (the envdr config's regions[].bucket)."
  value       = { for r, b in local.by_region : r => b.name }
  depends_on  = [aws_s3_bucket.data]
}

output "arns" {
  description = "Bucket ARN by region (known at plan time)."
  value       = local.arns
  depends_on  = [aws_s3_bucket.data]
}

output "replication_role_arn" {
  description = "The role S3 replicates with, or null."
  value       = local.replicate ? local.replication_role_arn : null
  depends_on  = [aws_iam_role.replication]
}

output "replication_rules" {
  description = "Every replication rule (source and destination bucket, rule ID): the dimensions of S3's replication metrics, for alarms (modules/ecs-ops s3_replication)."
  value = local.replicate ? flatten([for s in var.buckets : [for r in local.rules[s.region] : {
    source_region      = s.region
    source_bucket      = s.name
    destination_region = r.dest_region
    destination_bucket = local.by_region[r.dest_region].name
    rule_id            = r.id
  }]]) : []
}

output "kms_key_alias_arns" {
  description = "With sse = aws:kms: each region's bucket key by alias ARN; empty otherwise."
  value       = local.kms ? { for r in keys(local.by_region) : r => "arn:${var.partition}:kms:${r}:${var.account_id}:${local.key_alias}" } : {}
  depends_on  = [aws_kms_alias.bucket]
}
