#!/usr/bin/env bash
# Commander benchmark:
#   * inventory parsing rate (rows/s, one thread): a generated gzip CSV data
#     file with the full schema, read by the same code as `commander run -m`;
#   * listing rate (dry run: ListObjectsV2 + batching, nothing sent) and
#     list-and-send rate (keys/s into SQS) for KEYS objects in 50 folders.
# S3 is s3s-fs when installed (fast), else moto; SQS is moto (a Python server:
# it bounds the send rate, the figure is a floor).
#
#   bench/commander.sh [KEYS=20000] [ROWS=2000000]
# Never part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-20000}
ROWS=${2:-2000000}
export PATH="$PATH:/opt/peers/bin:$HOME/.cargo/bin"
ensure_venv 5.2.5

echo "== building release binaries"
cargo build --quiet --release --locked -p commander -p s3mig-bench
BIN=$PWD/target/release

echo "== inventory parsing ($ROWS rows)"
"$BIN/inventory-parse" --rows "$ROWS" 2>/dev/null

WORK=$(mktemp -d -t s3mig-cmdbench.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

SQSPORT=$(free_port)
.venv/bin/moto_server -H 127.0.0.1 -p "$SQSPORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
wait_for_port "$SQSPORT"
AK=benchkey SK=benchsecret
if command -v s3s-fs >/dev/null; then
  S3PORT=$(free_port)
  mkdir -p "$WORK/s3"
  s3s-fs --host 127.0.0.1 --port "$S3PORT" --access-key $AK --secret-key $SK "$WORK/s3" >"$WORK/s3s.log" 2>&1 &
  PIDS+=($!)
  wait_for_port "$S3PORT"
  S3NAME=s3s-fs
else
  S3PORT=$SQSPORT
  S3NAME="moto (s3s-fs not found: slow)"
fi
S3URL=http://127.0.0.1:$S3PORT
export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=$S3URL AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$SQSPORT
unset AWS_CA_BUNDLE AWS_ENDPOINT_URL AWS_PROFILE || true
export QUEUE_NUM=4 QUEUE_NAME_PATTERN="cmdbench-{:0>2d}" DEAD_QUEUE_NAME=cmdbench-dead MIGRATION_LOG_LEVEL=warn

echo "== creating $N objects on $S3NAME"
"$BIN/put-objects" --endpoint "$S3URL" --access-key $AK --secret-key $SK --bucket cmdbench-src --count "$N" --size 1
(cd "$WORK" && "$BIN/commander" init >/dev/null)

figure() { python3 -c 'import json,sys; s=json.load(sys.stdin); print("%d keys, %d messages in %.2f s = %.0f keys/s" % (s["objects"], s["messages"], s["elapsed_seconds"], s["keys_per_second"]))'; }
echo "== list only (--dry-run), S3 on $S3NAME"
(cd "$WORK" && "$BIN/commander" run -s cmdbench-src -t cmdbench-dst --dry-run --json 2>/dev/null) | figure
echo "== list and send (SQS on moto, 4 queues, batch 500)"
(cd "$WORK" && "$BIN/commander" run -s cmdbench-src -t cmdbench-dst --json 2>/dev/null) | figure
