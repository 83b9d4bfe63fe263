#!/usr/bin/env bash
# Is the bench client the bottleneck? Runs the issue-3 efficiency workload:
# 1,000 connections, 1 message in flight each, 100-byte binary messages,
# closed-loop echo; the gateway (1 worker) pinned to CPU 0, bench-client
# pinned to CPU 1. Both CPU figures come from /proc over the measured window,
# divided by the replies in that window: CPU µs per message, client vs server.
#
#   ci/measure-client-efficiency.sh [ROUNDS] [SECONDS]     (default 3 rounds of 10 s)
#
# Run it on a quiet machine: check /proc/loadavg first.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-10}"

cargo build --release --locked -p gateway -p bench-client >/dev/null 2>&1 ||
    cargo build --release --locked -p gateway -p bench-client
tmp=$(mktemp -d)
gw=""
cleanup() { [ -n "$gw" ] && kill "$gw" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

taskset -c 0 target/release/gateway --config config/prod.toml --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --workers 1 >"$tmp/out" 2>"$tmp/err" &
gw=$!
for _ in $(seq 100); do grep -q "gateway listening" "$tmp/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^gateway listening on \([^ ]*\) .*/\1/p' "$tmp/out")
[ -n "$addr" ] || { cat "$tmp/err"; exit 1; }

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %12s %10s %10s %18s %18s\n' round "msg/s" "p50 ms" "p99 ms" "client µs/msg" "server µs/msg"
for r in $(seq "$ROUNDS"); do
    taskset -c 1 target/release/bench-client -q --scenario config/scenarios/throughput.toml \
        --set "target.urls=[\"ws://$addr/echo\"]" --set load.connections=1000 --set load.message_size=100 \
        --set load.in_flight=1 --set "load.duration_secs=$SECS" --set "target.pid=$gw" --set 'client.cpus=[1]' ${EXTRA:+--set "$EXTRA"} \
        --out "$tmp/r$r" >/dev/null
    python3 - "$tmp/r$r/summary.json" "$r" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["cells"][0]
k = c["cost"]
print(f'{sys.argv[2]:<6} {c["tps"]:12.0f} {c["latency"]["p50_ms"]:10.3f} {c["latency"]["p99_ms"]:10.3f} '
      f'{k["client_cpu_us_per_msg"]:18.2f} {k["server_cpu_us_per_msg"]:18.2f}')
PY
done
echo "load average after:  $(cut -d' ' -f1-3 /proc/loadavg)"
