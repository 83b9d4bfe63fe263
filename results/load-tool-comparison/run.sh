#!/usr/bin/env bash
# One run of the load-tool comparison (results/load-tool-comparison.md).
#
#   results/load-tool-comparison/run.sh TOOL WORKLOAD LABEL
#     TOOL      bench-client | tsung | tsung-fullstats (tsung writing every
#               sample, for percentiles; costs tsung CPU, not for CPU figures)
#     WORKLOAD  rate   (200 conns x ~10 msg/s, 100 B text)
#               closed (200 conns, 1 in flight, no think time, 100 B text)
#     LABEL     names the output folder results/load-tool-comparison/<TOOL>-<WORKLOAD>-<LABEL>
#
# Needs: tsung (apt-get install tsung), python3, /usr/bin/time, and the
# release binaries (cargo build --release -p gateway -p bench-client);
# GATEWAY=... BENCH=... override their paths. BENCH_SET=key=value adds one
# --set to the bench-client command.
#
# Gateway: 1 worker pinned to CPU 0, config/prod.toml, on 127.0.0.1:18080
# (admin 127.0.0.1:19464; other gateways on this box use 8080/9464), started
# fresh for every run. Load tool pinned to CPU 1. Before starting, waits (up to
# 20 min) for the 1-minute load average to drop to <= 0.5.
set -euo pipefail

TOOL=${1:?tool}; WORKLOAD=${2:?workload}; LABEL=${3:?label}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
GATEWAY=${GATEWAY:-$ROOT/target/release/gateway}
BENCH=${BENCH:-$ROOT/target/release/bench-client}
CONFIG=${CONFIG:-$ROOT/config/prod.toml}
PORT=18080
ADMIN=19464
WARMUP=6      # sampler: seconds after the first echoed message
WINDOW=${WINDOW:-58}     # sampler: measured seconds
OUT=$HERE/$TOOL-$WORKLOAD-$LABEL
mkdir -p "$OUT"

# --- wait for a quiet machine
for i in $(seq 1 ${QUIET_TRIES:-80}); do
    LOAD1=$(cut -d' ' -f1 /proc/loadavg)
    if awk -v l="$LOAD1" 'BEGIN{exit !(l <= 0.5)}'; then break; fi
    echo "loadavg $LOAD1 > 0.5, waiting 15 s ($i)" >&2
    sleep 15
done
LOADAVG_START=$(cat /proc/loadavg)
echo "loadavg at start: $LOADAVG_START" >&2

# --- gateway
taskset -c 0 "$GATEWAY" --config "$CONFIG" --listen 127.0.0.1:$PORT \
    --admin-listen 127.0.0.1:$ADMIN --workers 1 >"$OUT/gateway.log" 2>&1 &
GW=$!
trap 'kill $GW 2>/dev/null || true' EXIT
for _ in $(seq 50); do
    curl -sf http://127.0.0.1:$PORT/healthz >/dev/null && break
    sleep 0.1
done

# --- load tool, pinned to CPU 1, under /usr/bin/time
case $TOOL in
bench-client)
    taskset -c 1 /usr/bin/time -v -o "$OUT/time.txt" \
        "$BENCH" --scenario "$HERE/bench-$WORKLOAD.toml" -q \
        --set target.pid=$GW --set 'client.cpus=[1]' ${BENCH_SET:+--set "$BENCH_SET"} \
        --out "$OUT" >"$OUT/stdout.txt" 2>"$OUT/stderr.txt" &
    ;;
tsung|tsung-fullstats)
    BACKEND=text; [ "$TOOL" = tsung-fullstats ] && BACKEND=fullstats
    THINK=""; [ "$WORKLOAD" = rate ] && THINK='<thinktime value="0.1" random="false"/>'
    PAYLOAD=$(printf 'x%.0s' $(seq 100))
    sed -e "s|@PORT@|$PORT|" -e "s|@DURATION@|${DURATION:-72}|" -e "s|@PAYLOAD@|$PAYLOAD|" \
        -e "s|@THINK@|$THINK|" -e "s|@BACKEND@|$BACKEND|" \
        "$HERE/tsung.xml.in" >"$OUT/tsung.xml"
    TLOG=$(mktemp -d /tmp/tsung-log.XXXXXX)
    taskset -c 1 /usr/bin/time -v -o "$OUT/time.txt" \
        tsung -n -l "$TLOG" -f "$OUT/tsung.xml" start >"$OUT/stdout.txt" 2>"$OUT/stderr.txt" &
    ;;
*) echo "unknown tool $TOOL" >&2; exit 2 ;;
esac
TOOLPID=$!

python3 "$HERE/sampler.py" $TOOLPID $GW http://127.0.0.1:$ADMIN/metrics $WARMUP $WINDOW \
    >"$OUT/sampler.json"
wait $TOOLPID || echo "tool exited with $?" >&2

case $TOOL in
tsung*)
    D=$(ls -d "$TLOG"/*/ | head -1)
    cp "$D/tsung.log" "$OUT/tsung.log"
    if [ -f "$D/tsung-fullstats.log" ]; then
        python3 "$HERE/tsung_stats.py" --fullstats "$D/tsung-fullstats.log" >"$OUT/fullstats-summary.json"
    fi
    python3 "$HERE/tsung_stats.py" "$OUT/tsung.log" >"$OUT/tsung-summary.json"
    rm -rf "$TLOG"
    ;;
esac

kill $GW; wait $GW 2>/dev/null || true
trap - EXIT
{
    echo "label=$LABEL tool=$TOOL workload=$WORKLOAD"
    echo "loadavg_start=$LOADAVG_START"
    echo "loadavg_end=$(cat /proc/loadavg)"
    echo "gateway=$(sha256sum "$GATEWAY" | cut -c1-16) bench=$(sha256sum "$BENCH" | cut -c1-16)"
    echo "sampler=$(cat "$OUT/sampler.json")"
    grep -E "User time|System time|Elapsed|Maximum resident" "$OUT/time.txt" | sed 's/^\s*/time: /'
} | tee "$OUT/run.txt"
