locals {
  # IRSA: one trust statement per EKS cluster's OIDC provider, naming that cluster's service
  # accounts (the chart names them envdr-REGION and envdr-REGION-drill), for the daemon and the
  # drill roles.
  irsa = { for role in ["daemon", "drill"] : role => [for i, c in var.eks_irsa : {
    Sid       = "EksServiceAccount${i}"
    Effect    = "Allow"
    Principal = { Federated = c.oidc_provider_arn }
    Action    = "sts:AssumeRoleWithWebIdentity"
    Condition = { StringEquals = {
      "${split("oidc-provider/", c.oidc_provider_arn)[1]}:sub" = [for sa in(role == "daemon" ? c.service_accounts : c.drill_service_accounts) : "system:serviceaccount:${c.namespace}:${sa}"]
      "${split("oidc-provider/", c.oidc_provider_arn)[1]}:aud" = "sts.amazonaws.com"
    } }
  } if length(role == "daemon" ? c.service_accounts : c.drill_service_accounts) > 0] }

  # EKS Pod Identity: the EKS Auth service assumes the role for the pods of the associations
  # below, and only for those (it tags the session with the cluster, namespace and account).
  pod_identity = {
    daemon = var.eks_pod_identity
    drill  = [for a in var.eks_pod_identity : merge(a, { service_account = a.drill_service_account }) if a.drill_service_account != ""]
  }

  workload_trust = { for role in ["daemon", "drill"] : role => concat(
    var.ecs ? [{
      Sid       = "EcsTasks"
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
      # Confused-deputy guard: only ECS tasks of this account.
      Condition = {
        StringEquals = { "aws:SourceAccount" = var.account_id }
        ArnLike      = { "aws:SourceArn" = "arn:${var.partition}:ecs:*:${var.account_id}:*" }
      }
    }] : [],
    local.irsa[role],
    length(local.pod_identity[role]) == 0 ? [] : [{
      Sid       = "EksPodIdentity"
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
      Condition = {
        StringEquals = { "aws:SourceAccount" = var.account_id }
        ArnLike      = { "aws:SourceArn" = distinct([for a in local.pod_identity[role] : "arn:${var.partition}:eks:${a.region}:${var.account_id}:cluster/${a.cluster_name}"]) }
      }
    }],
  ) }
  daemon_trust = local.workload_trust.daemon

  human_trust = { for r, arns in {
    producer = var.producer_trusted_arns, operator = var.operator_trusted_arns, failover = var.failover_trusted_arns,
    } : r => jsonencode({
      Version = "2012-10-17"
      Statement = [{
        Effect    = "Allow"
        Principal = { AWS = length(arns) > 0 ? arns : [local.root] }
        Action    = "sts:AssumeRole"
      }]
  }) }
}

resource "aws_iam_role" "daemon" {
  name                 = "${var.name_prefix}-daemon"
  description          = "envdr run: wraps data keys into every region, writes records, consumes events"
  max_session_duration = 3600
  assume_role_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = local.daemon_trust
  })
  tags = var.tags

  lifecycle {
    precondition {
      condition     = length(local.daemon_trust) > 0
      error_message = "Enable ecs, set eks_irsa or eks_pod_identity: nothing could assume the daemon role."
    }
  }
}

# One association per (cluster, namespace, service account): the Helm chart with
# aws.identity=pod-identity names the service account envdr-REGION by default.
resource "aws_eks_pod_identity_association" "daemon" {
  for_each        = { for a in var.eks_pod_identity : "${a.region}/${a.cluster_name}/${a.namespace}/${a.service_account}" => a }
  region          = each.value.region
  cluster_name    = each.value.cluster_name
  namespace       = each.value.namespace
  service_account = each.value.service_account
  role_arn        = aws_iam_role.daemon.arn
  tags            = var.tags
}

