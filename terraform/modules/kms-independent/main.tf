locals {
  alias_arns = { for r in var.regions : r => "arn:${var.partition}:kms:${r}:${var.account_id}:alias/${var.alias}" }
}

resource "aws_kms_key" "this" {
  for_each = toset(var.regions)

  region                  = each.key
  description             = "envdr key (independent, ${each.key})"
  multi_region            = false
  enable_key_rotation     = true
  rotation_period_in_days = var.rotation_period_in_days
  deletion_window_in_days = var.deletion_window_in_days
  policy                  = var.policies[each.key]
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  for_each = aws_kms_key.this

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
