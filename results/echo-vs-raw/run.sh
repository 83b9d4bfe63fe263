#!/usr/bin/env bash
# Server CPU per echoed message: the gateway (WebSocket echo, config/prod.toml,
# 1 worker) against the raw io_uring TCP echo (engine/examples/raw_echo.rs),
# in one paired run (optionally also uWebSockets, UWS_BIN below). The servers
# run side by side pinned to SERVER_CPU; the
# single-threaded epoll client (client.c) is pinned to CLIENT_CPU and loads
# one server at a time, alternating raw, gw, raw, gw ... for ROUNDS rounds,
# each size in every round. Server CPU = utime+stime of the server process
# over the client's measured window (read by the client from /proc/PID/stat
# at the window's start and end) / messages echoed in the window; the sum of
# the threads' schedstat run time is reported beside it (ns resolution).
#
#   results/echo-vs-raw/run.sh              # 3 rounds, 100 B and 4 KiB, 1,000 conns
#   ROUNDS=5 SIZES="100" results/echo-vs-raw/run.sh
#   PROFILE=1 results/echo-vs-raw/run.sh    # then perf stat + perf record per server
#   GATEWAY_BIN=/path/to/gateway GATEWAY_REV=abc1234 ...  # a gateway built elsewhere (e.g. a clean
#                                           # worktree of HEAD); not rebuilt here
#   CARGO_TARGET_DIR=/tmp/t ...             # build (and run the binaries) there
#   RAW_ARGS="--buffers 1024" ...           # extra raw_echo arguments
#   RAW2_ARGS="--buffers 64" ...            # a second raw_echo ("raw2") in every
#                                           # round: raw, raw2, gw
#   GATEWAY2_BIN=/path/to/gateway GATEWAY2_REV=abc1234 ...  # a second gateway ("gw2",
#                                           # e.g. a baseline build) in every round:
#                                           # raw, gw2, gw; gw/x of its row = gw over gw2
#   GATEWAY2_CONFIG=old-prod.toml ...       # its config, if the build predates a config key
#   GATEWAY3_BIN=... GATEWAY3_REV=... GATEWAY3_CONFIG=...  # a third gateway ("gw3"), likewise
#   CYCLES=40 SLICE=1 ...                   # instead of ROUNDS: the client's alternating mode,
#                                           # every server loaded for SLICE s in turn, CYCLES
#                                           # times in random orders, per-cycle ratios with a
#                                           # 95 % interval of their median (see client.c);
#                                           # at most 4 servers (client.c's MAX_TARGETS)
#   UWS_BIN=/tmp/uws-build/uws_echo ...     # uWebSockets (uws_echo.cpp, epoll, 1 thread) as
#                                           # server "uws" in every round / cycle: raw, uws, gw
#                                           # (ratios gw/uws and uws/raw); built by build-uws.sh
#   UWS=1 ...                               # the same, building it first with build-uws.sh
#                                           # (BUILD=/tmp/uws-build unless set)
#
# Output: OUT (default results/echo-vs-raw/out) holds every client log,
# the servers' output, summary.txt (the table) and, with PROFILE=1, the perf
# data and reports.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROUNDS=${ROUNDS:-3}
SIZES=${SIZES:-"100 4096"}
CONNS=${CONNS:-1000}
WARMUP=${WARMUP:-5}
WINDOW=${WINDOW:-10}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PROFILE=${PROFILE:-0}
PROFILE_SIZES=${PROFILE_SIZES:-"100 4096"}
PROFILE_SECS=${PROFILE_SECS:-5}
OUT=${OUT:-results/echo-vs-raw/out}
QUIET_PCT=${QUIET_PCT:-10}
CONFIG=${CONFIG:-config/prod.toml}
GATEWAY_BIN=${GATEWAY_BIN:-}
RAW_ARGS=${RAW_ARGS:-}
RAW2_ARGS=${RAW2_ARGS:-}
GATEWAY2_BIN=${GATEWAY2_BIN:-}
GATEWAY2_REV=${GATEWAY2_REV:-$GATEWAY2_BIN}
GATEWAY2_CONFIG=${GATEWAY2_CONFIG:-$CONFIG}
GATEWAY3_BIN=${GATEWAY3_BIN:-}
GATEWAY3_REV=${GATEWAY3_REV:-$GATEWAY3_BIN}
GATEWAY3_CONFIG=${GATEWAY3_CONFIG:-$CONFIG}
UWS_BIN=${UWS_BIN:-}
if [ -z "$UWS_BIN" ] && [ "${UWS:-0}" = 1 ]; then
	results/echo-vs-raw/build-uws.sh
	UWS_BIN=${BUILD:-/tmp/uws-build}/uws_echo
