#!/usr/bin/env bash
# Measures what metrics cost: echo throughput and gateway CPU per message with
# `[admin] metrics = true` vs `false`, everything else equal.
#
#   ci/measure-metrics-cost.sh [ROUNDS] [SECONDS]     (default 3 rounds, 10 s windows)
#
# Method: one gateway worker pinned to CPU 0, the bench client pinned to CPU 1
# (closed-loop echo, 64-byte binary messages). Two loads: "batched" (100
# connections x 16 in flight: many messages per receive, so the per-message
# work the metrics add is the largest share) and "ping-pong" (1000 connections
# x 1 in flight: a receive and a send per message). With metrics on, /metrics
# is also scraped every 5 s during the window, as Prometheus would. Rounds
# alternate the order of on and off. The bench client reports throughput and
# the gateway's CPU seconds in the measured window (utime + stime from
# /proc/PID/stat, 10 ms resolution), hence CPU µs per message.
# Prints one line per run and a summary (medians); results/metrics-cost.md
# records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
SECS="${2:-10}"

cargo build --release --locked -p gateway -p bench-client >/dev/null 2>&1 ||
  cargo build --release --locked -p gateway -p bench-client
GATEWAY=target/release/gateway
CLIENT=target/release/bench-client

tmp="$(mktemp -d)"
gw="" scraper=""
cleanup() {
  for pid in $scraper $gw; do kill "$pid" 2>/dev/null || true; done
  for pid in $scraper $gw; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# run LOAD CONNS IN_FLIGHT on|off ROUND -> appends "LOAD MODE ROUND TPS CPU_US UTIL" to $tmp/runs
run() {
  local load="$1" conns="$2" inflight="$3" mode="$4" round="$5"
  local metrics=false
  [ "$mode" = on ] && metrics=true
  printf '[server]\nworkers = 1\npin_workers = false\nmax_connections = 20000\n\n[admin]\nlisten = "127.0.0.1:0"\nmetrics = %s\n' \
    "$metrics" >"$tmp/gw.toml"
  taskset -c 0 "$GATEWAY" --config "$tmp/gw.toml" --listen 127.0.0.1:0 >"$tmp/gw.out" 2>"$tmp/gw.err" &
  gw=$!
  for _ in $(seq 100); do grep -q '^admin listening' "$tmp/gw.out" 2>/dev/null && break; sleep 0.1; done
  local addr admin
  addr=$(sed -n 's/^gateway listening on \([^ ]*\) .*/\1/p' "$tmp/gw.out")
  admin=$(sed -n 's/^admin listening on //p' "$tmp/gw.out")
  [ -n "$addr" ] || { cat "$tmp/gw.err" >&2; exit 1; }
  if [ "$mode" = on ]; then
    taskset -c 1 python3 -c 'import sys, time, urllib.request
while True:
    urllib.request.urlopen(sys.argv[1], timeout=5).read()
    time.sleep(5)' "http://$admin/metrics" >/dev/null 2>&1 &
    scraper=$!
  fi
  local out="$tmp/bc-$load-$mode-$round"
  taskset -c 1 "$CLIENT" --scenario config/scenarios/quick.toml -q --out "$out" \
    --set "target.urls=[\"ws://$addr/echo\"]" --set "target.pid=$gw" \
    --set load.connections="$conns" --set load.in_flight="$inflight" \
    --set load.message_size=64 --set load.warmup_secs=1 --set load.duration_secs="$SECS" \
    --set load.message_timeout_ms=10000 --set load.handshake_timeout_ms=10000 \
    --set client.recv_buffers=1024 >"$out.log" 2>&1 || { cat "$out.log" >&2; exit 1; }
  if [ -n "$scraper" ]; then kill "$scraper"; wait "$scraper" 2>/dev/null || true; scraper=""; fi
  kill "$gw"; wait "$gw" 2>/dev/null || true; gw=""
  python3 - "$out/summary.json" "$load" "$mode" "$round" "$SECS" >>"$tmp/runs" <<'PY'
import json, sys
path, load, mode, rnd, secs = sys.argv[1:6]
cell = json.load(open(path))["cells"][0]
cost = cell["cost"]
print(load, mode, rnd, round(cell["tps"]), f'{cost["server_cpu_us_per_msg"]:.4f}',
      f'{cost["server_cpu_secs"] / float(secs):.3f}')
PY
  tail -1 "$tmp/runs"
}

echo "load mode round msgs_per_s server_cpu_us_per_msg server_cpu_util"
for round in $(seq "$ROUNDS"); do
  order="on off"
  [ $((round % 2)) -eq 0 ] && order="off on"
  for mode in $order; do run batched 100 16 "$mode" "$round"; done
  for mode in $order; do run ping-pong 1000 1 "$mode" "$round"; done
done

python3 - "$tmp/runs" <<'PY'
import statistics, sys
runs = [l.split() for l in open(sys.argv[1])]
print()
print("| load | metrics | runs | msgs/s (median) | gateway CPU µs/msg (median) | gateway CPU use |")
print("|---|---|---|---|---|---|")
summary = {}
for load in dict.fromkeys(r[0] for r in runs):
    for mode in ("off", "on"):
        rows = [r for r in runs if r[0] == load and r[1] == mode]
        tps = statistics.median(float(r[3]) for r in rows)
        cpu = statistics.median(float(r[4]) for r in rows)
        util = statistics.median(float(r[5]) for r in rows)
        summary[(load, mode)] = (tps, cpu)
        print(f"| {load} | {mode} | {len(rows)} | {tps:,.0f} | {cpu:.4f} | {util:.0%} |")
print()
for load in dict.fromkeys(r[0] for r in runs):
    (t0, c0), (t1, c1) = summary[(load, "off")], summary[(load, "on")]
    print(f"{load}: metrics on vs off: CPU per message {100 * (c1 - c0) / c0:+.2f}%, "
          f"throughput {100 * (t1 - t0) / t0:+.2f}%")
PY
