locals {
  bucket    = "${var.name}-${var.account_id}"
  trail_arn = "arn:${var.partition}:cloudtrail:${var.region}:${var.account_id}:trail/${var.name}"
}

resource "aws_s3_bucket" "logs" {
  region = var.region
  bucket = local.bucket
  tags   = var.tags
}

resource "aws_s3_bucket_public_access_block" "logs" {
  region                  = var.region
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  region = var.region
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  region = var.region
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  region = var.region
  bucket = aws_s3_bucket.logs.id
  rule {
    id     = "expire"
    status = "Enabled"
    filter {}
    expiration {
      days = var.retention_days
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  region = var.region
  bucket = aws_s3_bucket.logs.id
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "CloudTrailAclCheck"
        Effect    = "Allow"
        Principal = { Service = "cloudtrail.amazonaws.com" }
        Action    = "s3:GetBucketAcl"
        Resource  = "arn:${var.partition}:s3:::${local.bucket}"
        Condition = { StringEquals = { "aws:SourceArn" = local.trail_arn } }
      },
      {
        Sid       = "CloudTrailWrite"
        Effect    = "Allow"
        Principal = { Service = "cloudtrail.amazonaws.com" }
        Action    = "s3:PutObject"
        Resource  = "arn:${var.partition}:s3:::${local.bucket}/AWSLogs/${var.account_id}/*"
        Condition = { StringEquals = { "s3:x-amz-acl" = "bucket-owner-full-control", "aws:SourceArn" = local.trail_arn } }
      },
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = ["arn:${var.partition}:s3:::${local.bucket}", "arn:${var.partition}:s3:::${local.bucket}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
    ]
  })
  depends_on = [aws_s3_bucket_public_access_block.logs]
}

# KMS API calls (Decrypt, ReEncrypt, GenerateDataKey, key policy changes, ScheduleKeyDeletion) are
# management events; a multi-Region trail records them from every region. On a trail, a
# management-event selector can filter eventSource only with NotEquals (and only to leave out
# kms.amazonaws.com or rdsdata.amazonaws.com), so a KMS-only trail cannot be expressed: this
# trail records every management event, KMS's included, and leaves out only the RDS Data API.
# make validate checks the selectors against these rules (test/infra).
resource "aws_cloudtrail" "kms" {
  region                        = var.region
  name                          = var.name
  s3_bucket_name                = aws_s3_bucket.logs.id
  is_multi_region_trail         = true
  include_global_service_events = true
  enable_log_file_validation    = true

  advanced_event_selector {
    name = "Management events, KMS included"
    field_selector {
      field  = "eventCategory"
      equals = ["Management"]
    }
    field_selector {
      field      = "eventSource"
      not_equals = ["rdsdata.amazonaws.com"]
    }
  }

  tags       = var.tags
  depends_on = [aws_s3_bucket_policy.logs]
}
