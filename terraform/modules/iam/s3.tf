# The S3 data path (issue 24): who may touch the buckets of envelopes, statement for statement as
# `envdr policy render` gives them (policy/render.go); the role policies of policies.tf carry them
# where render puts them.
#
# Every role reaches every region's bucket: seal falls over to the next region's bucket, open to
# the next region's replica, and a drill or game day reads the survivors' replicas.
locals {
  bucket_arns        = [for b in var.buckets : "arn:${var.partition}:s3:::${b}"]
  bucket_object_arns = [for b in var.buckets : "arn:${var.partition}:s3:::${b}/*"]

  # A multipart upload (envdr seal to s3:// streams one) is authorized as s3:PutObject for
  # CreateMultipartUpload, UploadPart and CompleteMultipartUpload; AbortMultipartUpload is its own
  # action (seal aborts an upload it cannot finish).
  s3_put = ["s3:AbortMultipartUpload", "s3:PutObject"]
  # Without s3:ListBucket S3 answers a missing key 403, not 404: open's fall-over and the drill's
  # data RPO must tell "not replicated yet" from "not allowed".
  s3_objects = { for sid, a in {
    PutEnvelopes        = local.s3_put
    UploadTestEnvelopes = local.s3_put
    # The S3 event source's ranged GET of the header, of the version the notification names
    # (a GET with versionId is s3:GetObjectVersion).
    ReadEnvelopeHeaders = ["s3:GetObject", "s3:GetObjectVersion"]
    OpenEnvelopes       = ["s3:GetObject"]
    OpenReplicas        = ["s3:GetObject"]
  } : sid => { Sid = sid, Effect = "Allow", Action = a, Resource = local.bucket_object_arns } }
  s3_buckets = { for sid in ["ListEnvelopes", "ListReplicas"] : sid => { Sid = sid, Effect = "Allow", Action = ["s3:ListBucket"], Resource = local.bucket_arns } }

  s3_statements = length(var.buckets) == 0 ? {} : {
    producer = [local.s3_objects.PutEnvelopes]
    daemon   = [local.s3_objects.ReadEnvelopeHeaders]
    operator = [local.s3_objects.OpenEnvelopes, local.s3_buckets.ListEnvelopes]
    drill    = [local.s3_objects.OpenReplicas, local.s3_buckets.ListReplicas]
    gameday  = [local.s3_objects.UploadTestEnvelopes, local.s3_objects.OpenReplicas, local.s3_buckets.ListReplicas]
  }
}
