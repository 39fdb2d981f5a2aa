# The envdr roles for existing keys (an MRK in two regions, an independent key in a third) and
# SSE-KMS queues (a queue key per region); the ECS task role, an EKS IRSA trust and an EKS Pod
# Identity association on the daemon and drill roles.
provider "aws" {
  region = "us-east-1"
}

locals {
  config = {
    home_region = "us-east-1"
    queue_url   = "https://sqs.us-east-1.amazonaws.com/111122223333/envdr-events"
    dlq_url     = "https://sqs.us-east-1.amazonaws.com/111122223333/envdr-events-dlq"
    table       = "envdr-records"
    regions = [
      { name = "us-east-1", key = "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab", mode = "mrk",
      previous_keys = ["arn:aws:kms:us-east-1:111122223333:key/0ffe0ffe-0000-4000-8000-000000000001"] },
      { name = "eu-west-1", key = "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab", mode = "mrk" },
      { name = "ap-southeast-2", key = "arn:aws:kms:ap-southeast-2:111122223333:key/0987dcba-09fe-87dc-65ba-ab0987654321", mode = "independent" },
    ]
  }
  queue_keys = [
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "arn:aws:kms:eu-west-1:111122223333:key/2234abcd-12ab-34cd-56ef-1234567890ab",
  ]
}

module "iam" {
  source             = "../.."
  account_id         = "111122223333"
  home_region        = local.config.home_region
  regions            = [for r in local.config.regions : { name = r.name, key_arn = r.key, mode = r.mode }]
  previous_key_arns  = flatten([for r in local.config.regions : lookup(r, "previous_keys", [])])
  table_name         = local.config.table
  queue_arn          = "arn:aws:sqs:us-east-1:111122223333:envdr-events"
  dlq_arn            = "arn:aws:sqs:us-east-1:111122223333:envdr-events-dlq"
  queue_kms_key_arns = local.queue_keys
  # The Helm chart's us-east-1 release with aws.identity=irsa (service accounts envdr-REGION and
  # envdr-REGION-drill).
  eks_irsa = [{
    oidc_provider_arn      = "arn:aws:iam::111122223333:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"
    service_accounts       = ["envdr-us-east-1"]
    drill_service_accounts = ["envdr-us-east-1-drill"]
  }]
  # The Helm chart's eu-west-1 release with aws.identity=pod-identity.
  eks_pod_identity = [{ region = "eu-west-1", cluster_name = "apps-eu", namespace = "envdr", service_account = "envdr-eu-west-1", drill_service_account = "envdr-eu-west-1-drill" }]
}

# What `envdr policy render` needs to produce the same documents (make validate compares them).
output "envdr_config" {
  value = yamlencode(local.config)
}

output "policy_render_options" {
  value = { queue_keys = local.queue_keys, admins = [], roles = module.iam.role_arns }
}

output "key_policies" {
  value = module.iam.key_policies
}
