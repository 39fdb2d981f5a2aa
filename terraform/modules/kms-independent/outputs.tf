output "alias_arns" {
  description = "Alias ARN per region (known at plan time); what the envdr config names."
  value       = local.alias_arns
  depends_on  = [aws_kms_alias.this]
}

output "key_arns" {
  description = "Key ARN per region."
  value       = { for r, k in aws_kms_key.this : r => k.arn }
}
