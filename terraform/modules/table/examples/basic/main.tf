# The records table as a global table in three regions.
provider "aws" {
  region = "us-east-1"
}

module "table" {
  source          = "../.."
  account_id      = "111122223333"
  home_region     = "us-east-1"
  replica_regions = ["eu-west-1", "ap-southeast-2"]
}

output "arns" {
  value = module.table.arns
}
