locals {
  by_region = { for b in var.buckets : b.region => b }
  arns      = { for b in var.buckets : b.region => "arn:${var.partition}:s3:::${b.name}" }
  kms       = var.sse == "aws:kms"
  root      = "arn:${var.partition}:iam::${var.account_id}:root"
  admins    = length(var.kms_key_admin_arns) > 0 ? var.kms_key_admin_arns : [local.root]
  key_alias = "alias/${var.name}-s3"

  replicate             = var.replication && length(var.buckets) > 1
  replication_role_name = "${var.name}-s3-replication"
  replication_role_arn  = "arn:${var.partition}:iam::${var.account_id}:role/${local.replication_role_name}"

  # Every region is a peer: each bucket has one rule per other bucket (S3 does not replicate a
  # replica again, so A -> B and B -> A make no loop). Priorities only need to differ.
  rules = { for s in var.buckets : s.region => [for i, d in [for x in var.buckets : x if x.region != s.region] : {
    id          = "envdr-to-${d.region}"
    priority    = i
    dest_region = d.region
    dest_arn    = local.arns[d.region]
  }] }

  # A bucket key in identity and key policies: key/* of its region scoped by its alias, which is
  # known at plan time (the key's own ARN is not), as modules/iam does for envdr's keys.
  key_scope = { for r in keys(local.by_region) : r => "arn:${var.partition}:kms:${r}:${var.account_id}:key/*" }
}

resource "aws_s3_bucket" "data" {
  for_each = local.by_region
  region   = each.key
  bucket   = each.value.name
  # object_lock_enabled is left to aws_s3_bucket_object_lock_configuration, which turns Object
  # Lock on for a new or an existing versioned bucket: set here, a change would replace the
  # bucket and every envelope in it.
  force_destroy = var.force_destroy
  tags          = var.tags

  lifecycle {
    postcondition {
      condition     = self.arn == local.arns[each.key]
      error_message = "The bucket ARN differs from the composed one."
    }
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  for_each                = aws_s3_bucket.data
  region                  = each.key
  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs off: the account owns every object, its replicas included, and only policies grant access.
resource "aws_s3_bucket_ownership_controls" "data" {
  for_each = aws_s3_bucket.data
  region   = each.key
  bucket   = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

# Replication needs versioning on the source and on every destination.
resource "aws_s3_bucket_versioning" "data" {
  for_each = aws_s3_bucket.data
  region   = each.key
  bucket   = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "data" {
  for_each   = var.object_lock == null ? {} : aws_s3_bucket.data
  region     = each.key
  bucket     = each.value.id
  depends_on = [aws_s3_bucket_versioning.data]
  # Once on, S3 keeps Object Lock on: removing object_lock later removes only the default
  # retention.
  object_lock_enabled = "Enabled"
  rule {
    default_retention {
      mode = var.object_lock.mode
      days = var.object_lock.days
    }
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = aws_s3_bucket.data
  region   = each.key
  bucket   = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.sse
      kms_master_key_id = local.kms ? aws_kms_key.bucket[each.key].arn : null
    }
    # S3 Bucket Keys: one KMS call per bucket key period instead of one per object.
    bucket_key_enabled = local.kms
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each   = aws_s3_bucket.data
  region     = each.key
  bucket     = each.value.id
  depends_on = [aws_s3_bucket_versioning.data]

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }

  dynamic "rule" {
    for_each = var.noncurrent_version_expiration_days == null ? [] : [var.noncurrent_version_expiration_days]
    content {
      id     = "expire-noncurrent-versions"
      status = "Enabled"
      filter {}
      noncurrent_version_expiration {
        noncurrent_days = rule.value
      }
    }
  }
}

# Deny anything but TLS; with SSE-KMS, deny uploads that ask for another encryption (SSE-S3,
# DSSE-KMS, SSE-C) or another KMS key than the bucket's: replication could not read such an
# object (the replication role may use only the bucket keys), so it would stay in one region.
# An upload that names no encryption gets the bucket's default (SSE-KMS under the bucket key).
resource "aws_s3_bucket_policy" "data" {
  for_each   = aws_s3_bucket.data
  region     = each.key
  bucket     = each.value.id
  depends_on = [aws_s3_bucket_public_access_block.data]
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat([{
      Sid       = "DenyInsecureTransport"
      Effect    = "Deny"
      Principal = { AWS = "*" }
      Action    = "s3:*"
      Resource  = [local.arns[each.key], "${local.arns[each.key]}/*"]
      Condition = { Bool = { "aws:SecureTransport" = "false" } }
      }], local.kms ? [
      {
        Sid       = "DenyOtherEncryption"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "s3:PutObject"
        Resource  = "${local.arns[each.key]}/*"
        Condition = { StringNotEqualsIfExists = { "s3:x-amz-server-side-encryption" = "aws:kms" } }
      },
      {
        Sid       = "DenyOtherKmsKey"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "s3:PutObject"
        Resource  = "${local.arns[each.key]}/*"
        Condition = { StringNotEqualsIfExists = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = aws_kms_key.bucket[each.key].arn } }
      },
      {
        Sid       = "DenyCustomerProvidedKeys"
        Effect    = "Deny"
        Principal = { AWS = "*" }
        Action    = "s3:PutObject"
        Resource  = "${local.arns[each.key]}/*"
        Condition = { Null = { "s3:x-amz-server-side-encryption-customer-algorithm" = "false" } }
      },
    ] : [])
  })
}

