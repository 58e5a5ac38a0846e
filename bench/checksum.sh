#!/usr/bin/env bash
# Checksum cost benchmark (issue 14): one executor in downup mode copies one
# 1 GiB object that has no checksum of its own, with `--checksum-algorithm`
# none / crc64nvme / crc32c / sha256, as one streamed PutObject and as a
# multipart upload (64 MiB parts). The executor runs on one core (taskset -c 0;
# s3s-fs on the other), so "the CRC costs under 10% of the copy on one core"
# can be read off: throughput and executor CPU per GiB beside the `none` run.
# Variants are interleaved in every round (the order rotates), so the
# machine's noise hits them alike. The raw hashing speed of each algorithm on
# one core (bench/src/bin/hash-speed.rs) is printed first.
# S3 is s3s-fs, SQS is moto.
#
#   bench/checksum.sh [ROUNDS=2] [SIZE_MIB=1024]
# Needs: s3s-fs (cargo install s3s-fs --version 0.14.1 --features binary --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ROUNDS=${1:-2}
SIZE_MIB=${2:-1024}
SIZE=$((SIZE_MIB * 1024 * 1024))
ALGS=(none crc64nvme crc32c sha256)
LAYOUTS=(single multipart)
export PATH="$PATH:/opt/peers/bin:$HOME/.cargo/bin"
ensure_venv 5.2.5
command -v s3s-fs >/dev/null || { echo "s3s-fs not found (cargo install s3s-fs --version 0.14.1 --features binary --locked)"; exit 1; }

# One core for the executor, the other for the server, when there are two.
PIN=() SERVER_PIN=()
if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
  PIN=(taskset -c 0) SERVER_PIN=(taskset -c 1)
  CORES="executor on core 0 (taskset -c 0), s3s-fs on core 1"
else
  CORES="NOT pinned (no taskset or one CPU): the executor may use every core"
fi

echo "== building release binaries"
cargo build --quiet --release --locked -p commander -p executor -p s3mig-bench
BIN=$PWD/target/release

echo "== raw hashing speed, one thread on one core, 256 MiB in memory"
"${PIN[@]}" "$BIN/hash-speed" --mib 256

WORK=$(mktemp -d -t s3mig-ckbench.XXXXXX)
S3PORT=$(free_port); SQSPORT=$(free_port)
AK=benchkey SK=benchsecret
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM
mkdir -p "$WORK/s3"
"${SERVER_PIN[@]}" s3s-fs --host 127.0.0.1 --port "$S3PORT" --access-key $AK --secret-key $SK "$WORK/s3" >"$WORK/s3s.log" 2>&1 &
PIDS+=($!)
.venv/bin/moto_server -H 127.0.0.1 -p "$SQSPORT" >"$WORK/moto.log" 2>&1 &
PIDS+=($!)
wait_for_port "$S3PORT"; wait_for_port "$SQSPORT"

S3URL=http://127.0.0.1:$S3PORT
export AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=us-east-1
export AWS_ENDPOINT_URL_S3=$S3URL AWS_ENDPOINT_URL_SQS=http://127.0.0.1:$SQSPORT
unset AWS_CA_BUNDLE AWS_ENDPOINT_URL AWS_PROFILE || true
export QUEUE_NUM=1 QUEUE_NAME_PATTERN="ckbench-{:0>2d}" DEAD_QUEUE_NAME=ckbench-dead MIGRATION_LOG_LEVEL=warn

# s3 OP BUCKET [KEY]: head (prints "size algorithm type"; "-" for none),
# delete, or create, through boto3 from the moto venv.
s3() {
  .venv/bin/python - "$@" <<'PY'
import sys, boto3
from botocore.config import Config
op, bucket, key = sys.argv[1], sys.argv[2], (sys.argv[3] if len(sys.argv) > 3 else None)
s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"},
                  request_checksum_calculation="when_required"))
if op == "create":
    s3.create_bucket(Bucket=bucket)
elif op == "delete":
    s3.delete_object(Bucket=bucket, Key=key)
else:
    h = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    algs = [k[len("Checksum"):] for k in h if k.startswith("Checksum") and k != "ChecksumType"]
    print(h["ContentLength"], ",".join(algs) or "-", h.get("ChecksumType", "-"), h["ETag"].strip('"'))
PY
}

echo "== source: one ${SIZE_MIB} MiB object written without a checksum"
"$BIN/put-objects" --endpoint "$S3URL" --access-key $AK --secret-key $SK --bucket cksrc \
  --count 1 --size "$SIZE" --concurrency 1 --no-checksum
KEY=dir-00/obj-0000000
read -r ssize salg stype setag < <(s3 head cksrc "$KEY")
echo "   HEAD (checksum mode on): $ssize bytes, checksum $salg, ETag $setag"
if [ "$salg" != "-" ]; then
  echo "!! the source has a $salg checksum: every variant would carry it instead of computing one"; exit 1
fi
"$BIN/commander" init >/dev/null

