locals {
  arns = { for r in concat([var.home_region], var.replica_regions) : r => "arn:${var.partition}:dynamodb:${r}:${var.account_id}:table/${var.name}" }
}

resource "aws_dynamodb_table" "records" {
  region       = var.home_region
  name         = var.name
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "id"
  # Global tables replicate through the stream.
  stream_enabled              = true
  stream_view_type            = "NEW_AND_OLD_IMAGES"
  deletion_protection_enabled = var.deletion_protection

  attribute {
    name = "id"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }

  dynamic "replica" {
    for_each = var.replica_regions
    content {
      region_name                 = replica.value
      point_in_time_recovery      = true
      deletion_protection_enabled = var.deletion_protection
      propagate_tags              = true
      # A replica is encrypted with a key of its own region: with a customer managed key in the
      # home region, every replica needs one too (null: the AWS owned key).
      kms_key_arn = var.kms_key_arn == null ? null : var.replica_kms_key_arns[replica.value]
    }
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.kms_key_arn == null || alltrue([for r in var.replica_regions : contains(keys(var.replica_kms_key_arns), r)])
      error_message = "With kms_key_arn, replica_kms_key_arns needs a key for every replica region (a KMS key serves only its own region)."
    }
    postcondition {
      condition     = self.arn == local.arns[var.home_region]
      error_message = "The table ARN differs from the composed one: is account_id right?"
    }
  }
}
