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
    }
  }

  tags = var.tags

  lifecycle {
    postcondition {
      condition     = self.arn == local.arns[var.home_region]
      error_message = "The table ARN differs from the composed one: is account_id right?"
    }
  }
}
