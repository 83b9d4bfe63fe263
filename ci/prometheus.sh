#!/usr/bin/env bash
# The gateway's /metrics against real tools (Debian's `prometheus` package):
#   (a) `promtool check metrics` on the live output of the shipped prod config;
#   (b) a real Prometheus, started with config/prometheus/prometheus.yml (only
#       the target address replaced), scrapes the gateway on loopback while
#       WebSocket connections are held open; its HTTP API must report
#       sum(gateway_connections_active) >= 1;
#   (c) every metric name a panel of config/grafana/gateway.json queries is in
#       the live output, and every panel query runs on Prometheus and returns data.
# Installs the `prometheus` package when promtool/prometheus are missing (as
# root). Every wait is bounded; everything started is killed on exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus
  else
    echo "ci/prometheus.sh: needs prometheus and promtool (apt-get install prometheus)" >&2
    exit 1
  fi
fi
prometheus --version 2>&1 | head -1

cargo build --release --locked -p gateway --bins --example hold_idle
BIN="$ROOT/target/release/gateway"
HOLD="$ROOT/target/release/examples/hold_idle"

tmp="$(mktemp -d)"
gw="" hold="" prom=""
cleanup() {
  exec 3>&- 2>/dev/null || true
  for pid in $prom $hold $gw; do kill "$pid" 2>/dev/null || true; done
  for pid in $prom $hold $gw; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local limit="$1" what="$2"; shift 2
  for _ in $(seq $((limit * 10))); do "$@" && return 0; sleep 0.1; done
  echo "FAIL: timed out after ${limit}s waiting for $what" >&2
  return 1
}
http_get() { # http_get URL -> body on stdout
  python3 -c 'import sys, urllib.request
sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The shipped production configuration, on loopback ports picked by the kernel.
"$BIN" --config config/prod.toml --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 2 \
  >"$tmp/gw.out" 2>"$tmp/gw.err" &
gw=$!
wait_for 15 "the gateway to start" grep -q '^admin listening on' "$tmp/gw.out" || { cat "$tmp/gw.err"; exit 1; }
addr=$(sed -n 's/^gateway listening on \([^ ]*\) .*/\1/p' "$tmp/gw.out")
admin=$(sed -n 's/^admin listening on //p' "$tmp/gw.out")
echo "gateway on $addr, admin on $admin"

# Hold WebSocket connections open (each echoes one message first).
HELD=3
mkfifo "$tmp/hold_in"
"$HOLD" "$addr" "$HELD" <"$tmp/hold_in" >"$tmp/hold.out" &
hold=$!
exec 3>"$tmp/hold_in"
wait_for 30 "$HELD held connections" grep -q "holding $HELD" "$tmp/hold.out" || { cat "$tmp/hold.out"; exit 1; }
http_get "http://$addr/healthz" >/dev/null

# (a) promtool on the live output.
sleep 1.2 # one publish interval (admin.publish_ms = 1000), so every worker has published
http_get "http://$admin/metrics" >"$tmp/metrics.txt"
echo "live /metrics: $(grep -vc '^#' "$tmp/metrics.txt") samples"
promtool check metrics <"$tmp/metrics.txt"
echo "ok: promtool check metrics"

# (b) + (c): a real Prometheus with the shipped config, only the target replaced.
sed "s/127\.0\.0\.1:9464/$admin/" config/prometheus/prometheus.yml >"$tmp/prometheus.yml"
grep -q "\"$admin\"" "$tmp/prometheus.yml" || { echo "FAIL: target not templated" >&2; exit 1; }
promtool check config "$tmp/prometheus.yml"
port=$(free_port)
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$port" --log.level=warn >"$tmp/prom.log" 2>&1 &
prom=$!
ready() { http_get "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; }
wait_for 30 "Prometheus to be ready" ready || { cat "$tmp/prom.log"; exit 1; }
if ! python3 ci/prometheus_check.py "http://127.0.0.1:$port" "$tmp/metrics.txt" config/grafana/gateway.json; then
  echo "--- prometheus log ---"; tail -20 "$tmp/prom.log"
  echo "--- gateway log ---"; tail -20 "$tmp/gw.err"
  exit 1
fi
echo "ci/prometheus.sh: all checks passed"
