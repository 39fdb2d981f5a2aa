terraform {
  required_version = ">= 1.6"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 6.0"
    }
  }
}

# One provider configuration for every region: each resource in the modules sets its own
# `region` (AWS provider 6), so adding a region is a list change, not a new provider alias.
provider "aws" {
  region = var.home_region
}