fi
UWS_REV=""
if [ -n "$UWS_BIN" ]; then
	UWS_REV=$(cat "$(dirname "$UWS_BIN")/uws_echo.version" 2>/dev/null || echo "$UWS_BIN")
fi
if [ -n "${CYCLES:-}" ]; then
	n=$((2 + $([ -n "$RAW2_ARGS" ] && echo 1 || echo 0) + $([ -n "$GATEWAY2_BIN" ] && echo 1 || echo 0) +
		$([ -n "$GATEWAY3_BIN" ] && echo 1 || echo 0) + $([ -n "$UWS_BIN" ] && echo 1 || echo 0)))
	if [ "$n" -gt 4 ]; then
		echo "run.sh: $n servers, but the client's alternating mode loads at most 4" >&2
		exit 2
	fi
fi

mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-target}
if [ -z "$GATEWAY_BIN" ]; then
	cargo build --release -p gateway
	GATEWAY_BIN=$TARGET/release/gateway
	GATEWAY_REV="$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- engine gateway wsproto || echo '+uncommitted changes')"
else
	GATEWAY_REV=${GATEWAY_REV:-$GATEWAY_BIN}
fi
cargo build --release -p engine --example raw_echo
gcc -O2 -Wall -o "$OUT/client" results/echo-vs-raw/client.c -lm

GW_PID=""
GW2_PID=""
GW3_PID=""
RAW_PID=""
RAW2_PID=""
UWS_PID=""
cleanup() {
	if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null || true; fi
	if [ -n "$GW2_PID" ]; then kill "$GW2_PID" 2>/dev/null || true; fi
	if [ -n "$GW3_PID" ]; then kill "$GW3_PID" 2>/dev/null || true; fi
	if [ -n "$RAW_PID" ]; then kill "$RAW_PID" 2>/dev/null || true; fi
	if [ -n "$RAW2_PID" ]; then kill "$RAW2_PID" 2>/dev/null || true; fi
	if [ -n "$UWS_PID" ]; then kill "$UWS_PID" 2>/dev/null || true; fi
	wait 2>/dev/null || true
}
trap cleanup EXIT

# wait_line FILE REGEX: waits up to 10 s for a matching line, prints it.
wait_line() {
	for _ in $(seq 100); do
		if grep -m1 -E "$2" "$1" 2>/dev/null; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for /$2/ in $1" >&2
	return 1
}

# Busy share (%) of CPUs SERVER_CPU and CLIENT_CPU over 1 s, from /proc/stat.
cpu_busy() {
	local a b
	a=$(grep -E "^cpu($SERVER_CPU|$CLIENT_CPU) " /proc/stat)
	sleep 1
	b=$(grep -E "^cpu($SERVER_CPU|$CLIENT_CPU) " /proc/stat)
	printf '%s\n%s\n' "$a" "$b" | awk '
		{ idle = $5 + $6; tot = 0; for (i = 2; i <= NF; i++) tot += $i
		  if (NR <= 2) { i0[$1] = idle; t0[$1] = tot } else { di = idle - i0[$1]; dt = tot - t0[$1]; b = dt ? 100 * (dt - di) / dt : 0; if (b > m) m = b } }
		END { printf "%d\n", m }'
}

# Waits (up to 5 min) until neither benchmark CPU is more than QUIET_PCT % busy:
# only the idle servers should be there between runs.
wait_quiet() {
	local busy
	for _ in $(seq 300); do
		busy=$(cpu_busy)
		[ "$busy" -le "$QUIET_PCT" ] && return 0
		echo "  CPU $SERVER_CPU/$CLIENT_CPU ${busy}% busy before the run; waiting" >&2
	done
	echo "  WARNING: still ${busy}% busy; measuring anyway" >&2
}

