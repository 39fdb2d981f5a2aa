// Upload files to S3 with the AWS SDK for JavaScript v3 (@aws-sdk/client-s3), as a client that
// knows nothing of envdr: usage: node s3put.cjs ENDPOINT REGION BUCKET [FILE KEY]...
//
// Tests use it to check that envelopes put by another S3 client are protected by the S3 event
// source with no --enqueue. The SDK is the one `make local-up` installs at a pinned version for
// the stand-in (scripts/localaws-package-lock.json); NODE_PATH points at its node_modules.
// Credentials come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
const fs = require("fs");
const { S3Client, PutObjectCommand } = require("@aws-sdk/client-s3");

async function main() {
  const [endpoint, region, bucket, ...rest] = process.argv.slice(2);
  const s3 = new S3Client({ endpoint, region, forcePathStyle: true });
  for (let i = 0; i + 1 < rest.length; i += 2) {
    const [file, key] = [rest[i], rest[i + 1]];
    const body = fs.readFileSync(file);
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    console.log(`upload: ${file} to s3://${bucket}/${key}`);
  }
}

main().catch((err) => {
  console.error(err.name + ": " + err.message);
  process.exit(1);
});
