# The records table as a global table in three regions, encrypted with a customer managed key in
# each region (a multi-Region key and its replicas).
provider "aws" {
  region = "us-east-1"
}

module "table" {
  source          = "../.."
  account_id      = "111122223333"
  home_region     = "us-east-1"
  replica_regions = ["eu-west-1", "ap-southeast-2"]
  kms_key_arn     = "arn:aws:kms:us-east-1:111122223333:key/mrk-3234abcd12ab34cd56ef1234567890ab"
  replica_kms_key_arns = {
    "eu-west-1"      = "arn:aws:kms:eu-west-1:111122223333:key/mrk-3234abcd12ab34cd56ef1234567890ab"
    "ap-southeast-2" = "arn:aws:kms:ap-southeast-2:111122223333:key/mrk-3234abcd12ab34cd56ef1234567890ab"
  }
}

output "arns" {
  value = module.table.arns
}
