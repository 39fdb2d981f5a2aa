locals {
  regions    = concat([var.primary_region], var.replica_regions)
  alias_arns = { for r in local.regions : r => "arn:${var.partition}:kms:${r}:${var.account_id}:alias/${var.alias}" }
}

resource "aws_kms_key" "primary" {
  region                  = var.primary_region
  description             = "envdr multi-Region key (primary)"
  multi_region            = true
  enable_key_rotation     = true
  rotation_period_in_days = var.rotation_period_in_days
  deletion_window_in_days = var.deletion_window_in_days
  policy                  = var.policy
  tags                    = var.tags
}

resource "aws_kms_replica_key" "replica" {
  for_each = toset(var.replica_regions)

  region                  = each.key
  description             = "envdr multi-Region key (replica of ${var.primary_region})"
  primary_key_arn         = aws_kms_key.primary.arn
  deletion_window_in_days = var.deletion_window_in_days
  policy                  = var.policy
  tags                    = var.tags
}

resource "aws_kms_alias" "primary" {
  region        = var.primary_region
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.primary.key_id

  lifecycle {
    postcondition {
      condition     = self.arn == local.alias_arns[var.primary_region]
      error_message = "The alias ARN differs from the composed one: is account_id right?"
    }
  }
}

resource "aws_kms_alias" "replica" {
  for_each = aws_kms_replica_key.replica

  region        = each.key
  name          = "alias/${var.alias}"
  target_key_id = each.value.key_id

  lifecycle {
    postcondition {
      condition     = self.arn == local.alias_arns[each.key]
      error_message = "The alias ARN differs from the composed one: is account_id right?"
    }
  }
}
