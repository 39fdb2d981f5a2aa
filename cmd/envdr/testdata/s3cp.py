"""Upload files to S3 with boto3's managed transfer (what `aws s3 cp` uses), as a client that
knows nothing of envdr: usage: s3cp.py ENDPOINT REGION BUCKET [FILE KEY]...

Tests use it to check that envelopes put by another S3 client are protected by the S3 event
source with no --enqueue. boto3 is preinstalled with the image's Python (docs/LOCAL.md)."""
import sys

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

endpoint, region, bucket, rest = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
# Credentials from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): the caller's role.
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                  config=Config(s3={"addressing_style": "path"}))
for f, k in zip(rest[0::2], rest[1::2]):
    s3.upload_file(f, bucket, k, Config=TransferConfig(multipart_threshold=8 << 20))
    print(f"upload: {f} to s3://{bucket}/{k}")