echo "# $(date -u +%FT%TZ) kernel $(uname -r); gateway $GATEWAY_REV; raw: raw_echo ${RAW_ARGS:-(defaults)}${RAW2_ARGS:+; raw2: raw_echo $RAW2_ARGS}${UWS_BIN:+; uws: uws_echo ($UWS_REV)}${GATEWAY2_BIN:+; gw2: gateway $GATEWAY2_REV}${GATEWAY3_BIN:+; gw3: gateway $GATEWAY3_REV}" | tee "$OUT/summary.txt"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)" | tee -a "$OUT/summary.txt"

ADMIN_ARGS=()
if ss -Hltn 'sport = :9464' | grep -q .; then
	echo "127.0.0.1:9464 is taken: the gateway's admin listener goes to an ephemeral port" >&2
	ADMIN_ARGS=(--admin-listen 127.0.0.1:0)
fi
taskset -c "$SERVER_CPU" "$GATEWAY_BIN" --config "$CONFIG" \
	--listen 127.0.0.1:0 --workers 1 "${ADMIN_ARGS[@]}" >"$OUT/gateway.out" 2>"$OUT/gateway.err" &
GW_PID=$!
# shellcheck disable=SC2086 # RAW_ARGS: words
taskset -c "$SERVER_CPU" "$TARGET/release/examples/raw_echo" 127.0.0.1:0 $RAW_ARGS \
	>"$OUT/raw_echo.out" 2>"$OUT/raw_echo.err" &
RAW_PID=$!
SERVERS="raw gw"
if [ -n "$RAW2_ARGS" ]; then
	# shellcheck disable=SC2086 # RAW2_ARGS: words
	taskset -c "$SERVER_CPU" "$TARGET/release/examples/raw_echo" 127.0.0.1:0 $RAW2_ARGS \
		>"$OUT/raw_echo2.out" 2>"$OUT/raw_echo2.err" &
	RAW2_PID=$!
	RAW2_PORT=$(wait_line "$OUT/raw_echo2.out" '^listening on ' | sed -E 's/.*:([0-9]+)$/\1/')
	SERVERS="raw raw2 gw"
fi
if [ -n "$UWS_BIN" ]; then
	taskset -c "$SERVER_CPU" "$UWS_BIN" 0 >"$OUT/uws.out" 2>"$OUT/uws.err" &
	UWS_PID=$!
	UWS_PORT=$(wait_line "$OUT/uws.out" '^listening on ' | sed -E 's/.*:([0-9]+)$/\1/')
	SERVERS="${SERVERS% gw} uws gw"
fi
# start_gateway N BIN CONFIG: the N-th gateway ("gwN", run before gw in every
# round); sets GWN_PID and GWN_PORT.
start_gateway() {
	taskset -c "$SERVER_CPU" "$2" --config "$3" --listen 127.0.0.1:0 --workers 1 \
		--admin-listen 127.0.0.1:0 >"$OUT/gateway$1.out" 2>"$OUT/gateway$1.err" &
	printf -v "GW$1_PID" %s $!
	local port
	port=$(wait_line "$OUT/gateway$1.out" '^gateway listening on ' | sed -E 's/.*:([0-9]+) with.*/\1/')
	printf -v "GW$1_PORT" %s "$port"
	SERVERS="${SERVERS% gw} gw$1 gw"
}
if [ -n "$GATEWAY2_BIN" ]; then start_gateway 2 "$GATEWAY2_BIN" "$GATEWAY2_CONFIG"; fi
if [ -n "$GATEWAY3_BIN" ]; then start_gateway 3 "$GATEWAY3_BIN" "$GATEWAY3_CONFIG"; fi
GW_PORT=$(wait_line "$OUT/gateway.out" '^gateway listening on ' | sed -E 's/.*:([0-9]+) with.*/\1/')
RAW_PORT=$(wait_line "$OUT/raw_echo.out" '^listening on ' | sed -E 's/.*:([0-9]+)$/\1/')
ADMIN=$(grep -m1 '^admin listening on ' "$OUT/gateway.out" | awk '{print $4}' || true)
echo "# gateway pid $GW_PID port $GW_PORT (admin ${ADMIN:-none}); raw_echo pid $RAW_PID port $RAW_PORT${RAW2_PID:+; raw2 pid $RAW2_PID port $RAW2_PORT}${UWS_PID:+; uws pid $UWS_PID port $UWS_PORT}${GW2_PID:+; gw2 pid $GW2_PID port $GW2_PORT}${GW3_PID:+; gw3 pid $GW3_PID port $GW3_PORT}" | tee -a "$OUT/summary.txt"

