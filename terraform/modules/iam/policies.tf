# The same documents `envdr policy render` generates (policy/render.go), statement for statement:
# make validate plans the examples and fails if any document differs.
locals {
  root       = "arn:${var.partition}:iam::${var.account_id}:root"
  role_names = ["daemon", "producer", "operator", "rewrap", "drill", "failover", "gameday"] # render's order in the key policies
  roles      = { for r in local.role_names : r => "arn:${var.partition}:iam::${var.account_id}:role/${var.name_prefix}-${r}" }

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

  # With scrubbing on (scrub.budget in envdr's config), the daemon also scans the table.
  daemon_table_actions = concat(["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
  var.daemon_scrub ? ["dynamodb:Scan"] : [])
  # GetQueueAttributes (redrive maxReceiveCount, retention, depth) and SendMessage (the re-send
  # just before SQS would redrive a still-valid event to the DLQ) on the events queue.
  daemon_queue_actions = ["sqs:ChangeMessageVisibility", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage", "sqs:SendMessage"]
  rewrap_table_actions = [
    "dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:DescribeTable", "dynamodb:GetItem",
    "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem",
  ]
  # envdr rewrap without --since asks KMS when the key last rotated.
  rewrap_describe_actions = ["kms:DescribeKey", "kms:ListKeyRotations"]
  # failover --promote: KMS authorizes UpdatePrimaryRegion on the primary and on the replica.
  failover_actions = { mrk = ["kms:DescribeKey", "kms:UpdatePrimaryRegion"], independent = ["kms:DescribeKey"] }

  # previous_keys and trusted_keys: unwrap (with the context condition) and describe.
  previous = { for role, actions in {
    daemon   = ["kms:Decrypt", "kms:ReEncryptFrom"]
    operator = ["kms:Decrypt"]
    rewrap   = ["kms:Decrypt", "kms:ReEncryptFrom"]
    drill    = ["kms:Decrypt"]
    gameday  = ["kms:Decrypt"]
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

  # What each role does with envdr's keys, the same in its identity policy (a statement a key,
  # Sid + the key's region) and in every key policy (grant Sid). Use, with the context condition,
  # actions by key mode:
  key_use_access = {
    daemon   = { sid = "WrapAndVerify", grant = "DaemonWrapAndVerify", mrk = local.mrk_actions, independent = local.independent_actions }
    producer = { sid = "Seal", grant = "ProducerSeal", mrk = ["kms:GenerateDataKey"], independent = ["kms:GenerateDataKey"] }
    operator = { sid = "Open", grant = "OperatorOpen", mrk = ["kms:Decrypt"], independent = ["kms:Decrypt"] }
    rewrap   = { sid = "Rewrap", grant = "RewrapKeyUse", mrk = local.mrk_actions, independent = local.mrk_actions }
    drill    = { sid = "Unwrap", grant = "DrillUnwrap", mrk = ["kms:Decrypt"], independent = ["kms:Decrypt"] }
    gameday  = { sid = "SealAndOpen", grant = "GamedaySealAndOpen", mrk = local.gameday_key_actions, independent = local.gameday_key_actions }
  }
  gameday_key_actions = ["kms:Decrypt", "kms:GenerateDataKey"]
  # and describe (none for the producer), scoped by alias in the identity policy where the config
  # names one:
  # (failover's actions depend on the key's mode: only an MRK has a primary to move):
  key_describe_access = {
    daemon   = { sid = "DescribeKey", grant = "DaemonDescribeKey", mrk = ["kms:DescribeKey"], independent = ["kms:DescribeKey"] }
    operator = { sid = "InspectKey", grant = "OperatorInspectKey", mrk = local.key_read_actions, independent = local.key_read_actions }
    rewrap   = { sid = "DescribeKey", grant = "RewrapDescribeKey", mrk = local.rewrap_describe_actions, independent = local.rewrap_describe_actions }
    drill    = { sid = "DescribeKey", grant = "DrillDescribeKey", mrk = ["kms:DescribeKey"], independent = ["kms:DescribeKey"] }
    failover = { sid = "Promote", grant = "FailoverPromote", mrk = local.failover_actions.mrk, independent = local.failover_actions.independent }
    gameday  = { sid = "DescribeKey", grant = "GamedayDescribeKey", mrk = ["kms:DescribeKey"], independent = ["kms:DescribeKey"] }
  }

  # Identity policy statements by role.
  key_use = { for role, a in local.key_use_access : role => [for k in local.keys : {
    Sid       = "${a.sid}${k.sid}"
    Effect    = "Allow"
    Action    = a[k.mode]
    Resource  = [k.resource]
    Condition = local.use_condition[k.region]
  }] }
  key_describe = { for role, a in local.key_describe_access : role => [for k in local.keys : merge({
    Sid      = "${a.sid}${k.sid}"
    Effect   = "Allow"
    Action   = a[k.mode]
    Resource = [k.resource]
  }, local.alias_only_condition[k.region])] }

  # Key policy statements by key mode: each role's use and describe, in the roles' order.
  key_grants = { for mode in ["mrk", "independent"] : mode => flatten([for role in local.role_names : concat(
    [for r, a in local.key_use_access : {
      Sid       = a.grant
      Effect    = "Allow"
      Principal = { AWS = [local.roles[role]] }
      Action    = a[mode]
      Resource  = ["*"]
      Condition = { "ForAnyValue:StringEquals" = local.ctx }
    } if r == role],
    [for r, a in local.key_describe_access : {
      Sid       = a.grant
      Effect    = "Allow"
      Principal = { AWS = [local.roles[role]] }
      Action    = a[mode]
      Resource  = ["*"]
    } if r == role],
  )]) }

  # One queue key per region: SQS uses only a key of the queue's own region, and only through
  # SQS in that region (kms:ViaService).
  queue_key = [for q in var.queue_kms_key_arns : {
    Sid      = "QueueEncryption${join("", [for p in split("-", split(":", q)[3]) : title(p)])}"
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
      local.key_use.daemon,
      local.key_describe.daemon,
      [
        { Sid = "Records", Effect = "Allow", Action = local.daemon_table_actions, Resource = local.table_arns },
        { Sid = "ConsumeEvents", Effect = "Allow", Action = local.daemon_queue_actions, Resource = local.queue_arns },
      ],
      [for d in length(local.dlq_arns) > 0 ? [local.dlq_arns] : [] : { Sid = "DeadLetter", Effect = "Allow", Action = ["sqs:SendMessage"], Resource = d }],
      # envdr_queue_messages on /metrics (the DLQ alert) and the retention check at start-up.
      [{ Sid = "QueueDepth", Effect = "Allow", Action = ["sqs:GetQueueAttributes"], Resource = concat(local.queue_arns, local.dlq_arns) }],
      lookup(local.s3_statements, "daemon", []),
      local.previous.daemon,
      local.queue_key,
    )
  })

  producer_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      local.key_use.producer,
      [{ Sid = "Enqueue", Effect = "Allow", Action = ["sqs:SendMessage"], Resource = local.queue_arns }],
      lookup(local.s3_statements, "producer", []),
      local.queue_key,
    )
  })

  operator_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      local.key_use.operator,
      local.key_describe.operator,
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
      lookup(local.s3_statements, "operator", []),
      local.previous.operator,
    )
  })

  # envdr rewrap: re-make a region's wraps and rewrite the records; no queue.
  rewrap_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      local.key_use.rewrap,
      local.key_describe.rewrap,
      [{ Sid = "Records", Effect = "Allow", Action = local.rewrap_table_actions, Resource = local.table_arns }],
      local.previous.rewrap,
    )
  })

  # envdr drill (scheduled by the ECS Scheduler and the Helm CronJob): read-only.
  drill_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      local.key_use.drill,
      local.key_describe.drill,
      [
        { Sid = "ScanRecords", Effect = "Allow", Action = ["dynamodb:BatchGetItem", "dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:Scan"], Resource = local.table_arns },
        { Sid = "QueueDepth", Effect = "Allow", Action = ["sqs:GetQueueAttributes"], Resource = concat(local.queue_arns, local.dlq_arns) },
      ],
      lookup(local.s3_statements, "drill", []),
      local.previous.drill,
    )
  })

  # envdr failover --promote: describe the keys and move an MRK's primary; uses no key.
  failover_policy = jsonencode({
    Version   = "2012-10-17"
    Statement = local.key_describe.failover
  })

  # envdr gameday: seal, enqueue, read the records back and open each region's wrap alone.
  gameday_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat(
      local.key_use.gameday,
      local.key_describe.gameday,
      [
        { Sid = "ReadRecords", Effect = "Allow", Action = ["dynamodb:BatchGetItem", "dynamodb:GetItem"], Resource = local.table_arns },
        { Sid = "Enqueue", Effect = "Allow", Action = ["sqs:SendMessage"], Resource = local.queue_arns },
      ],
      lookup(local.s3_statements, "gameday", []),
      local.previous.gameday,
      local.queue_key,
    )
  })

  policies = {
    daemon   = local.daemon_policy
    producer = local.producer_policy
    operator = local.operator_policy
    rewrap   = local.rewrap_policy
    drill    = local.drill_policy
    failover = local.failover_policy
    gameday  = local.gameday_policy
  }

  # One key policy per region. It names no region, so an MRK's primary and replicas get the same
  # document. Producers seal in every region (seal falls over when the home region is lost).
  key_policies = { for k in local.keys : k.region => jsonencode({
    Version = "2012-10-17"
    Id      = "envdr-${k.family}"
    Statement = concat([
      { Sid = "KeyAdministration", Effect = "Allow", Principal = { AWS = local.admins }, Action = local.admin_actions, Resource = ["*"] },
      {
        Sid       = "DenyOtherAccounts"
        Effect    = "Deny"
        Principal = { AWS = ["*"] }
        Action    = ["kms:*"]
        Resource  = ["*"]
        Condition = { StringNotEquals = { "kms:CallerAccount" = [var.account_id] } }
      },
    ], local.key_grants[k.mode])
  }) }
}