RESULTS=$WORK/results.txt
: >"$RESULTS"
FAILED=0
# run ROUND LAYOUT ALG: one executor, fresh target bucket; appends
# "layout alg wall busy user sys rss_kib" to $RESULTS after verifying the target.
run() {
  local round=$1 layout=$2 alg=$3
  local bucket="ck-r$round-$layout-$alg" sizes
  case $layout in
    single) sizes=(--multipart-threshold 5GiB --part-size 64MiB) ;;
    multipart) sizes=(--multipart-threshold 64MiB --part-size 64MiB) ;;
  esac
  s3 create "$bucket"
  "$BIN/commander" run -s cksrc -t "$bucket" >"$WORK/commander.out" 2>&1
  local out="$WORK/$bucket.out"
  if ! /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" "${PIN[@]}" "$BIN/executor" --mode downup \
      --until-empty --acl none --concurrency 1 --checksum-algorithm "$alg" "${sizes[@]}" >"$out" 2>&1 \
      || ! grep -q "(copied 1)" "$out"; then
    echo "!! $layout/$alg failed:"; tail -5 "$out"; FAILED=1; return 0
  fi
  read -r wall user sys rss <"$WORK/time"
  busy=$(sed -n 's/.*; busy \([0-9.]*\) s.*/\1/p' "$out" | tail -1)
  read -r tsize talg ttype tetag < <(s3 head "$bucket" "$KEY")
  local want note=""
  want=$(tr '[:lower:]' '[:upper:]' <<<"$alg"); [ "$alg" = none ] && want="-"
  if [ "$tsize" != "$SIZE" ]; then
    echo "!! $layout/$alg: target has $tsize bytes, not $SIZE"; FAILED=1
  elif [ "$alg" = none ] && [ "$talg" = "-" ]; then
    note="target: $tsize bytes, no checksum (none asked)"
  elif [ "$talg" = "$want" ]; then
    note="target: $tsize bytes, checksum $talg ($ttype)"
  elif [ "$layout" = multipart ] && [ "$talg" = "-" ]; then
    note="target: $tsize bytes, ETag $tetag; s3s-fs keeps no checksum on multipart objects"
  elif [ "$layout/$alg" = single/crc64nvme ] && [ "$talg" = "-" ]; then
    # The executor sends no trailer for CRC64NVME: S3 (and LocalStack) give an
    # object written without a checksum a CRC64NVME of their own; s3s-fs does not.
    note="target: $tsize bytes, ETag $tetag; no checksum: s3s-fs adds no default CRC64NVME (AWS does; the executor notes it on the key)"
  else
    echo "!! $layout/$alg: target checksum $talg, asked $want"; FAILED=1
  fi
  [ -n "$note" ] && echo "   r$round $layout/$alg: wall ${wall}s, busy ${busy}s, cpu $(python3 -c "print(round($user+$sys,2))")s; $note"
  echo "$layout $alg $wall $busy $user $sys $rss" >>"$RESULTS"
  s3 delete "$bucket" "$KEY"   # keep the disk free: 8 GiB a round otherwise
}

echo "== $ROUNDS rounds x ${#LAYOUTS[@]} layouts x ${#ALGS[@]} algorithms; $CORES"
VARIANTS=()
for l in "${LAYOUTS[@]}"; do for a in "${ALGS[@]}"; do VARIANTS+=("$l $a"); done; done
for round in $(seq 1 "$ROUNDS"); do
  n=${#VARIANTS[@]}
  for i in $(seq 0 $((n - 1))); do
    # Rotate the order each round so no variant always runs first.
    run "$round" ${VARIANTS[$(((i + round - 1) % n))]}
  done
done

echo
echo "== downup of one ${SIZE_MIB} MiB object, $ROUNDS rounds (medians); $CORES"
echo "   MB/s = bytes / the executor's busy time (first receive -> last key); wall = whole process"
echo "   incl. start-up and the --until-empty idle checks; CPU = executor user+sys per GiB"
python3 - "$RESULTS" "$SIZE" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
size = int(sys.argv[2])
gib = size / 2**30
by = {}
for layout, alg, wall, busy, user, sys_, rss in rows:
    by.setdefault((layout, alg), []).append((float(wall), float(busy), float(user) + float(sys_), int(rss)))
print(f"{'layout':<10} {'checksum':<10} {'runs':>4} {'MB/s':>7} {'vs none':>8} {'wall_s':>7} {'cpu_s/GiB':>10} {'cpu vs none':>12} {'rss_MiB':>8}")
for layout in ("single", "multipart"):
    base = by.get((layout, "none"))
    bmbs = size / st.median(r[1] for r in base) / 1e6 if base else None
    bcpu = st.median(r[2] for r in base) / gib if base else None
    for alg in ("none", "crc64nvme", "crc32c", "sha256"):
        rs = by.get((layout, alg))
        if not rs:
            print(f"{layout:<10} {alg:<10} {0:>4}   (failed)")
            continue
        mbs = size / st.median(r[1] for r in rs) / 1e6
        cpu = st.median(r[2] for r in rs) / gib
        ratio = f"{mbs / bmbs:.3f}" if bmbs else "-"
        extra = f"{(cpu / bcpu - 1) * 100:+.1f}%" if bcpu else "-"
        print(f"{layout:<10} {alg:<10} {len(rs):>4} {mbs:>7.1f} {ratio:>8} {st.median(r[0] for r in rs):>7.2f} "
              f"{cpu:>10.2f} {extra:>12} {max(r[3] for r in rs) / 1024:>8.0f}")
PY
cat <<'NOTE'
single   = one streamed PutObject: with a checksum and no source value to send up front, the
           SDK computes it into an aws-chunked trailer; on an http:// endpoint (s3s-fs here)
           the SDK then also signs every chunk (SigV4 chunk signatures: a SHA-256 of every
           byte), on https:// it sends the chunks unsigned. Part of the single-row cost is that.
multipart= parts of 64 MiB read into memory, the checksum computed once by the executor and
           sent as each part's value: the cost of the checksum itself.
NOTE
exit $FAILED
