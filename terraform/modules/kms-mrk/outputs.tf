output "alias_arns" {
  description = "Alias ARN per region (known at plan time); what the envdr config names."
  value       = local.alias_arns
  depends_on  = [aws_kms_alias.primary, aws_kms_alias.replica]
}

output "key_arns" {
  description = "Key ARN per region (the primary's and each replica's)."
  value       = merge({ (var.primary_region) = aws_kms_key.primary.arn }, { for r, k in aws_kms_replica_key.replica : r => k.arn })
}

output "key_id" {
  description = "The multi-Region key ID (mrk-...), shared by the primary and its replicas."
  value       = aws_kms_key.primary.key_id
}
