#!/usr/bin/env bash
# Cluster measurements (results/cluster.md). Gateway nodes pinned to CPU 0
# (1 worker each), the broker server (redis-server / nats-server) and the
# bench client on CPU 1. CPU: utime+stime ticks (100/s) from /proc/PID/stat
# of each process, before and after the bench run (ramp, warm-up, window and
# cool-down included).
#
#   KIND=memory|redis|nats  NODES=1|2|3  SUBS=2000  RATE=10  SECS=20  WARMUP=3
#   KILL_AT=<s>   kill -9 the last node this many seconds after the bench starts
#   RECONNECT="0 2000"   load.reconnect with this delay range (ms)
#   TAG=name      output under results/cluster/out/$TAG
#   WORKERS=1     [server] workers of each node (all on CPU 0)
#   PLACEMENT=thread|workers   broker.placement (unset: the config's default)
#   B=dir         the release binaries (default $CARGO_TARGET_DIR/release or target/release)
#
#   results/cluster/run.sh                     # KIND=redis NODES=2: cross vs same node
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ulimit -n 20000
KIND=${KIND:-redis}; NODES=${NODES:-2}; SUBS=${SUBS:-2000}; RATE=${RATE:-10}
SECS=${SECS:-20}; WARMUP=${WARMUP:-3}; KILL_AT=${KILL_AT:-}; RECONNECT=${RECONNECT:-}
TAG=${TAG:-$KIND-$NODES}; WORKERS=${WORKERS:-1}; PLACEMENT=${PLACEMENT:-}
OUT=$ROOT/results/cluster/out/$TAG; rm -rf "$OUT"; mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/cluster-run.XXXXXX)
B=${B:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
cpu() { awk '{print $14+$15}' /proc/$1/stat 2>/dev/null || echo 0; }
# utime+stime summed over every process (fields after "pid (comm) ").
alltick() { cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^.*) //' | awk '{s+=$12+$13} END{print s}'; }
BPID=""
case $KIND in
  redis) taskset -c 1 redis-server --port 6391 --save '' --appendonly no --bind 127.0.0.1 > "$WORK/broker.log" 2>&1 & BPID=$!; BADDR=127.0.0.1:6391;;
  nats) taskset -c 1 nats-server -a 127.0.0.1 -p 4223 > "$WORK/broker.log" 2>&1 & BPID=$!; BADDR=127.0.0.1:4223;;
  memory) [ "$NODES" = 1 ] || { echo "memory broker: one node only" >&2; exit 2; };;
esac
sleep 0.5
mk() { # node index
  sed -e 's/^level = "info"/level = "warn"/' -e "s/^workers = 1\$/workers = $WORKERS/" \
    config/cluster-redis.toml > "$WORK/n$1.toml"
  if [ "$KIND" = memory ]; then
    python3 - "$WORK/n$1.toml" <<'PY'
import sys,re
p=sys.argv[1]; s=open(p).read(); s=re.sub(r'^\[broker\]\n.*?(?=^\[)','',s, flags=re.S|re.M); open(p,'w').write(s)
PY
  else
    sed -i -e "s/^kind = \"redis\"/kind = \"$KIND\"/" -e "s/^addresses = .*/addresses = [\"$BADDR\"]/" \
      -e "s/^# node = .*/node = \"n$1\"/" "$WORK/n$1.toml"
    if [ -n "$PLACEMENT" ]; then
      sed -i -e "s/^\\[broker\\]\$/[broker]\nplacement = \"$PLACEMENT\"/" "$WORK/n$1.toml"
    fi
  fi
}
PIDS=(); URLS=""
for i in $(seq 0 $((NODES - 1))); do
  mk $i
  taskset -c 0 $B/gateway --config "$WORK/n$i.toml" --listen 127.0.0.1:$((9201 + i)) \
    --admin-listen 127.0.0.1:$((9491 + i)) > "$WORK/n$i.log" 2>&1 & PIDS+=($!)
  URLS="$URLS${URLS:+, }\"ws://127.0.0.1:$((9201 + i))/connection/websocket\""
