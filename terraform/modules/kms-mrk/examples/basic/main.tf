# A primary in us-east-1 with replicas in eu-west-1 and ap-southeast-2 and a minimal key policy.
provider "aws" {
  region = "us-east-1"
}

module "key" {
  source          = "../.."
  account_id      = "111122223333"
  primary_region  = "us-east-1"
  replica_regions = ["eu-west-1", "ap-southeast-2"]
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "KeyAdministration"
      Effect    = "Allow"
      Principal = { AWS = ["arn:aws:iam::111122223333:root"] }
      Action    = ["kms:DescribeKey", "kms:PutKeyPolicy", "kms:ScheduleKeyDeletion"]
      Resource  = ["*"]
    }]
  })
}

output "alias_arns" {
  value = module.key.alias_arns
}
