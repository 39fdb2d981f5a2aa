output "trail_arn" {
  description = "ARN of the multi-Region trail."
  value       = aws_cloudtrail.kms.arn
}

output "bucket" {
  description = "Bucket that receives the log files."
  value       = aws_s3_bucket.logs.id
}
