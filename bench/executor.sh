#!/usr/bin/env bash
# Executor benchmark, side by side in one run on the same server and corpus:
#   * small-object server-side copy: objects/s and client CPU ms per object for
#     one executor process, beside a raw CopyObject client (the ceiling),
#     `rclone copy --transfers 64` and `s3sync --server-side-copy`;
#   * multipart copy MB/s (UploadPartCopy);
#   * peak RSS of downup on an object far larger than its memory bound.
# S3 is s3s-fs (fast; moto saturates near 200 copies/s), SQS is moto.
#
#   bench/executor.sh [OBJECTS=20000] [ROUNDS=1]
#   BASELINE_BIN=DIR bench/executor.sh ...  # also time DIR/commander + DIR/executor
#                                           # (e.g. a build of an older commit) in each round
# Needs: s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary --locked),
# rclone (apt), s3sync (cargo install s3sync --locked); missing peers are skipped
# with a note. Binaries are looked up on PATH and in /opt/peers/bin.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
N=${1:-20000}
ROUNDS=${2:-1}
export PATH="$PATH:/opt/peers/bin:$HOME/.cargo/bin"
ensure_venv 5.2.5

echo "== building release binaries"
cargo build --quiet --release --locked -p commander -p executor -p s3mig-bench
BIN=$PWD/target/release

WORK=$(mktemp -d -t s3mig-bench.XXXXXX)
S3PORT=$(free_port); SQSPORT=$(free_port)
AK=benchkey SK=benchsecret
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
start_s3() {
  mkdir -p "$WORK/s3-$1"
  s3s-fs --host 127.0.0.1 --port "$S3PORT" --access-key $AK --secret-key $SK "$WORK/s3-$1" >"$WORK/s3s-$1.log" 2>&1 &
  S3PID=$!; PIDS+=($S3PID)
  wait_for_port "$S3PORT"
}
S3PID=""
stop_s3() { [ -n "$S3PID" ] || return 0; kill "$S3PID" 2>/dev/null || true; wait "$S3PID" 2>/dev/null || true; }
.venv/bin/moto_server -H 127.0.0.1 -p "$SQSPORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
wait_for_port "$SQSPORT"

S3URL=http://127.0.0.1:$S3PORT
export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=$S3URL AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$SQSPORT
unset AWS_CA_BUNDLE AWS_ENDPOINT_URL AWS_PROFILE || true
export QUEUE_NUM=4 QUEUE_NAME_PATTERN="bench-{:0>2d}" DEAD_QUEUE_NAME=bench-dead

RESULTS=$WORK/results.txt
: >"$RESULTS"
# run NAME OBJECTS CMD... : time a whole process, record wall, CPU and peak RSS.
run() {
  local name=$1 objects=$2; shift 2
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$@" >"$WORK/$name.out" 2>&1 || {
    echo "!! $name failed:"; tail -20 "$WORK/$name.out"; return 0; }
  read -r wall user sys rss <"$WORK/time"
  python3 - "$name" "$objects" "$wall" "$user" "$sys" "$rss" >>"$RESULTS" <<'PY'
import sys
name, n, wall, user, sys_, rss = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:])
print(f"{name:<22} {n:>7} {wall:>8.2f} {n/wall:>10.0f} {(user+sys_)*1000/n:>12.3f} {rss/1024:>9.1f}")
PY
}

for round in $(seq 1 "$ROUNDS"); do
  echo "== round $round: fresh s3s-fs data dir, $N x 1 KiB objects"
  stop_s3; start_s3 "r$round"
  "$BIN/put-objects" --endpoint "$S3URL" --access-key $AK --secret-key $SK --bucket src \
    --also-create dst-raw --also-create dst-base --also-create dst-ours --also-create dst-rclone --also-create dst-s3sync \
    --count "$N" --size 1024 --concurrency 64
  run raw-copy "$N" "$BIN/raw-copy" --endpoint "$S3URL" --access-key $AK --secret-key $SK \
    --source src --target dst-raw --concurrency 256
  if [ -n "${BASELINE_BIN:-}" ]; then
    QUEUE_NAME_PATTERN="base-{:0>2d}" DEAD_QUEUE_NAME=base-dead "$BASELINE_BIN/commander" init >/dev/null
    QUEUE_NAME_PATTERN="base-{:0>2d}" DEAD_QUEUE_NAME=base-dead "$BASELINE_BIN/commander" run -s src -t dst-base >"$WORK/commander-base.out" 2>&1
    QUEUE_NAME_PATTERN="base-{:0>2d}" DEAD_QUEUE_NAME=base-dead run "executor(baseline)" "$N" \
      "$BASELINE_BIN/executor" --mode copy --until-empty --concurrency 256 --acl none
  fi
  # Ours: the commander fills the queues first (not timed), then one executor drains them.
  "$BIN/commander" init >/dev/null
  "$BIN/commander" run -s src -t dst-ours >"$WORK/commander.out" 2>&1
  run "executor(copy)" "$N" "$BIN/executor" --mode copy --until-empty --concurrency 256 --acl none
  if command -v rclone >/dev/null; then
    cat >"$WORK/rclone.conf" <<CONF
