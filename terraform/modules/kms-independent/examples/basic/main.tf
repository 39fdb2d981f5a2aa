# Independent keys in two regions (envdr mode: independent), each with its own policy.
provider "aws" {
  region = "us-east-1"
}

locals {
  policy = { for r in ["us-east-1", "eu-west-1"] : r => jsonencode({
    Version = "2012-10-17"
    Id      = "envdr-key-${r}"
    Statement = [{
      Sid       = "KeyAdministration"
      Effect    = "Allow"
      Principal = { AWS = ["arn:aws:iam::111122223333:root"] }
      Action    = ["kms:DescribeKey", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"]
      Resource  = ["*"]
    }]
  }) }
}

module "keys" {
  source     = "../.."
  account_id = "111122223333"
  regions    = ["us-east-1", "eu-west-1"]
  policies   = local.policy
}

output "alias_arns" {
  value = module.keys.alias_arns
}
