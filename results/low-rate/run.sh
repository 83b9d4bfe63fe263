#!/usr/bin/env bash
# Seed 000's load (4,000 connections x 2 msg/s, 100 B echo, open loop) against
# the raw io_uring echo (engine/examples/raw_echo.rs, the kernel-limit
# reference), this gateway and optionally a baseline gateway build and
# uWebSockets (results/echo-vs-raw/uws_echo.cpp, epoll, 1 thread), all
# resident and pinned to CPU 0, loaded in turn by results/echo-vs-raw/client.c
# (rate mode) pinned to CPU 1. Prints one line per run: server CPU per message
# (utime+stime over the window / messages), round trip p50/p90/p99, client CPU
# per message.
#
#   results/low-rate/run.sh                                   # raw vs gateway
#   BASE_BIN=/path/gateway BASE_CONF=old-prod.toml results/low-rate/run.sh
#   ROUNDS=5 SECS=10 results/low-rate/run.sh
#   CYCLES=30 SLICE=2 results/low-rate/run.sh                # the client's alternating mode:
#                                                           # servers loaded in turn, SLICE s each
#                                                           # (at most 4 servers)
#   UWS_BIN=/tmp/uws-build/uws_echo results/low-rate/run.sh  # uWebSockets as server "uws": raw, uws,
#                                                           # gw[, base] (ratios gw/uws, uws/raw)
#   UWS=1 results/low-rate/run.sh                            # the same, built first by
#                                                           # results/echo-vs-raw/build-uws.sh
#                                                           # (BUILD=/tmp/uws-build unless set)
#
# Needs gcc; builds the release gateway and raw_echo (CARGO_TARGET_DIR honoured).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ROUNDS=${ROUNDS:-5} SECS=${SECS:-10} CONNS=${CONNS:-4000} RATE=${RATE:-2} SIZE=${SIZE:-100}
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
UWS_BIN=${UWS_BIN:-}
if [ -z "$UWS_BIN" ] && [ "${UWS:-0}" = 1 ]; then
	"$ROOT/results/echo-vs-raw/build-uws.sh"
	UWS_BIN=${BUILD:-/tmp/uws-build}/uws_echo
fi
OUT=$(mktemp -d)
trap 'kill $(cat "$OUT"/*.pid 2>/dev/null) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$OUT"' EXIT

(cd "$ROOT" && cargo build --release --locked -q -p gateway --bin gateway && cargo build --release --locked -q -p engine --example raw_echo)
gcc -O2 -o "$OUT/client" "$ROOT/results/echo-vs-raw/client.c" -lm
ulimit -n 20000

start() { # name command...
	local name=$1
	shift
	taskset -c 0 "$@" >"$OUT/$name.out" 2>&1 &
	echo $! >"$OUT/$name.pid"
}
start raw "$TARGET/release/examples/raw_echo" 127.0.0.1:0
start gw "$TARGET/release/gateway" --config "$ROOT/config/prod.toml" --listen 127.0.0.1:0 --workers 1 --admin-listen 127.0.0.1:0
SERVERS="raw gw"
if [ -n "$UWS_BIN" ]; then
	start uws "$UWS_BIN" 0
	SERVERS="raw uws gw"
fi
if [ -n "${BASE_BIN:-}" ]; then
	start base "$BASE_BIN" --config "${BASE_CONF:-$ROOT/config/prod.toml}" --listen 127.0.0.1:0 --workers 1 --admin-listen 127.0.0.1:0
	SERVERS="$SERVERS base"
fi
sleep 1
port() { grep -oP '(listening on \S+:)\K[0-9]+' "$OUT/$1.out" | head -1; }
echo "# $(date -u +%FT%TZ) $(uname -r) gateway $(git -C "$ROOT" rev-parse --short HEAD)${UWS_BIN:+; uws: uws_echo ($(cat "$(dirname "$UWS_BIN")/uws_echo.version" 2>/dev/null || echo "$UWS_BIN"))}; $CONNS conns x $RATE msg/s, $SIZE B, ${SECS}s windows"
if [ -n "${CYCLES:-}" ]; then
	specs=()
	for s in $SERVERS; do
		mode=ws
		[ "$s" = raw ] && mode=raw
		specs+=("$s=$mode:$(port "$s"):$(cat "$OUT/$s.pid")")
	done
	taskset -c 1 "$OUT/client" alt 127.0.0.1 "$CONNS" "$SIZE" "${SLICE:-2}" "$CYCLES" "$RATE" "${specs[@]}" | grep -v '^connected'
	exit 0
fi
for r in $(seq 1 "$ROUNDS"); do
	for s in $SERVERS; do
		mode=ws
		[ "$s" = raw ] && mode=raw
		line=$(taskset -c 1 "$OUT/client" "$mode" 127.0.0.1 "$(port "$s")" "$CONNS" "$SIZE" 3 "$SECS" "$(cat "$OUT/$s.pid")" "$RATE" | grep '^result')
		echo "round $r $s $(grep -oP '\b(rate|ns_per_msg|p50_us|p90_us|p99_us|client_ns_per_msg|skipped)=\S+' <<<"$line" | tr '\n' ' ')"
		sleep 1
	done
done