[lab]
type = s3
provider = Other
endpoint = $S3URL
access_key_id = $AK
secret_access_key = $SK
force_path_style = true
region = us-east-1
CONF
    run "rclone --transfers 64" "$N" env -u AWS_CA_BUNDLE rclone --config "$WORK/rclone.conf" copy lab:src lab:dst-rclone --transfers 64 --checkers 64
  else echo "(rclone not installed: skipped)"; fi
  if command -v s3sync >/dev/null; then
    run "s3sync --server-side" "$N" s3sync --source-endpoint-url "$S3URL" --target-endpoint-url "$S3URL" \
      --source-force-path-style --target-force-path-style \
      --source-access-key $AK --source-secret-access-key $SK --target-access-key $AK --target-secret-access-key $SK \
      --source-region us-east-1 --target-region us-east-1 --server-side-copy --worker-size 32 s3://src s3://dst-s3sync
  else echo "(s3sync not installed: skipped)"; fi
  for b in dst-raw dst-base dst-ours dst-rclone dst-s3sync; do
    c=$(find "$WORK/s3-r$round/$b" -type f 2>/dev/null | grep -vc '\.s3s' || true)
    echo "   $b: $c objects"
  done
done

echo "== multipart copy: one 1 GiB object, 64 MiB parts (UploadPartCopy)"
"$BIN/put-objects" --endpoint "$S3URL" --access-key $AK --secret-key $SK --bucket big --also-create big-dst \
  --count 1 --size $((1024*1024*1024)) --concurrency 1
"$BIN/commander" run -s big -t big-dst >/dev/null 2>&1
/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$BIN/executor" --mode copy --until-empty --acl none \
  --multipart-threshold 64MiB --part-size 64MiB >"$WORK/mp.out" 2>&1
read -r wall user sys rss <"$WORK/time"
python3 -c "print(f'multipart copy: 1024 MiB, whole process {$wall:.2f} s')"
grep -h "busy" "$WORK/mp.out" | tail -1 | sed 's/^/  /' || true

echo "== downup memory: 512 MiB object, concurrency 2, part size 8 MiB (bound 16 MiB + constant)"
"$BIN/put-objects" --endpoint "$S3URL" --access-key $AK --secret-key $SK --bucket dusrc --also-create dudst \
  --count 1 --size $((512*1024*1024)) --concurrency 1
"$BIN/commander" run -s dusrc -t dudst >/dev/null 2>&1
/usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "$BIN/executor" --mode downup --until-empty --acl none \
  --concurrency 2 --multipart-threshold 8MiB --part-size 8MiB >"$WORK/du.out" 2>&1
read -r wall user sys rss <"$WORK/time"
python3 -c "print(f'downup: 512 MiB, whole process {$wall:.2f} s, peak RSS {$rss/1024:.1f} MiB (memory bound 2 x 8 MiB = 16 MiB + constant)')"
grep -h "busy" "$WORK/du.out" | tail -1 | sed 's/^/  /' || true

echo
echo "== small-object copy, $N x 1 KiB, whole processes (wall time includes start-up and, for the executor, the --until-empty idle check)"
printf '%-22s %7s %8s %10s %12s %9s\n' tool objects wall_s objects/s cpu_ms/obj rss_MiB
cat "$RESULTS"
grep -h "busy" "$WORK/executor(copy).out" | tail -1 | sed "s/^/executor summary: /" || true