done
trap 'kill ${PIDS[*]} $BPID 2>/dev/null || true; cp $WORK/*.log $WORK/*.toml "$OUT/" 2>/dev/null || true; rm -rf $WORK' EXIT
sleep 1.5
declare -A G0; for p in "${PIDS[@]}"; do G0[$p]=$(cpu $p); done
b0=0; [ -n "$BPID" ] && b0=$(cpu $BPID)
SETS=(--set "target.urls=[$URLS]" --set load.connections=$SUBS --set publish.rate=$RATE
      --set publish.api_url=http://127.0.0.1:9491/api/publish --set load.duration_secs=$SECS
      --set load.warmup_secs=$WARMUP)
if [ -n "$RECONNECT" ]; then
  set -- $RECONNECT
  SETS+=(--set load.reconnect=true --set "load.reconnect_delay_ms=[$1, $2]")
fi
t0=$(date +%s.%N)
taskset -c 1 $B/bench-client -q --out "$OUT/bench" -s config/scenarios/cluster-fanout.toml \
  "${SETS[@]}" > "$OUT/bench.txt" 2>&1 &
BENCH=$!
# CPU ticks of every process once a second while the bench runs (nodes,
# then the broker), the bench's, the sum over every process on the machine
# (all=; all minus ours is other load: another engineer builds and
# benchmarks on this box at times, and such runs are redone), and how many
# rustc processes were running. (/proc/stat's machine-wide counters do not
# follow the processes' ticks in this VM, hence the sum over /proc/*/stat.)
( while kill -0 $BENCH 2>/dev/null; do
    line="$(date +%s.%N)"; for p in "${PIDS[@]}" $BPID; do line="$line $(cpu $p)"; done
    echo "$line bench=$(cpu $BENCH) all=$(alltick) rustc=$(pgrep -c rustc)"; sleep 1
  done ) > "$OUT/cpu-series.txt" &
SAMPLER=$!
if [ -n "$KILL_AT" ]; then
  sleep "$KILL_AT"
  LAST=${PIDS[$((NODES - 1))]}
  cpu $LAST > "$WORK/killed-ticks"
  kill -9 "$LAST"
  echo "killed node $((NODES - 1)) (pid $LAST) with kill -9 at $(echo "$(date +%s.%N) - $t0" | bc) s after the bench started" > "$OUT/kill.txt"
fi
wait $BENCH || true
t1=$(date +%s.%N)
# The nodes' broker series at the end (received_total: publications the
# broker delivered to each node's connections).
for i in "${!PIDS[@]}"; do
  curl -s -m 2 http://127.0.0.1:$((9491 + i))/metrics 2>/dev/null \
    | grep -E '^gateway_broker_(received_total|published_total|channels|connections|dropped_total) ' \
    | sed "s/^/node$i /" >> "$OUT/metrics.txt" || true
done
grep -h 'gateway_broker_received_total' "$OUT/metrics.txt" 2>/dev/null | awk '{print $2, $3}' > "$OUT/metrics-received.txt" || true
wait $SAMPLER 2>/dev/null || true
{
  echo "wall $(echo "$t1 - $t0" | bc) s (whole bench run)"
  for i in "${!PIDS[@]}"; do
    p=${PIDS[$i]}; now=$(cpu $p)
    [ -n "$KILL_AT" ] && [ "$i" = $((NODES - 1)) ] && now=$(cat "$WORK/killed-ticks")
    echo "node$i ticks $((now - ${G0[$p]}))"
  done
  [ -n "$BPID" ] && echo "broker ticks $(( $(cpu $BPID) - b0 ))"
} > "$OUT/cpu.txt"
cat "$OUT/cpu.txt"
grep -E "deliveries|cross-node|latency|publications|missing|reconnect|recovered|dropped|up at end|target [0-9]" "$OUT/bench.txt" | head -40
