# The S3 data path (issue 24): who may touch the buckets of envelopes. Kept beside the documents
# `envdr policy render` generates, as a second inline policy (envdr-s3) per role, until render
# carries the same statements; make validate compares only the envdr policy with render.
#
# Every role reaches every region's bucket: seal falls over to the next region's bucket, open to
# the next region's replica, and a drill or game day reads the survivors' replicas.
locals {
  bucket_arns        = [for b in var.buckets : "arn:${var.partition}:s3:::${b}"]
  bucket_object_arns = [for b in var.buckets : "arn:${var.partition}:s3:::${b}/*"]

  # A multipart upload (envdr seal to s3:// streams one) is authorized as s3:PutObject for
  # CreateMultipartUpload, UploadPart and CompleteMultipartUpload; AbortMultipartUpload is its own
  # action (seal aborts an upload it cannot finish).
  s3_write = { Sid = "PutEnvelopes", Effect = "Allow", Action = ["s3:AbortMultipartUpload", "s3:PutObject"], Resource = local.bucket_object_arns }
  s3_read  = { Sid = "GetEnvelopes", Effect = "Allow", Action = ["s3:GetObject"], Resource = local.bucket_object_arns }
  # Listing tells "not replicated yet" (404) from "not allowed" (403 without s3:ListBucket) and
  # lets a drill walk a replica.
  s3_list = { Sid = "ListEnvelopes", Effect = "Allow", Action = ["s3:ListBucket"], Resource = local.bucket_arns }

  s3_statements = length(var.buckets) == 0 ? {} : {
    producer = [local.s3_write]
    daemon   = [merge(local.s3_read, { Sid = "GetEnvelopeHeaders" })] # a ranged GET of the header
    operator = [local.s3_read]
    drill    = [local.s3_read, local.s3_list]
    gameday  = [local.s3_write, local.s3_read, local.s3_list]
  }
  s3_role_ids = {
    producer = aws_iam_role.producer.id
    daemon   = aws_iam_role.daemon.id
    operator = aws_iam_role.operator.id
    drill    = aws_iam_role.drill.id
    gameday  = aws_iam_role.gameday.id
  }
}

resource "aws_iam_role_policy" "s3" {
  for_each = local.s3_statements
  name     = "envdr-s3"
  role     = local.s3_role_ids[each.key]
  policy   = jsonencode({ Version = "2012-10-17", Statement = each.value })
}
