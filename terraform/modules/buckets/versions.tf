terraform {
  required_version = ">= 1.6"
  required_providers {
    # 6.x: every regional resource takes a `region` argument, so one provider configuration
    # manages all regions and the region lists below can have any length.
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
}