# ObjectCreated notifications to the region's events queue, which envdr run --region R reads:
# objects written by any client are protected without --enqueue. The queue's policy must allow
# the bucket first (modules/queue s3_bucket_arns; its queue_arn output waits for that policy).
resource "aws_s3_bucket_notification" "data" {
  for_each = { for r, b in local.by_region : r => b if b.queue_arn != null }
  region   = each.key
  bucket   = aws_s3_bucket.data[each.key].id
  queue {
    id            = "envdr-events"
    queue_arn     = each.value.queue_arn
    events        = var.notification_events
    filter_prefix = var.notification_prefix == "" ? null : var.notification_prefix
  }
}

# --- SSE-KMS: a customer managed key per region, used only through S3 in its region.

resource "aws_kms_key" "bucket" {
  for_each                = local.kms ? local.by_region : {}
  region                  = each.key
  description             = "envdr: SSE-KMS of the S3 bucket ${each.value.name}"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Id      = "envdr-s3-${each.key}"
    Statement = concat(
      [{
        Sid       = "KeyAdministration"
        Effect    = "Allow"
        Principal = { AWS = local.admins }
        Action = [
          "kms:CancelKeyDeletion", "kms:CreateAlias", "kms:DeleteAlias", "kms:DescribeKey",
          "kms:DisableKey", "kms:DisableKeyRotation", "kms:EnableKey", "kms:EnableKeyRotation",
          "kms:GetKeyPolicy", "kms:GetKeyRotationStatus", "kms:ListAliases", "kms:ListGrants",
          "kms:ListKeyPolicies", "kms:ListKeyRotations", "kms:ListResourceTags", "kms:PutKeyPolicy",
          "kms:RevokeGrant", "kms:RotateKeyOnDemand", "kms:ScheduleKeyDeletion", "kms:TagResource",
          "kms:UntagResource", "kms:UpdateAlias", "kms:UpdateKeyDescription",
        ]
        Resource = "*"
      }],
      # PutObject needs GenerateDataKey (and Decrypt for the parts of a multipart upload),
      # GetObject needs Decrypt; only S3 in this region calls KMS for them.
      [for st in [
        { Sid = "WriteThroughS3", Principal = { AWS = var.kms_key_writer_arns }, Action = ["kms:Decrypt", "kms:GenerateDataKey"], n = length(var.kms_key_writer_arns) },
        { Sid = "ReadThroughS3", Principal = { AWS = var.kms_key_reader_arns }, Action = ["kms:Decrypt"], n = length(var.kms_key_reader_arns) },
        ] : {
        Sid       = st.Sid
        Effect    = "Allow"
        Principal = st.Principal
        Action    = st.Action
        Resource  = "*"
        Condition = { StringEquals = { "kms:ViaService" = "s3.${each.key}.amazonaws.com", "kms:CallerAccount" = var.account_id } }
      } if st.n > 0],
      # Replication reads the source object (Decrypt in the source region) and writes the replica
      # (Encrypt, or GenerateDataKey with S3 Bucket Keys, in the destination region).
      local.replicate ? [{
        Sid       = "ReplicationThroughS3"
        Effect    = "Allow"
        Principal = { AWS = local.replication_role_arn }
        Action    = ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"]
        Resource  = "*"
        Condition = { StringEquals = { "kms:ViaService" = "s3.${each.key}.amazonaws.com", "kms:CallerAccount" = var.account_id } }
      }] : [],
    )
  })
  tags = var.tags
  # The policy names the replication role: KMS refuses a policy naming a principal that does
  # not exist yet.
  depends_on = [aws_iam_role.replication]
}

resource "aws_kms_alias" "bucket" {
  for_each      = aws_kms_key.bucket
  region        = each.key
  name          = local.key_alias
  target_key_id = each.value.key_id
}

# --- Cross-Region Replication.

resource "aws_iam_role" "replication" {
  count       = local.replicate ? 1 : 0
  name        = local.replication_role_name
  description = "S3 Cross-Region Replication between envdr's buckets"
  # The trust policy AWS documents for replication: S3 passes the role only for buckets whose
  # replication configuration names it, which takes iam:PassRole in this account.
  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "s3.amazonaws.com" }
      Action    = "sts:AssumeRole"
    }]
  })
  tags = var.tags
}