# client_cmd SERVER SIZE WARMUP WINDOW: sets CMD to the pinned client command line.
client_cmd() {
	local mode port pid
	case $1 in
	gw) mode=ws port=$GW_PORT pid=$GW_PID ;;
	gw2) mode=ws port=$GW2_PORT pid=$GW2_PID ;;
	gw3) mode=ws port=$GW3_PORT pid=$GW3_PID ;;
	raw) mode=raw port=$RAW_PORT pid=$RAW_PID ;;
	raw2) mode=raw port=$RAW2_PORT pid=$RAW2_PID ;;
	uws) mode=ws port=$UWS_PORT pid=$UWS_PID ;;
	esac
	CMD=(taskset -c "$CLIENT_CPU" "$OUT/client" "$mode" 127.0.0.1 "$port" "$CONNS" "$2" "$3" "$4" "$pid")
}

# run_one SERVER SIZE TAG WARMUP WINDOW: one client run, log in OUT/TAG.log.
run_one() {
	client_cmd "$1" "$2" "$4" "$5"
	"${CMD[@]}" >"$OUT/$3.log" 2>&1
}

# field LOG KEY: a key=value of the client's result line.
field() { grep -m1 '^result ' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

if [ -n "${CYCLES:-}" ]; then
	for size in $SIZES; do
		wait_quiet
		specs=()
		for server in $SERVERS; do
			client_cmd "$server" "$size" 0 0
			specs+=("$server=${CMD[4]}:${CMD[6]}:${CMD[11]}")
		done
		echo "# size $size: $CONNS connections per server, $CYCLES cycles of ${SLICE:-1} s slices" | tee -a "$OUT/summary.txt"
		taskset -c "$CLIENT_CPU" "$OUT/client" alt 127.0.0.1 "$CONNS" "$size" "${SLICE:-1}" "$CYCLES" 0 \
			"${specs[@]}" | tee "$OUT/alt-$size.log" | grep -v '^connected' | tee -a "$OUT/summary.txt"
	done
	exit 0
fi

# One line per server and round; gw/x = the gateway's ns/msg over this
# server's in the same round (utime+stime, then schedstat); client_ns = the
# client's CPU per message; other% = CPU used by other processes during the
# window, in % of one CPU (see client.c).
fmt='%-5s %5s %-5s %9s %9s %8s %7s %7s %7s %7s %9s %6s\n'
# shellcheck disable=SC2059 # the format is a variable
printf "$fmt" size round srv ns/msg sched_ns msg/s p50_us p99_us gw/x gw/x_sch client_ns other% | tee -a "$OUT/summary.txt"
for round in $(seq "$ROUNDS"); do
	for size in $SIZES; do
		# A new order every round, so a drift over the round does not always
		# fall on the same server.
		for server in $(tr ' ' '\n' <<<"$SERVERS" | shuf); do
			wait_quiet
			run_one "$server" "$size" "$server-$size-r$round" "$WARMUP" "$WINDOW"
			sleep 1 # the server closes the 1,000 connections
		done
		g=$OUT/gw-$size-r$round.log
		for server in $SERVERS; do
			l=$OUT/$server-$size-r$round.log
			# shellcheck disable=SC2059
			printf "$fmt" "$size" "$round" "$server" "$(field "$l" ns_per_msg)" "$(field "$l" sched_ns_per_msg)" \
				"$(field "$l" rate)" "$(field "$l" p50_us)" "$(field "$l" p99_us)" \
				"$(awk -v a="$(field "$l" ns_per_msg)" -v b="$(field "$g" ns_per_msg)" 'BEGIN{printf "%.3f", b/a}')" \
				"$(awk -v a="$(field "$l" sched_ns_per_msg)" -v b="$(field "$g" sched_ns_per_msg)" 'BEGIN{printf "%.3f", b/a}')" \
				"$(field "$l" client_ns_per_msg)" "$(field "$l" other_cpu_pct)" |
				tee -a "$OUT/summary.txt"
		done
	done
done

# All rounds together: summed CPU over summed messages, per size and server,
# and the gateway's figure over each.
for size in $SIZES; do
	for server in $SERVERS; do
		cat "$OUT/$server-$size"-r*.log | awk -v s="$server" -v z="$size" '
			/^result / { for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] += kv[2] } }
			END { printf "%s %s %.0f %.0f\n", z, s, v["cpu_ns"] / v["msgs"], v["sched_ns"] / v["msgs"] }'
	done