# The drill's own role (scheduled drills: the ECS Scheduler's task role override and the Helm
# CronJob's service account): read-only, so a drill never runs with the daemon's write access and
# the daemon never needs dynamodb:Scan. docs/POLICY.md says why.
resource "aws_iam_role" "drill" {
  name                 = "${var.name_prefix}-drill"
  description          = "envdr drill: scan and read records, open wraps, queue depth; read-only"
  max_session_duration = 3600
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    # Nothing to trust (no ECS, no drill service account) still needs a valid document: the
    # account root, which then decides through IAM who may run drills by hand.
    Statement = concat(local.workload_trust.drill, [for st in [{
      Effect = "Allow", Principal = { AWS = [local.root] }, Action = "sts:AssumeRole"
    }] : st if length(local.workload_trust.drill) == 0])
  })
  tags = var.tags
}

resource "aws_eks_pod_identity_association" "drill" {
  for_each        = { for a in local.pod_identity.drill : "${a.region}/${a.cluster_name}/${a.namespace}/${a.service_account}" => a }
  region          = each.value.region
  cluster_name    = each.value.cluster_name
  namespace       = each.value.namespace
  service_account = each.value.service_account
  role_arn        = aws_iam_role.drill.arn
  tags            = var.tags
}

resource "aws_iam_role" "failover" {
  name               = "${var.name_prefix}-failover"
  description        = "envdr failover --promote: move the multi-Region key's primary (UpdatePrimaryRegion)"
  assume_role_policy = local.human_trust.failover
  tags               = var.tags
}

resource "aws_iam_role" "gameday" {
  name               = "${var.name_prefix}-gameday"
  description        = "envdr gameday: seal test envelopes, enqueue, open them back per region"
  assume_role_policy = local.human_trust.operator
  tags               = var.tags
}

resource "aws_iam_role" "producer" {
  name               = "${var.name_prefix}-producer"
  description        = "envdr seal --enqueue: data keys in the home region, events on the queue"
  assume_role_policy = local.human_trust.producer
  tags               = var.tags
}

resource "aws_iam_role" "operator" {
  name               = "${var.name_prefix}-operator"
  description        = "envdr verify/drill/open: decrypt and read-only"
  assume_role_policy = local.human_trust.operator
  tags               = var.tags
}

resource "aws_iam_role" "rewrap" {
  name               = "${var.name_prefix}-rewrap"
  description        = "envdr rewrap: re-make wraps and rewrite records"
  assume_role_policy = local.human_trust.operator
  tags               = var.tags
}

resource "aws_iam_role_policy" "daemon" {
  name   = "envdr"
  role   = aws_iam_role.daemon.id
  policy = local.daemon_policy
}

resource "aws_iam_role_policy" "producer" {
  name   = "envdr"
  role   = aws_iam_role.producer.id
  policy = local.producer_policy
}

resource "aws_iam_role_policy" "operator" {
  name   = "envdr"
  role   = aws_iam_role.operator.id
  policy = local.operator_policy
}

resource "aws_iam_role_policy" "rewrap" {
  name   = "envdr"
  role   = aws_iam_role.rewrap.id
  policy = local.rewrap_policy
}

resource "aws_iam_role_policy" "drill" {
  name   = "envdr"
  role   = aws_iam_role.drill.id
  policy = local.drill_policy
}

resource "aws_iam_role_policy" "failover" {
  name   = "envdr"
  role   = aws_iam_role.failover.id
  policy = local.failover_policy
}

resource "aws_iam_role_policy" "gameday" {
  name   = "envdr"
  role   = aws_iam_role.gameday.id
  policy = local.gameday_policy
}

resource "aws_iam_role" "execution" {
  count = var.ecs && var.ecs_execution_role ? 1 : 0

  name = "${var.name_prefix}-ecs-execution"
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ecs-tasks.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = var.account_id } }
    }]
  })
  tags = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  count = length(aws_iam_role.execution)

  role       = aws_iam_role.execution[0].name
  policy_arn = "arn:${var.partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

locals {
  config_parameter_arns = distinct(compact(concat([var.config_parameter_arn], var.config_parameter_arns)))
}

resource "aws_iam_role_policy" "execution_config" {
  count = length(aws_iam_role.execution) > 0 && length(local.config_parameter_arns) > 0 ? 1 : 0

  name = "envdr-config"
  role = aws_iam_role.execution[0].id
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [{ Sid = "ReadConfig", Effect = "Allow", Action = ["ssm:GetParameters"], Resource = local.config_parameter_arns }]
  })
}