locals {
  bucket_arns = [for b in var.buckets : local.arns[b.region]]
  object_arns = [for b in var.buckets : "${local.arns[b.region]}/*"]
  # The permissions of "Setting up permissions for live replication" (Amazon S3 User Guide):
  # every bucket is both a source and a destination.
  replication_policy = jsonencode({
    Version = "2012-10-17"
    Statement = concat([
      { Sid = "SourceBuckets", Effect = "Allow", Action = ["s3:GetReplicationConfiguration", "s3:ListBucket"], Resource = local.bucket_arns },
      {
        Sid    = "SourceObjects"
        Effect = "Allow"
        # GetObjectRetention and GetObjectLegalHold carry Object Lock settings to the replicas.
        Action = concat(["s3:GetObjectVersionAcl", "s3:GetObjectVersionForReplication", "s3:GetObjectVersionTagging"],
        var.object_lock == null ? [] : ["s3:GetObjectLegalHold", "s3:GetObjectRetention"])
        Resource = local.object_arns
      },
      { Sid = "DestinationObjects", Effect = "Allow", Action = ["s3:ReplicateDelete", "s3:ReplicateObject", "s3:ReplicateTags"], Resource = local.object_arns },
      ], local.kms ? flatten([for b in var.buckets : [
        # "Replicating encrypted objects": Decrypt under the source key through S3 in the source
        # region, Encrypt under the destination key through S3 there, each for its bucket's
        # objects (the bucket itself with S3 Bucket Keys) and each bucket key by its alias.
        {
          Sid      = "DecryptSource${join("", [for p in split("-", b.region) : title(p)])}"
          Effect   = "Allow"
          Action   = ["kms:Decrypt"]
          Resource = [local.key_scope[b.region]]
          Condition = {
            StringEquals               = { "kms:ViaService" = "s3.${b.region}.amazonaws.com" }
            StringLike                 = { "kms:EncryptionContext:aws:s3:arn" = [local.arns[b.region], "${local.arns[b.region]}/*"] }
            "ForAnyValue:StringEquals" = { "kms:ResourceAliases" = [local.key_alias] }
          }
        },
        {
          Sid      = "EncryptReplica${join("", [for p in split("-", b.region) : title(p)])}"
          Effect   = "Allow"
          Action   = ["kms:Encrypt", "kms:GenerateDataKey"]
          Resource = [local.key_scope[b.region]]
          Condition = {
            StringEquals               = { "kms:ViaService" = "s3.${b.region}.amazonaws.com" }
            StringLike                 = { "kms:EncryptionContext:aws:s3:arn" = [local.arns[b.region], "${local.arns[b.region]}/*"] }
            "ForAnyValue:StringEquals" = { "kms:ResourceAliases" = [local.key_alias] }
          }
        },
    ]]) : [])
  })
}

resource "aws_iam_role_policy" "replication" {
  count  = local.replicate ? 1 : 0
  name   = "envdr-s3-replication"
  role   = aws_iam_role.replication[0].id
  policy = local.replication_policy
}

resource "aws_s3_bucket_replication_configuration" "data" {
  for_each = local.replicate ? aws_s3_bucket.data : {}
  region   = each.key
  bucket   = each.value.id
  role     = aws_iam_role.replication[0].arn
  # Versioning must be on at both ends before S3 accepts the configuration; with Object Lock
  # the destinations must have it too (they do: the setting is the same for every bucket).
  depends_on = [aws_s3_bucket_versioning.data, aws_iam_role_policy.replication, aws_s3_bucket_object_lock_configuration.data]

  dynamic "rule" {
    for_each = local.rules[each.key]
    content {
      id       = rule.value.id
      priority = rule.value.priority
      status   = "Enabled"
      filter {}
      delete_marker_replication {
        status = var.delete_marker_replication ? "Enabled" : "Disabled"
      }
      dynamic "source_selection_criteria" {
        for_each = local.kms ? [1] : []
        content {
          sse_kms_encrypted_objects {
            status = "Enabled"
          }
        }
      }
      destination {
        bucket = rule.value.dest_arn
        # Replication Time Control: 99.99% of objects within 15 minutes (S3's only RTC time),
        # with the replication metrics the alarms watch (ReplicationLatency,
        # OperationsPendingReplication, OperationsFailedReplication).
        replication_time {
          status = "Enabled"
          time {
            minutes = 15
          }
        }
        metrics {
          status = "Enabled"
          event_threshold {
            minutes = 15
          }
        }
        dynamic "encryption_configuration" {
          for_each = local.kms ? [1] : []
          content {
            replica_kms_key_id = aws_kms_key.bucket[rule.value.dest_region].arn
          }
        }
      }
    }
  }
}
