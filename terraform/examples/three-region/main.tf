locals {
  regions = concat([var.home_region], var.replica_regions)
  # The config names alias ARNs: they are known before apply, so every policy below is fully
  # known at plan time and can be reviewed (and is checked by make validate) before anything exists.
  key_arns = { for r in local.regions : r => "arn:aws:kms:${r}:${var.account_id}:alias/${var.name}" }
  # The S3 data path: a bucket per region (names are global: the account ID keeps them unique).
  bucket_names = { for r in local.regions : r => lookup(var.bucket_names, r, "${var.name}-data-${var.account_id}-${r}") }

  config = {
    home_region = var.home_region
    queue_url   = module.queue[var.home_region].queue_url
    dlq_url     = module.queue[var.home_region].dlq_url
    table       = module.table.name
    # Every region a peer: its own queue and DLQ (envdr run --region R consumes R's).
    regions = [for r in local.regions : {
      name      = r
      key       = module.key.alias_arns[r]
      mode      = "mrk"
      kms_rate  = var.kms_rate
      queue_url = module.queue[r].queue_url
      dlq_url   = module.queue[r].dlq_url
      bucket    = module.buckets.names[r]
    }]
    policy = { required = local.regions, verify = "all" }
    worker = { concurrency = 16, visibility = "60s", grace = "30s", attempts = 5 }
  }
}

module "iam" {
  source            = "../../modules/iam"
  account_id        = var.account_id
  name_prefix       = var.name
  home_region       = var.home_region
  regions           = [for r in local.regions : { name = r, key_arn = local.key_arns[r], mode = "mrk" }]
  table_name        = "${var.name}-records"
  queue_arn         = "arn:aws:sqs:${var.home_region}:${var.account_id}:${var.name}-events"
  dlq_arn           = "arn:aws:sqs:${var.home_region}:${var.account_id}:${var.name}-events-dlq"
  region_queue_arns = [for r in var.replica_regions : "arn:aws:sqs:${r}:${var.account_id}:${var.name}-events"]
  region_dlq_arns   = [for r in var.replica_regions : "arn:aws:sqs:${r}:${var.account_id}:${var.name}-events-dlq"]
  # One IRSA trust per cluster, naming the chart's service accounts of the regions it runs.
  eks_irsa = [for arn, rs in { for r, a in var.eks_oidc_provider_arns : a => r... } : {
    oidc_provider_arn      = arn
    service_accounts       = [for r in rs : "${var.name}-${r}"]
    drill_service_accounts = [for r in rs : "${var.name}-${r}-drill"]
  }]
  buckets               = [for r in local.regions : local.bucket_names[r]]
  config_parameter_arn  = "arn:aws:ssm:${var.home_region}:${var.account_id}:parameter/${var.name}/config"
  config_parameter_arns = [for r in var.replica_regions : "arn:aws:ssm:${r}:${var.account_id}:parameter/${var.name}/config"]
}

module "key" {
  source          = "../../modules/kms-mrk"
  account_id      = var.account_id
  alias           = var.name
  primary_region  = var.home_region
  replica_regions = var.replica_regions
  # Identical on the primary and every replica.
  policy = module.iam.key_policies[var.home_region]
}

# A queue and DLQ in every region, so losing any one region stops no region's daemon. The
# region's bucket may send its ObjectCreated notifications there.
module "queue" {
  source         = "../../modules/queue"
  for_each       = toset(local.regions)
  account_id     = var.account_id
  region         = each.key
  name           = "${var.name}-events"
  s3_bucket_arns = ["arn:aws:s3:::${local.bucket_names[each.key]}"]
}

# The S3 data path: a bucket per region, each replicating to every other one (CRR with RTC),
# each notifying its region's events queue, so any object that lands is wrapped and verified in
# every region with no --enqueue.
module "buckets" {
  source     = "../../modules/buckets"
  account_id = var.account_id
  name       = var.name
  buckets = [for r in local.regions : {
    region    = r
    name      = local.bucket_names[r]
    queue_arn = module.queue[r].queue_arn
  }]
  sse                                = var.bucket_sse
  kms_key_writer_arns                = [for r in ["producer", "gameday"] : module.iam.role_arns[r]]
  kms_key_reader_arns                = [for r in ["daemon", "operator", "drill"] : module.iam.role_arns[r]]
  object_lock                        = var.object_lock
  noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
}

module "table" {
  source              = "../../modules/table"
  account_id          = var.account_id
  name                = "${var.name}-records"
  home_region         = var.home_region
  replica_regions     = var.replica_regions
  deletion_protection = var.deletion_protection
}

module "trail" {
  source     = "../../modules/cloudtrail"
  count      = var.cloudtrail ? 1 : 0
  name       = "${var.name}-kms"
  account_id = var.account_id
  region     = var.home_region
}

# The config for ECS: an init container copies it to /etc/envdr/envdr.yaml (deploy/ecs). One copy
# per region: a task started while the home region is lost reads its own region's.
resource "aws_ssm_parameter" "config" {
  for_each = toset(local.regions)
  region   = each.key
  name     = "/${var.name}/config"
  type     = "String"
  value    = local.envdr_yaml
}

locals {
  envdr_yaml = templatefile("${path.module}/envdr.yaml.tftpl", local.config)
}
