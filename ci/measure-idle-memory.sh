#!/usr/bin/env bash
# Measures the gateway's user-space memory per idle WebSocket connection.
#
#   ci/measure-idle-memory.sh [N] [CONFIG]     (default 15000, config/prod.toml)
#   WARM=1 ci/measure-idle-memory.sh ...       (cycle every receive buffer first)
#   GATEWAY_BIN=path ci/measure-idle-memory.sh  (another build, e.g. an earlier commit)
#
# Method: start the gateway (one worker, pinned to CPU 0) and read VmRSS and
# RssAnon from /proc/PID/status: a cold start, so whatever receive-buffer
# memory the connections touch is charged to them (WARM=1 instead cycles
# every provided buffer once first, putting the whole pool in the baseline).
# Then open N/2 connections that each complete the handshake and echo one
# 5-byte message, wait until they are idle, read again; open N/2 more, read
# again. Reported: growth / N from the start (what the issue's goal is
# stated in), the slope between N/2 and N (the true per-connection cost)
# and the fixed part (growth at N/2 minus slope x N/2: buffer pages and
# table growth touched once).
# Kernel socket memory is not user-space memory and is not in RSS; it is
# reported separately from /proc/net/sockstat for context.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-15000}"
CONFIG="${2:-config/prod.toml}"

cargo build --release --locked -p gateway --bins --example hold_idle >/dev/null 2>&1 ||
    cargo build --release --locked -p gateway --bins --example hold_idle
BIN="${GATEWAY_BIN:-target/release/gateway}"
HOLD=target/release/examples/hold_idle
tmp=$(mktemp -d)
cleanup() { kill $gw $hold 2>/dev/null || true; rm -rf "$tmp"; }
gw=""; hold=""
trap cleanup EXIT

taskset -c 0 "$BIN" --config "$CONFIG" --listen 127.0.0.1:0 --workers 1 >"$tmp/out" 2>"$tmp/err" &
gw=$!
for _ in $(seq 100); do grep -q listening "$tmp/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^gateway listening on \([^ ]*\) .*/\1/p' "$tmp/out")
[ -n "$addr" ] || { cat "$tmp/err"; echo "gateway did not start" >&2; exit 1; }

rss() { awk -v k="$1:" '$1==k {print $2}' "/proc/$gw/status"; }
buffers=$(awk -F= '/^recv_buffers/ {gsub(/ /,"",$2); print $2}' <("$BIN" check-config "$CONFIG"))
# Warm-up: cycle every provided buffer (each echo consumes one), then close.
[ "${WARM:-0}" = 1 ] && python3 - "$addr" "$buffers" <<'PY'
import socket, sys, base64, os
host, port = sys.argv[1].rsplit(":", 1); n = int(sys.argv[2])
s = socket.create_connection((host, int(port)))
s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf: buf += s.recv(4096)
frame = bytes([0x82, 0x84, 0, 0, 0, 0]) + b"warm"
for _ in range(n + 16):
    s.sendall(frame); got = b""
    while len(got) < 6: got += s.recv(64)
s.close()
PY
sleep 1
before_rss=$(rss VmRSS); before_anon=$(rss RssAnon)

half=$((N / 2))
hold_batch() { # $1 = name, $2 = fd holding its stdin open; opens $half idle connections held until its stdin closes
    mkfifo "$tmp/in_$1"
    "$HOLD" "$addr" "$half" <"$tmp/in_$1" >"$tmp/out_$1" &
    eval "pid_$1=$!"
    eval "exec $2>\"$tmp/in_$1\""
    for _ in $(seq 600); do grep -q holding "$tmp/out_$1" 2>/dev/null && break; sleep 0.1; done
    grep -q "holding $half" "$tmp/out_$1" || { echo "client failed: $(cat "$tmp/out_$1")" >&2; exit 1; }
    sleep 2
}
hold_batch a 4
mid_rss=$(rss VmRSS)
hold_batch b 5
after_rss=$(rss VmRSS); after_anon=$(rss RssAnon)
sock_mem_pages=$(awk '/^TCP:/ {for (i=1;i<=NF;i++) if ($i=="mem") print $(i+1)}' /proc/net/sockstat)
exec 4>&- 5>&-
hold="$pid_a $pid_b"
wait $pid_a $pid_b || true
N=$((2 * half))
per_conn=$(( (after_rss - before_rss) * 1024 / N ))
per_conn_anon=$(( (after_anon - before_anon) * 1024 / N ))
slope=$(( (after_rss - mid_rss) * 1024 / half ))
fixed=$(( (mid_rss - before_rss) - slope * half / 1024 ))
echo "connections:           $N ($half + $half)"
echo "gateway VmRSS before:  ${before_rss} KiB ($([ "${WARM:-0}" = 1 ] && echo "after warm-up" || echo "cold start"))"
echo "gateway VmRSS at N/2:  ${mid_rss} KiB"
echo "gateway VmRSS after:   ${after_rss} KiB"
echo "RssAnon before/after:  ${before_anon} / ${after_anon} KiB"
echo "per idle connection:   ${per_conn} B (VmRSS growth / N), ${per_conn_anon} B (RssAnon growth / N)"
echo "slope N/2 -> N:        ${slope} B per connection"
echo "fixed (touched once):  ${fixed} KiB"
echo "kernel TCP memory:     ${sock_mem_pages} pages in /proc/net/sockstat (both ends, not user space)"
