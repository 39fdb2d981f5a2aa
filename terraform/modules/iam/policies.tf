# The same documents `envdr policy render` generates (policy/render.go), statement for statement:
# make validate plans the examples and fails if any document differs.
locals {
  root  = "arn:${var.partition}:iam::${var.account_id}:root"
  roles = { for r in ["daemon", "producer", "operator", "rewrap"] : r => "arn:${var.partition}:iam::${var.account_id}:role/${var.name_prefix}-${r}" }

  admins = length(var.admin_arns) > 0 ? var.admin_arns : [local.root]

  ctx = { "kms:EncryptionContextKeys" = ["envdr:id"] }

  key_base = [for r in var.regions : {
    region = r.name
    mode   = r.mode
    res    = split(":", r.key_arn)[5]
    arn    = r.key_arn
  }]
  keys = [for k in local.key_base : {
    region = k.region
    mode   = k.mode
    sid    = join("", [for p in split("-", k.region) : title(p)])
    # An alias ARN in Resource would match the alias, not the key: scope key/* by alias instead.
    resource = startswith(k.res, "alias/") ? "arn:${var.partition}:kms:${k.region}:${var.account_id}:key/*" : k.arn
    aliases  = startswith(k.res, "alias/") ? [k.res] : []
    family   = k.mode == "mrk" ? "mrk-${trimprefix(split("/", k.res)[1], "mrk-")}" : "key-${k.region}"
  }]

  mrk_actions         = ["kms:Decrypt", "kms:Encrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo"]
  independent_actions = ["kms:Decrypt", "kms:Encrypt"]
  key_read_actions    = ["kms:DescribeKey", "kms:GetKeyPolicy", "kms:GetKeyRotationStatus"]
  admin_actions = [
    "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey",
    "kms:DisableKey", "kms:DisableKeyRotation", "kms:EnableKey", "kms:EnableKeyRotation",
    "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants",
    "kms:ListKeyPolicies", "kms:ListKeyRotations", "kms:ListResourceTags", "kms:PutKeyPolicy",
    "kms:ReplicateKey", "kms:RevokeGrant", "kms:RotateKeyOnDemand", "kms:ScheduleKeyDeletion",
    "kms:TagResource", "kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription",
    "kms:UpdatePrimaryRegion",
  ]

  # Every region's queue and DLQ (the home region's first), as render lists them.
  queue_arns = distinct(concat([var.queue_arn], var.region_queue_arns))
  dlq_arns   = distinct(concat(compact([var.dlq_arn]), var.region_dlq_arns))

  daemon_table_actions = ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
  # GetQueueAttributes (redrive maxReceiveCount, retention, depth) and SendMessage (the re-send
  # just before SQS would redrive a still-valid event to the DLQ) on the events queue.
  daemon_queue_actions = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"]
  rewrap_table_actions = [
    "dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:DescribeTable", "dynamodb:GetItem",
    "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem",
  ]

  # previous_keys and trusted_keys: unwrap (with the context condition) and describe.
  previous = { for role, actions in {
    daemon   = ["kms:Decrypt", "kms:ReEncryptFrom"]
    operator = ["kms:Decrypt"]
    rewrap   = ["kms:Decrypt", "kms:ReEncryptFrom"]
    } : role => [for st in [
      { Sid = "PreviousKeys", Effect = "Allow", Action = actions, Resource = var.previous_key_arns, Condition = { "ForAnyValue:StringEquals" = local.ctx } },
      { Sid = "DescribePreviousKeys", Effect = "Allow", Action = ["kms:DescribeKey"], Resource = var.previous_key_arns },
  ] : st if length(var.previous_key_arns) > 0] }

  table_arns = [for k in local.keys : "arn:${var.partition}:dynamodb:${k.region}:${var.account_id}:table/${var.table_name}"]

  # ForAnyValue: kms:EncryptionContextKeys and kms:ResourceAliases are multivalued; the set
  # operator is true only when the request's context (the key's aliases) has the value.
  use_condition = { for k in local.keys : k.region => {
    "ForAnyValue:StringEquals" = merge(local.ctx, { for a in k.aliases : "kms:ResourceAliases" => [a] })
  } }
  alias_only_condition = { for k in local.keys : k.region => {
    for a in k.aliases : "Condition" => { "ForAnyValue:StringEquals" = { "kms:ResourceAliases" = [a] } }
  } }

  queue_key = [for q in compact([var.queue_kms_key_arn]) : {
    Sid      = "QueueEncryption"
    Effect   = "Allow"
    Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
    Resource = [q]
    Condition = { StringEquals = {
      "kms:CallerAccount" = [var.account_id]
      "kms:ViaService"    = ["sqs.${split(":", q)[3]}.amazonaws.com"]
    } }
  }]

  daemon_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [for k in local.keys : {
        Sid       = "WrapAndVerify${k.sid}"
        Effect    = "Allow"
        Action    = k.mode == "mrk" ? local.mrk_actions : local.independent_actions
        Resource  = [k.resource]
        Condition = local.use_condition[k.region]
      }],
      [for k in local.keys : merge({
        Sid      = "DescribeKey${k.sid}"
        Effect   = "Allow"
        Action   = ["kms:DescribeKey"]
        Resource = [k.resource]
      }, local.alias_only_condition[k.region])],
      [
        { Sid = "Records", Effect = "Allow", Action = local.daemon_table_actions, Resource = local.table_arns },
        { Sid = "ConsumeEvents", Effect = "Allow", Action = local.daemon_queue_actions, Resource = local.queue_arns },
      ],
      [for d in length(local.dlq_arns) > 0 ? [local.dlq_arns] : [] : { Sid = "DeadLetter", Effect = "Allow", Action = ["sqs:SendMessage"], Resource = d }],
      # envdr_queue_messages on /metrics (the DLQ alert) and the retention check at start-up.
      [{ Sid = "QueueDepth", Effect = "Allow", Action = ["sqs:GetQueueAttributes"], Resource = concat(local.queue_arns, local.dlq_arns) }],
      local.previous.daemon,
      local.queue_key,
    )
  })

  producer_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [for k in local.keys : {
        Sid       = "Seal${k.sid}"
        Effect    = "Allow"
        Action    = ["kms:GenerateDataKey"]
        Resource  = [k.resource]
        Condition = local.use_condition[k.region]
      }],
      [{ Sid = "Enqueue", Effect = "Allow", Action = ["sqs:SendMessage"], Resource = local.queue_arns }],
      local.queue_key,
    )
  })

  operator_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [for k in local.keys : {
        Sid       = "Open${k.sid}"
        Effect    = "Allow"
        Action    = ["kms:Decrypt"]
        Resource  = [k.resource]
        Condition = local.use_condition[k.region]
      }],
      [for k in local.keys : merge({
        Sid      = "InspectKey${k.sid}"
        Effect   = "Allow"
        Action   = local.key_read_actions
        Resource = [k.resource]
      }, local.alias_only_condition[k.region])],
      [
        {
          Sid    = "ReadRecords"
          Effect = "Allow"
          Action = [
            "dynamodb:BatchGetItem", "dynamodb:DescribeContinuousBackups", "dynamodb:DescribeTable", "dynamodb:GetItem",
            "dynamodb:Query", "dynamodb:Scan",
          ]
          Resource = local.table_arns
        },
        { Sid = "QueueDepth", Effect = "Allow", Action = ["sqs:GetQueueAttributes"], Resource = concat(local.queue_arns, local.dlq_arns) },
      ],
      local.previous.operator,
    )
  })

  # envdr rewrap: re-make a region's wraps and rewrite the records; no queue.
  rewrap_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      [for k in local.keys : {
        Sid       = "Rewrap${k.sid}"
        Effect    = "Allow"
        Action    = local.mrk_actions
        Resource  = [k.resource]
        Condition = local.use_condition[k.region]
      }],
      [for k in local.keys : merge({
        Sid      = "DescribeKey${k.sid}"
        Effect   = "Allow"
        Action   = ["kms:DescribeKey"]
        Resource = [k.resource]
      }, local.alias_only_condition[k.region])],
      [{ Sid = "Records", Effect = "Allow", Action = local.rewrap_table_actions, Resource = local.table_arns }],
      local.previous.rewrap,
    )
  })

  # One key policy per region. It names no region, so an MRK's primary and replicas get the same
  # document. Producers seal in every region (seal falls over when the home region is lost).
  key_policies = { for k in local.keys : k.region => jsonencode({
    Version = "2012-10-17"
    Id      = "envdr-${k.family}"
    Statement = [
      { Sid = "KeyAdministration", Effect = "Allow", Principal = { AWS = local.admins }, Action = local.admin_actions, Resource = ["*"] },
      {
        Sid       = "DenyOtherAccounts"
        Effect    = "Deny"
        Principal = { AWS = ["*"] }
        Action    = ["kms:*"]
        Resource  = ["*"]
        Condition = { StringNotEquals = { "kms:CallerAccount" = [var.account_id] } }
      },
      {
        Sid       = "DaemonWrapAndVerify"
        Effect    = "Allow"
        Principal = { AWS = [local.roles.daemon] }
        Action    = k.mode == "mrk" ? local.mrk_actions : local.independent_actions
        Resource  = ["*"]
        Condition = { "ForAnyValue:StringEquals" = local.ctx }
      },
      { Sid = "DaemonDescribeKey", Effect = "Allow", Principal = { AWS = [local.roles.daemon] }, Action = ["kms:DescribeKey"], Resource = ["*"] },
      {
        Sid       = "ProducerSeal"
        Effect    = "Allow"
        Principal = { AWS = [local.roles.producer] }
        Action    = ["kms:GenerateDataKey"]
        Resource  = ["*"]
        Condition = { "ForAnyValue:StringEquals" = local.ctx }
      },
      {
        Sid       = "OperatorOpen"
        Effect    = "Allow"
        Principal = { AWS = [local.roles.operator] }
        Action    = ["kms:Decrypt"]
        Resource  = ["*"]
        Condition = { "ForAnyValue:StringEquals" = local.ctx }
      },
      { Sid = "OperatorInspectKey", Effect = "Allow", Principal = { AWS = [local.roles.operator] }, Action = local.key_read_actions, Resource = ["*"] },
      {
        Sid       = "RewrapKeyUse"
        Effect    = "Allow"
        Principal = { AWS = [local.roles.rewrap] }
        Action    = local.mrk_actions
        Resource  = ["*"]
        Condition = { "ForAnyValue:StringEquals" = local.ctx }
      },
      { Sid = "RewrapDescribeKey", Effect = "Allow", Principal = { AWS = [local.roles.rewrap] }, Action = ["kms:DescribeKey"], Resource = ["*"] },
    ]
  }) }
}
