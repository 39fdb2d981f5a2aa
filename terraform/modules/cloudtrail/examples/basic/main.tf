# A multi-Region trail of KMS events with its own log bucket.
provider "aws" {
  region = "us-east-1"
}

module "trail" {
  source     = "../.."
  account_id = "111122223333"
  region     = "us-east-1"
}
