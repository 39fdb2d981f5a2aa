# envdr's buckets in three regions with SSE-KMS (a bucket key per region), Object Lock in
# governance mode for 30 days, Cross-Region Replication with RTC between every pair, and
# ObjectCreated notifications to each region's events queue.
provider "aws" {
  region = "us-east-1"
}

locals {
  regions = ["us-east-1", "eu-west-1", "ap-southeast-2"]
  role    = "arn:aws:iam::111122223333:role/envdr-"
}

module "buckets" {
  source     = "../.."
  account_id = "111122223333"
  buckets = [for r in local.regions : {
    region    = r
    name      = "envdr-data-111122223333-${r}"
    queue_arn = "arn:aws:sqs:${r}:111122223333:envdr-events"
  }]
  sse                 = "aws:kms"
  kms_key_writer_arns = [for r in ["producer", "gameday"] : "${local.role}${r}"]
  kms_key_reader_arns = [for r in ["daemon", "operator", "drill"] : "${local.role}${r}"]
  object_lock         = { mode = "GOVERNANCE", days = 30 }
}

output "names" {
  value = module.buckets.names
}

output "replication_rules" {
  value = module.buckets.replication_rules
}
