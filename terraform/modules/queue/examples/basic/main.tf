# The event queue and its DLQ with SQS-managed encryption.
provider "aws" {
  region = "us-east-1"
}

module "queue" {
  source     = "../.."
  account_id = "111122223333"
  region     = "us-east-1"
}

output "queue_url" {
  value = module.queue.queue_url
}
