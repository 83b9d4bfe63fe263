#!/usr/bin/env bash
# The gateway's /metrics against real tools (Debian's `prometheus` package):
#   (a) `promtool check metrics` on the live output of the shipped prod config
#       plus an `upstream` route to a `mock-backend` (so the gateway_upstream_*
#       series have data);
#   (b) a real Prometheus, started with config/prometheus/prometheus.yml (only
#       the target address replaced), scrapes the gateway on loopback while
#       WebSocket connections are held open and upstream round trips keep
#       going; its HTTP API must report sum(gateway_connections_active) >= 1;
#   (c) every metric name a panel of config/grafana/gateway.json queries is in
#       the live output, and every panel query runs on Prometheus and returns
#       data; Prometheus has counted 2xx backend calls.
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
cargo build --release --locked -p mock-backend
BIN="$ROOT/target/release/gateway"
HOLD="$ROOT/target/release/examples/hold_idle"
MOCK="$ROOT/target/release/mock-backend"

tmp="$(mktemp -d)"
gw="" hold="" prom="" mock="" calls=""
cleanup() {
  exec 3>&- 2>/dev/null || true
  for pid in $prom $calls $hold $gw $mock; do kill "$pid" 2>/dev/null || true; done
  for pid in $prom $calls $hold $gw $mock; do wait "$pid" 2>/dev/null || true; done
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

# The mock backend (--echo: a message that is not id-carrying JSON comes back).
"$MOCK" --listen 127.0.0.1:0 --echo >"$tmp/mock.out" 2>"$tmp/mock.err" &
mock=$!
wait_for 15 "mock-backend to start" grep -q '^listening on' "$tmp/mock.out" || { cat "$tmp/mock.err"; exit 1; }
backend=$(sed -n 's/^listening on //p' "$tmp/mock.out")
echo "mock-backend on $backend"

# The shipped production configuration plus an upstream route to the mock
# backend, on loopback ports picked by the kernel.
{
  cat config/prod.toml
  cat <<EOF

# Added by ci/prometheus.sh: an upstream route and its backend.
[[routes]]
path = "/upstream"
app = "upstream"
[routes.upstream]
backend = "mock"

[[backends]]
name = "mock"
address = "$backend"
EOF
} >"$tmp/gateway.toml"
"$BIN" --config "$tmp/gateway.toml" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 2 \
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

# Upstream round trips until exit, a few per second: each connection's
# $connect, one echoed message and $disconnect are backend calls.
(
  while "$HOLD" "$addr" 1 /upstream </dev/null >>"$tmp/calls.out" 2>&1; do sleep 0.2; done
  echo "upstream round trip failed" >>"$tmp/calls.out"
) &
calls=$!
wait_for 30 "an upstream round trip" grep -q "holding 1" "$tmp/calls.out" || { cat "$tmp/calls.out"; exit 1; }

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
  echo "--- upstream round trips ---"; tail -5 "$tmp/calls.out"
  exit 1
fi
# The round trips reached the backend and Prometheus saw them as 2xx calls.
twoxx=$(http_get "http://127.0.0.1:$port/api/v1/query?query=sum(gateway_upstream_requests_total%7Boutcome%3D%222xx%22%7D)" |
  python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)')
if [ "$twoxx" -lt 1 ] || grep -q "failed" "$tmp/calls.out"; then
  echo "FAIL: upstream calls with outcome 2xx: $twoxx" >&2; tail -5 "$tmp/calls.out" >&2; exit 1
fi
echo "ok: Prometheus reports $twoxx upstream calls with outcome 2xx"
echo "ci/prometheus.sh: all checks passed"
