#!/usr/bin/env bash
# Sync benchmark (issue 15): diff two listings of N keys each (directory
# stores on both sides) and report keys/s and peak RSS, at 100,000 and
# 1,000,000 keys, side by side with peers in one run:
#   * ours: `commander run --sync --delete --dry-run --json` (lists both
#     sides, merge-joins them, sends nothing); with directories the default
#     comparison is size then modification time (no ETags), so its tally
#     must equal the fixture's known counts exactly, or the script fails
#     (the correctness check);
#   * `rclone sync --dry-run` (size + modtime) and `rclone check --size-only`;
#   * `find` listing both trees with size and mtime (the floor: no diff).
# Tools are interleaved, ROUNDS runs each; the table shows the median wall
# time and peak RSS ("Maximum resident set size" of /usr/bin/time -v).
# keys/s = keys listed on both sides / wall time.
#
#   bench/sync.sh [ROUNDS=2] [SIZES="100000 1000000"]
# Fixtures (bench/src/bin/sync-fixture.rs) live in $SYNC_BENCH_DIR
# (default /tmp/s3mig-syncbench, about 130 MB and 2.2M inodes for both sizes)
# and are reused across runs; generating them is not measured.
# Never part of `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
SIZES=${2:-"100000 1000000"}
FIXTURES=$(realpath -m "${SYNC_BENCH_DIR:-/tmp/s3mig-syncbench}")
export PATH="$PATH:/opt/peers/bin:$HOME/.cargo/bin"
# rclone's AWS SDK fails on the machine's CA bundle; nothing here is remote.
unset AWS_CA_BUNDLE AWS_ENDPOINT_URL AWS_PROFILE || true
export RCLONE_CONFIG=/dev/null MIGRATION_LOG_LEVEL=warn

echo "== building release binaries"
cargo build --quiet --release --locked -p commander -p s3mig-bench
BIN=$PWD/target/release

for n in $SIZES; do
  "$BIN/sync-fixture" --dir "$FIXTURES/k$n" --keys "$n"
done

WORK=$(mktemp -d -t s3mig-syncbench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT INT TERM
RUNS=$WORK/runs.tsv
: >"$RUNS"
mkdir "$WORK/cwd"

# run TOOL N CMD... : time one whole process (in an empty directory: no
# config file is read); keep its stdout and stderr for the parser. Exit 1 is what `rclone check` answers
# when it found differences (it always does here).
run() {
  local tool=$1 n=$2 out
  shift 2
  out=$WORK/$tool-$n-$round.out
  if ! (cd "$WORK/cwd" && /usr/bin/time -v -o "$WORK/time" "$@" >"$out" 2>"$out.err"); then
    if [ "$tool" != rclone-check ] || ! grep -q "differences found" "$out.err"; then
      echo "!! $tool ($n keys) failed:"; tail -20 "$out.err"; exit 1
    fi
  fi
  python3 bench/sync_parse.py run "$tool" "$n" "$out" "$WORK/time" "$FIXTURES/k$n/expected.json" >>"$RUNS"
}

for round in $(seq 1 "$ROUNDS"); do
  for n in $SIZES; do
    echo "== round $round, $n keys a side"
    F=$FIXTURES/k$n
    run ours "$n" "$BIN/commander" run --sync --delete --dry-run --json -s "$F/src" -t "$F/tgt"
    run rclone-sync "$n" rclone sync --dry-run "$F/src" "$F/tgt"
    run rclone-check "$n" rclone check --size-only "$F/src" "$F/tgt"
    run find "$n" sh -c 'find "$1/src" "$1/tgt" -type f -printf "%P %s %T@\n" | wc -l' find "$F"
  done
done

python3 bench/sync_parse.py table "$RUNS"
