# The event queue and its DLQ with SQS-managed encryption; the region's bucket of envelopes (the
# S3 data path) may send its event notifications to it.
provider "aws" {
  region = "us-east-1"
}

module "queue" {
  source         = "../.."
  account_id     = "111122223333"
  region         = "us-east-1"
  s3_bucket_arns = ["arn:aws:s3:::envdr-data-111122223333-us-east-1"]
}

output "queue_url" {
  value = module.queue.queue_url
}