done | awk '{ n[$1 " " $2] = $3; sn[$1 " " $2] = $4; if ($2 == "gw") { g[$1] = $3; gs[$1] = $4 } }
	END { for (k in n) { split(k, a, " "); printf "size %s, all rounds: %-4s %5d ns/msg (schedstat %5d); gateway / it: %.3f (schedstat %.3f)\n", a[1], a[2], n[k], sn[k], g[a[1]] / n[k], gs[a[1]] / sn[k] } }' |
	sort -k2,2n -k6,6 | tee -a "$OUT/summary.txt"
# Per-round ratios are paired (same round, minutes apart at most): their
# median and range say more than the pooled figure when the box drifts.
for size in $SIZES; do
	for server in $SERVERS; do
		[ "$server" = gw ] && continue
		for round in $(seq "$ROUNDS"); do
			awk -v a="$(field "$OUT/$server-$size-r$round.log" ns_per_msg)" \
				-v b="$(field "$OUT/gw-$size-r$round.log" ns_per_msg)" 'BEGIN{printf "%.4f\n", b/a}'
		done | sort -n | awk -v s="$server" -v z="$size" '{ v[NR] = $1 }
			END { m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
			      printf "size %s: gateway / %s per round: median %.3f, range %.3f-%.3f, %d rounds\n", z, s, m, v[1], v[NR], NR }'
	done
done | tee -a "$OUT/summary.txt"

