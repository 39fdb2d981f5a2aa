output "name" {
  description = "Table name (the envdr config's table)."
  value       = aws_dynamodb_table.records.name
}

output "arns" {
  description = "Table ARN per region (the home table and each replica), known at plan time."
  value       = local.arns
  depends_on  = [aws_dynamodb_table.records]
}
