#!/usr/bin/env bash
# Measures the gateway's user-space memory per idle WebSocket connection.
#
#   ci/measure-idle-memory.sh [N] [CONFIG]     (default 15000, config/prod.toml)
#
# Method: start the gateway (one worker, pinned to CPU 0), warm its provided
# buffer ring by cycling every buffer once (so the fixed per-worker buffer
# memory is in the baseline, not charged to connections), read VmRSS and
# RssAnon from /proc/PID/status, open N connections that each complete the
# handshake and echo one 5-byte message, wait until they are idle, read again.
# (after - before) / N is the memory that grows with idle connections.
# Kernel socket memory is not user-space memory and is not in RSS; it is
# reported separately from /proc/net/sockstat for context.
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-15000}"
CONFIG="${2:-config/prod.toml}"

cargo build --release --locked -p gateway --bins --example hold_idle >/dev/null 2>&1 ||
    cargo build --release --locked -p gateway --bins --example hold_idle
BIN=target/release/gateway
HOLD=target/release/examples/hold_idle
tmp=$(mktemp -d)
cleanup() { kill "$gw" "$hold" 2>/dev/null || true; rm -rf "$tmp"; }
gw=""; hold=""
trap cleanup EXIT

taskset -c 0 "$BIN" --config "$CONFIG" --listen 127.0.0.1:0 --workers 1 >"$tmp/out" 2>"$tmp/err" &
gw=$!
for _ in $(seq 100); do grep -q listening "$tmp/out" 2>/dev/null && break; sleep 0.1; done
addr=$(sed -n 's/^gateway listening on \([^ ]*\) .*/\1/p' "$tmp/out")
[ -n "$addr" ] || { cat "$tmp/err"; echo "gateway did not start" >&2; exit 1; }

rss() { awk -v k="$1:" '$1==k {print $2}' "/proc/$gw/status"; }
buffers=$(awk -F= '/^recv_buffers/ {gsub(/ /,"",$2); print $2}' <(target/release/gateway check-config "$CONFIG"))
# Warm-up: cycle every provided buffer (each echo consumes one), then close.
python3 - "$addr" "$buffers" <<'PY'
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

mkfifo "$tmp/hold_in"
"$HOLD" "$addr" "$N" <"$tmp/hold_in" >"$tmp/hold_out" &
hold=$!
exec 3>"$tmp/hold_in"
for _ in $(seq 600); do grep -q holding "$tmp/hold_out" 2>/dev/null && break; kill -0 "$hold" || break; sleep 0.1; done
grep -q "holding $N" "$tmp/hold_out" || { echo "client failed: $(cat "$tmp/hold_out")" >&2; exit 1; }
sleep 2
after_rss=$(rss VmRSS); after_anon=$(rss RssAnon)
sock_mem_pages=$(awk '/^TCP:/ {for (i=1;i<=NF;i++) if ($i=="mem") print $(i+1)}' /proc/net/sockstat)
exec 3>&-
wait "$hold" || true

per_conn=$(( (after_rss - before_rss) * 1024 / N ))
per_conn_anon=$(( (after_anon - before_anon) * 1024 / N ))
echo "connections:           $N"
echo "gateway VmRSS before:  ${before_rss} KiB (after warm-up)"
echo "gateway VmRSS after:   ${after_rss} KiB"
echo "RssAnon before/after:  ${before_anon} / ${after_anon} KiB"
echo "per idle connection:   ${per_conn} B (VmRSS delta / N), ${per_conn_anon} B (RssAnon delta / N)"
echo "kernel TCP memory:     ${sock_mem_pages} pages in /proc/net/sockstat (both ends, not user space)"