if [ "$PROFILE" = 1 ]; then
	# Per server, separate runs (the measurements above ran without perf):
	# * perf stat of io_uring_enter calls, submitted SQEs and completions over
	#   a whole client run (1 s warm-up + PROFILE_SECS), divided by every
	#   message of that run (the 1,000 connections' set-up is included:
	#   a few SQEs each, under 1 % of a message's share);
	# * perf record (cpu-clock, call graphs) over PROFILE_SECS of the window.
	for psize in $PROFILE_SIZES; do
		for server in raw gw; do
			if [ "$server" = gw ]; then pid=$GW_PID; else pid=$RAW_PID; fi
			# (the profiles compare the gateway with the first raw_echo only)
			wait_quiet
			tag=profile-stat-$server-$psize
			client_cmd "$server" "$psize" 1 "$PROFILE_SECS"
			perf stat -x, -e syscalls:sys_enter_io_uring_enter,io_uring:io_uring_submit_req,io_uring:io_uring_complete \
				-p "$pid" -o "$OUT/$tag.perfstat" -- "${CMD[@]}" >"$OUT/$tag.log" 2>&1
			awk -F, -v m="$(field "$OUT/$tag.log" total_msgs)" -v s="$server $psize B" '
				$3 ~ /io_uring_enter/ { e = $1 } $3 ~ /submit_req/ { q = $1 } $3 ~ /io_uring_complete/ { c = $1 }
				END { printf "%s: %d messages (whole run); per message: %.3f io_uring_enter, %.3f SQEs, %.3f CQEs\n", s, m, e / m, q / m, c / m }' \
				"$OUT/$tag.perfstat" | tee -a "$OUT/summary.txt"

			wait_quiet
			tag=profile-record-$server-$psize
			run_one "$server" "$psize" "$tag" 2 $((PROFILE_SECS + 1)) &
			client=$!
			wait_line "$OUT/$tag.log" '^window start' >/dev/null
			perf record -q -e cpu-clock -g -p "$pid" -o "$OUT/$tag.perf.data" -- sleep "$PROFILE_SECS" 2>/dev/null
			wait "$client"
			perf report -i "$OUT/$tag.perf.data" --no-children -g none --sort dso,symbol --stdio 2>/dev/null |
				grep -v '^$' | head -80 >"$OUT/$tag.report.txt" || true
			perf report -i "$OUT/$tag.perf.data" --no-children -g none --sort dso --stdio 2>/dev/null |
				grep -E '^ +[0-9]' >"$OUT/$tag.dso.txt" || true
			# Every symbol as "percent<TAB>dso<TAB>symbol", for the comparison below.
			perf report -i "$OUT/$tag.perf.data" --no-children -g none --sort dso,sym --percent-limit 0 \
				--stdio 2>/dev/null | awk '/^ +[0-9.]+%/ { p = $1; sub(/%/, "", p); d = $2; $1 = $2 = $3 = ""; sub(/^ +/, ""); sub(/ +$/, ""); print p "\t" d "\t" $0 }' \
				>"$OUT/$tag.symbols.tsv"
			# Callers of the kernel paths, for the write-up.
			perf report -i "$OUT/$tag.perf.data" --no-children -g caller,0.5,callee --sort sym --percent-limit 2 \
				--stdio 2>/dev/null | head -400 >"$OUT/$tag.callgraph.txt" || true
		done

		# Where the gateway's extra CPU per message goes: each symbol's share of
		# its profile times the server's ns/msg in that profiling run, raw vs gw,
		# by category and by symbol (the largest differences).
		r=$OUT/profile-record-raw-$psize g=$OUT/profile-record-gw-$psize
		awk -F'\t' -v rn="$(field "$r.log" ns_per_msg)" -v gn="$(field "$g.log" ns_per_msg)" '
			function cat(d, s) {
				if (d !~ /kernel/) return (d ~ /libc/ ? "user: libc (malloc, memcpy, ...)" : d ~ /vdso/ ? "user: vdso (clock)" : "user: server code")
				if (s ~ /copy_(to|from)_(iter|user)|memcpy|memmove|rep_mov|clear_page|csum/) return "kernel: data copies"
				if (s ~ /hrtimer|read_tsc|ktime|timekeeping|clock|tick|timerqueue|timer/) return "kernel: timers, clock"
				if (s ~ /(^|\] )(__)?io_|io_uring|tctx|task_work|fget|fput|fdget/) return "kernel: io_uring"
				if (s ~ /tcp|ip_|ipv4|inet|skb|sock|sk_|loopback|netif|net_|dev_|napi|bbr|__kfree_skb|raw_v4|__ip|neigh|dst_|nf_|eth_|qdisc|softirq|rps/) return "kernel: TCP/IP, sockets"
				if (s ~ /kmem|slab|kmalloc|kfree|alloc|page|folio|memcg|mod_objcg|obj_cgroup|refill/) return "kernel: memory allocation"
				if (s ~ /sched|schedule|switch|idle|wake|futex|syscall|entry|irq|rcu|spin|mutex|lock/) return "kernel: syscall entry, scheduler, locks"
				return "kernel: other"
			}
			FNR == 1 { f++ }
			{ key = $2 "\t" $3; v = $1 * (f == 1 ? rn : gn) / 100; if (f == 1) R[key] += v; else G[key] += v; K[key] = 1
			  c = cat($2, $3); if (f == 1) RC[c] += v; else GC[c] += v; C[c] = 1 }
			END {
				printf "profile runs: raw %d ns/msg, gw %d ns/msg (perf attached)\n\n", rn, gn
				printf "%-42s %8s %8s %8s\n", "category", "raw ns", "gw ns", "gw-raw"
				for (c in C) printf "%-42s %8.0f %8.0f %+8.0f\n", c, RC[c], GC[c], GC[c] - RC[c] | "sort"
				close("sort")
				printf "\n%8s %8s %8s  %s\n", "raw ns", "gw ns", "gw-raw", "dso / symbol (|difference| >= 15 ns/msg)"
				for (k in K) { d = G[k] - R[k]; if (d >= 15 || d <= -15) { split(k, a, "\t"); printf "%8.0f %8.0f %+8.0f  %s %s\n", R[k], G[k], d, a[1], a[2] | "sort -k3,3gr" } }
			}' "$r.symbols.tsv" "$g.symbols.tsv" | tee "$OUT/profile-diff-$psize.txt"
	done
fi
