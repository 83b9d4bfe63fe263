#!/usr/bin/env bash
# A million WebSocket connections on this box: the gateway (52 rings, direct
# descriptors) and the bench client (2 processes x 26 rings) on the same
# 2 cores, over loopback. Samples memory and CPU every 5 s into samples.tsv.
#
#   results/million/run.sh [OUT_DIR] [--set key=value ...]   (root: kernel settings)
#
# Extra arguments go to the bench client (e.g. --set load.connect_rate=12000).
#
# Applies kernel-tuning/tune.sh --profile high-conn first.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-/tmp/million-$(date +%s)}"
shift || true
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"
kernel-tuning/tune.sh --profile high-conn apply > "$OUT/tune.txt" 2>&1 || true
cargo build --release --locked -p gateway -p bench-client > /dev/null 2>&1
sync; echo 3 > /proc/sys/vm/drop_caches || true

meminfo() { awk -v k="$1:" '$1==k {print $2}' /proc/meminfo; }
slab() { awk -v n="$1" '$1==n {printf "%d", $3*$4/1024}' /proc/slabinfo; }  # KiB
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
conns() { curl -s http://127.0.0.1:9464/metrics | awk '/^gateway_connections_active/ {s+=$2} END {print s+0}'; }
SLABS="TCP sock_inode_cache dentry filp nf_conntrack kmalloc-64 kmalloc-192 kmalloc-256 kmalloc-512 kmalloc-1k skbuff_head_cache"
snapshot() { # label
    printf '%s' "$1" > "$OUT/snap-$1.txt"
    { echo "MemAvailable $(meminfo MemAvailable)"; echo "Slab $(meminfo Slab)"; echo "SUnreclaim $(meminfo SUnreclaim)";
      for s in $SLABS; do echo "$s $(slab "$s")"; done; grep -E "^(TCP|sockets):" /proc/net/sockstat; } > "$OUT/snap-$1.txt"
}

snapshot before
target/release/gateway --config results/million/gateway.toml > "$OUT/gateway.log" 2>&1 &
GW=$!
trap 'kill $GW 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf http://127.0.0.1:9464/metrics > /dev/null && break; sleep 0.2; done
gw_rss0=$(rss $GW)
echo "gateway started: RSS ${gw_rss0} KiB" | tee "$OUT/summary.txt"

target/release/bench-client -s results/million/bench.toml --out "$OUT/bench" "$@" > "$OUT/bench.txt" 2>&1 &
BENCH=$!
printf 't\tconns\tgw_rss_kib\tgw_cpu_ticks\tmem_avail_kib\tslab_kib\n' > "$OUT/samples.tsv"
t0=$(date +%s)
peak=0
while kill -0 $BENCH 2>/dev/null; do
    c=$(conns)
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' $(( $(date +%s) - t0 )) "$c" "$(rss $GW)" "$(ticks $GW)" "$(meminfo MemAvailable)" "$(meminfo Slab)" >> "$OUT/samples.tsv"
    if [ "${c:-0}" -gt "$peak" ]; then peak=$c; fi
    if [ "${c:-0}" -ge 999000 ] && [ ! -f "$OUT/snap-held.txt" ]; then
        sleep 10  # settle, then the held snapshot and an idle-CPU window
        snapshot held
        gw_rss_held=$(rss $GW); bench_rss=0
        for p in $(pgrep -f "bench-client"); do bench_rss=$((bench_rss + $(rss $p))); done
        curl -s http://127.0.0.1:9464/metrics > "$OUT/metrics-held-a.txt" || true
        a=$(ticks $GW); sleep 20; b=$(ticks $GW)
        curl -s http://127.0.0.1:9464/metrics > "$OUT/metrics-held-b.txt" || true
        echo "held: gateway RSS ${gw_rss_held} KiB, bench RSS (all processes) ${bench_rss} KiB, gateway CPU over 20 s idle hold: $((b - a)) ticks ($(( (b - a) * 100 / 2000 )) % of a core)" | tee -a "$OUT/summary.txt"
    fi
    sleep 5
done
wait $BENCH || echo "bench exit status $?" | tee -a "$OUT/summary.txt"
echo "bench finished at t=$(( $(date +%s) - t0 )) s (connect, hold, then closing every connection)" | tee -a "$OUT/summary.txt"
curl -s http://127.0.0.1:9464/metrics > "$OUT/metrics-end.txt" || true
echo "peak connections (gateway): $peak" | tee -a "$OUT/summary.txt"
grep "closing at the end" "$OUT/bench.txt" | tee -a "$OUT/summary.txt" || true
for m in gateway_close_frames_received_total gateway_close_frames_sent_total gateway_connections_closed_total gateway_connections_active; do
    echo "$m $(awk -v m="$m" 'index($1, m) == 1 {s += $2} END {print s + 0}' "$OUT/metrics-end.txt")"
done | tee -a "$OUT/summary.txt"
stop0=$(date +%s.%N)
kill -TERM $GW; wait $GW || true
echo "gateway exited $(echo "$(date +%s.%N) - $stop0" | bc) s after SIGTERM" | tee -a "$OUT/summary.txt"
tail -3 "$OUT/gateway.log" >> "$OUT/summary.txt"
echo "output in $OUT"
