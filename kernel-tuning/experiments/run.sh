#!/usr/bin/env bash
# The measurements behind the table in kernel-tuning/README.md, one per knob.
#
#   kernel-tuning/experiments/run.sh EXPERIMENT [RUNS]
#
#   backlog     connect storm (10,000 clients) vs somaxconn / tcp_max_syn_backlog / syncookies
#   netdev      the same storm with net.core.netdev_max_backlog 1000 vs 16384 (HOST-WIDE:
#               raised for the run, restored on exit)
#   ports       concurrent connections from one source address vs ip_local_port_range,
#               destination ports, source addresses
#   churn       connect+close churn from one address: tcp_tw_reuse 0/2/1 over loopback
#   churn-veth  the same over a veth pair between two private namespaces (not loopback)
#   finwait     orphaned FIN_WAIT_2 sockets after the gateway's idle close vs tcp_fin_timeout
#   timewait    TIME_WAIT lifetime with tcp_fin_timeout = 15
#   idle        kernel buffer memory of idle connections vs tcp_rmem/tcp_wmem
#   unread      kernel buffer memory of connections with an unread message (tcp_mem sizing)
#   tput        echo throughput of 1 MiB messages vs tcp_rmem/tcp_wmem (loopback)
#   sockbuf     which sysctl sizes a new socket (rmem_default vs tcp_rmem[1]; rmem_max cap)
#   nofile      the gateway at RLIMIT_NOFILE (20,000 here)
#   memlock     smallest RLIMIT_MEMLOCK the gateway starts with, by worker count
#   storm-bc    19,000 clients at once from bench-client (2 processes) vs somaxconn
#   tput-bc     bench-client echo throughput (100 connections, 64 KiB) vs tcp_rmem/tcp_wmem
#   all         everything above
#
# Root, python3, iproute2 (ip, ss), util-linux (unshare, nsenter, setpriv, prlimit) and a
# built gateway (cargo build --release -p gateway --bins --examples; GATEWAY_BIN and
# HOLD_IDLE_BIN override the paths). Per-namespace knobs are only ever changed inside
# fresh network namespaces (unshare -n), so the host keeps its values; the one host-wide
# knob (netdev) is restored by a trap. Timings vary with what else runs on the machine:
# kernel counters (overflows, retransmits, drops) are the robust part of each result.
set -euo pipefail
export LC_ALL=C
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
GW="${GATEWAY_BIN:-$ROOT/target/release/gateway}"
HOLD="${HOLD_IDLE_BIN:-$ROOT/target/release/examples/hold_idle}"
BC="${BENCH_CLIENT_BIN:-$ROOT/target/release/bench-client}"
RUNS="${2:-3}"
WORK="$(mktemp -d)"
GW_PID=""
cleanup() {
  if [ -n "$GW_PID" ]; then kill "$GW_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

start_gw() { # start_gw CONFIG-TEXT [PREFIX-COMMAND...]: sets GW_PID, GW_ADDR
  local cfg="$WORK/gw-$RANDOM.toml" log="$WORK/gw-$RANDOM.log"
  printf '%s\n' "$1" >"$cfg"; shift
  "$@" "$GW" --config "$cfg" >"$log" 2>&1 &
  GW_PID=$!
  for _ in $(seq 100); do grep -q listening "$log" && break; sleep 0.05; done
  GW_ADDR="$(sed -n 's/^gateway listening on \([^ ]*\) .*/\1/p' "$log")"
  GW_LOG="$log"
  [ -n "$GW_ADDR" ] || { cat "$log" >&2; echo "gateway did not start" >&2; exit 1; }
}
stop_gw() { kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; GW_PID=""; }
in_netns() { unshare -n -- "$0" __inside "$@"; }
summ_storm() {
  python3 -c 'import json,sys
d=json.load(sys.stdin); k=d["kernel"]
print("upgraded %d/%d, unfinished %d, last done %.2f s, p50 %s ms, p99 %s ms, max %s ms, >1 s: %d, ListenOverflows %d, SyncookiesSent %d, ReqQFullDrop %d, SYN retransmits %d, softnet drops (host-wide) %d" % (
  d["upgraded"], d["n"], d["unfinished"], d["last_done_s"], d["done_ms"]["p50"], d["done_ms"]["p99"], d["done_ms"]["max"], d["over_1s"],
  k["TcpExtListenOverflows"], k["TcpExtSyncookiesSent"], k["TcpExtTCPReqQFullDrop"], k["TcpExtTCPSynRetrans"], d["softnet_drops_hostwide"]))'
}

# ------------------------------------------------------------ experiments (inside a netns)
x_storm() { # somaxconn syn_backlog syncookies N
  sysctl -q -w net.core.somaxconn="$1" net.ipv4.tcp_max_syn_backlog="$2" net.ipv4.tcp_syncookies="$3"
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1\nbacklog = 65535'
  python3 "$HERE/storm.py" "$GW_ADDR" "$4" --timeout 20 | summ_storm
  stop_gw
}
x_ports() { # RANGE|"" ports.py-args...
  sysctl -q -w net.core.somaxconn=65535
  [ -z "$1" ] || sysctl -q -w net.ipv4.ip_local_port_range="$1"
  shift
  python3 "$HERE/ports.py" "$@"
}
x_churn() { # tw_reuse seconds
  sysctl -q -w net.ipv4.tcp_tw_reuse="$1"
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1'
  python3 "$HERE/churn.py" "$GW_ADDR" "$2"
  stop_gw
}
x_finwait() { # fin_timeout N
  sysctl -q -w net.ipv4.tcp_fin_timeout="$1"
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1\n[timeouts]\nidle_ms = 2000\nping_interval_ms = 0\nclose_ms = 1000'
  local port="${GW_ADDR##*:}" line t t0 hold
  mkfifo "$WORK/hold.in"
  "$HOLD" "$GW_ADDR" "$2" <"$WORK/hold.in" >"$WORK/hold.out" & hold=$!
  exec 3>"$WORK/hold.in"
  for _ in $(seq 600); do grep -q holding "$WORK/hold.out" && break; sleep 0.1; done
  t0=$SECONDS; line="tcp_fin_timeout=$1, $2 idle connections closed by the gateway (idle_ms 2000, close_ms 1000), client never closes; gateway-side FIN_WAIT_2 at:"
  for t in 0 5 10 15 20 30 45 60 70 80; do
    while [ $((SECONDS - t0)) -lt "$t" ]; do sleep 0.2; done
    line+=" ${t}s=$(ss -Htan state fin-wait-2 "( sport = :$port )" | wc -l)"
  done
  echo "$line"
  exec 3>&-; wait "$hold" || true
  rm -f "$WORK/hold.in"
  stop_gw
}
x_timewait() {
  sysctl -q -w net.ipv4.tcp_fin_timeout=15
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1'
  python3 "$HERE/churn.py" "$GW_ADDR" 0.2 >/dev/null
  local t0=$SECONDS line="tcp_fin_timeout=15, client closes first; TIME_WAIT sockets at:" t
  for t in 0 15 30 45 55 65; do
    while [ $((SECONDS - t0)) -lt "$t" ]; do sleep 0.2; done
    line+=" ${t}s=$(ss -Htan state time-wait | wc -l)"
  done
  echo "$line"
  stop_gw
}
x_idle() { # rmem wmem N
  sysctl -q -w net.ipv4.tcp_rmem="$1" net.ipv4.tcp_wmem="$2"
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1'
  local r0 r1 hold
  r0="$(awk '$1 == "VmRSS:" {print $2}' "/proc/$GW_PID/status")"
  mkfifo "$WORK/hold.in"
  "$HOLD" "$GW_ADDR" "$3" <"$WORK/hold.in" >"$WORK/hold.out" & hold=$!
  exec 3>"$WORK/hold.in"
  for _ in $(seq 600); do grep -q holding "$WORK/hold.out" && break; sleep 0.1; done
  sleep 2
  r1="$(awk '$1 == "VmRSS:" {print $2}' "/proc/$GW_PID/status")"
  printf 'tcp_rmem=[%s] tcp_wmem=[%s]: ' "$1" "$2"
  ss -Htmn state established | python3 -c 'import re, sys
tot = {}; n = 0
for m in re.finditer(r"skmem:\(([^)]*)\)", sys.stdin.read()):
    n += 1
    for kv in m.group(1).split(","):
        k = re.match(r"[a-z]+", kv).group(0); tot[k] = tot.get(k, 0) + int(kv[len(k):])
alloc = sum(tot.get(k, 0) for k in ("r", "t", "f", "w", "o", "bl"))
print("%d sockets, buffer memory allocated %d B in total; limits per socket: rcvbuf %d KiB, sndbuf %d KiB" % (
    n, alloc, tot.get("rb", 0) / n / 1024, tot.get("tb", 0) / n / 1024), end="")'
  echo "; gateway VmRSS +$(( (r1 - r0) * 1024 / $3 )) B/connection"
  exec 3>&-; wait "$hold" || true
  rm -f "$WORK/hold.in"
  stop_gw
}
x_unread() { # N size
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1'
  python3 "$HERE/unread.py" "$GW_ADDR" "$1" "$2"
  stop_gw
}
x_tput() { # rmem wmem size seconds
  sysctl -q -w net.ipv4.tcp_rmem="$1" net.ipv4.tcp_wmem="$2"
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1\npin_workers = false' taskset -c 0
  local c0 c1 t0 t1 out
  c0="$(awk '{print $14 + $15}' "/proc/$GW_PID/stat")"; t0="$(date +%s%N)"
  out="$(taskset -c 1 python3 "$HERE/echo_tput.py" "$GW_ADDR" "$4" "$3" --inflight 2)"
  c1="$(awk '{print $14 + $15}' "/proc/$GW_PID/stat")"; t1="$(date +%s%N)"
  echo "tcp_rmem=[$1] tcp_wmem=[$2]: $out gateway CPU $(( (c1 - c0) * 1000000000 / (t1 - t0) ))% (of one core, $(getconf CLK_TCK) ticks/s)"
  stop_gw
}
x_nofile() { # max_connections (0 = unset)
  local cfg=$'[server]\nlisten = "127.0.0.1:0"\nworkers = 1' p1 p2
  [ "$1" = 0 ] || cfg+=$'\n'"max_connections = $1"
  start_gw "$cfg"
  echo "gateway: $(grep 'Max open files' "/proc/$GW_PID/limits" | tr -s ' '), max_connections ${1/#0/default}"
  mkfifo "$WORK/n1.in" "$WORK/n2.in"
  python3 "$HERE/storm.py" "$GW_ADDR" 10500 --timeout 15 --hold <"$WORK/n1.in" >"$WORK/n1.out" & p1=$!
  exec 4>"$WORK/n1.in"
  for _ in $(seq 100); do [ -s "$WORK/n1.out" ] && break; sleep 0.2; done
  python3 "$HERE/storm.py" "$GW_ADDR" 10500 --timeout 15 --hold <"$WORK/n2.in" >"$WORK/n2.out" & p2=$!
  exec 5>"$WORK/n2.in"
  for _ in $(seq 100); do [ -s "$WORK/n2.out" ] && break; sleep 0.2; done
  echo "2 x 10,500 clients: upgraded $(python3 -c 'import json,sys; a=[json.load(open(f)) for f in sys.argv[1:]]; print("%d (%s), answered with an error: %s, no answer within 15 s: %d" % (sum(x["upgraded"] for x in a), " + ".join(str(x["upgraded"]) for x in a), {k: v for x in a for k, v in x["errors"].items()}, sum(x["unfinished"] for x in a)))' "$WORK/n1.out" "$WORK/n2.out")"
  echo "gateway descriptors in use: $(find "/proc/$GW_PID/fd" -mindepth 1 | wc -l); log: $(grep -c 'Too many open files' "$GW_LOG") 'accept failed: Too many open files' warnings"
  exec 4>&- 5>&-; wait "$p1" "$p2" || true
  rm -f "$WORK/n1.in" "$WORK/n2.in"
  stop_gw
}

netstat_keys() { # the given TcpExt counters of this network namespace
  awk -v want="$*" 'BEGIN {n = split(want, w, " ")}
    /^TcpExt:/ {if (!h) {split($0, k); h = 1} else {for (i = 2; i <= NF; i++) for (j = 1; j <= n; j++) if (k[i] == w[j]) printf "%s %s ", k[i], $i}}' /proc/net/netstat
}
x_storm_bc() { # somaxconn
  sysctl -q -w net.core.somaxconn="$1"
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1\nbacklog = 65535'
  cat >"$WORK/storm.toml" <<TOML
name = "storm"
description = "19,000 clients at once (connect_rate 0), 2 processes, held 2 s"
[target]
urls = ["ws://$GW_ADDR/echo"]
[load]
mode = "connect-only"
connections = 19000
connect_rate = 0
warmup_secs = 0
duration_secs = 2
cooldown_secs = 0
handshake_timeout_ms = 15000
[client]
workers = 2
max_conns_per_process = 15000
source_cidr = "127.0.1.0/24"
recv_buffers = 1024
recv_buffer_size = 4096
[thresholds]
min_success_rate = 0.0
TOML
  local before
  before="$(netstat_keys ListenOverflows TCPSynRetrans)"
  printf 'somaxconn %s: ' "$1"
  "$BC" --scenario "$WORK/storm.toml" --quiet --out "$WORK/bc" 2>&1 | grep -E '^(attempted|handshake latency)' | tr -s ' \n' '  '
  echo "| before: $before after: $(netstat_keys ListenOverflows TCPSynRetrans)"
  stop_gw
}
x_tput_bc() { # rmem wmem
  sysctl -q -w net.ipv4.tcp_rmem="$1" net.ipv4.tcp_wmem="$2"
  start_gw $'[server]\nlisten = "127.0.0.1:0"\nworkers = 1'
  cat >"$WORK/tput.toml" <<TOML
name = "tput"
description = "echo, 100 connections, 64 KiB binary messages, 2 in flight"
[target]
urls = ["ws://$GW_ADDR/echo"]
[load]
mode = "echo"
connections = 100
connect_rate = 0
warmup_secs = 1
duration_secs = 5
cooldown_secs = 0.5
message_size = 65536
message_kind = "binary"
in_flight = 2
message_timeout_ms = 5000
[client]
workers = 1
[thresholds]
min_success_rate = 0.0
TOML
  printf 'tcp_rmem=[%s] tcp_wmem=[%s]: ' "$1" "$2"
  "$BC" --scenario "$WORK/tput.toml" --quiet --out "$WORK/bc" --set "target.pid=$GW_PID" 2>&1 | grep -E '^throughput|server CPU' | tr -s ' \n' '  '
  echo
  stop_gw
}

# ------------------------------------------------------------ drivers (on the host)
run_backlog() {
  local cfg r
  for cfg in "128 2048 1" "4096 2048 1" "65535 65535 1" "65535 128 0" "65535 65535 0" "128 2048 0"; do
    for r in $(seq "$RUNS"); do
      # shellcheck disable=SC2086
      printf 'somaxconn %s, tcp_max_syn_backlog %s, tcp_syncookies %s (run %d): ' $cfg "$r"
      # shellcheck disable=SC2086
      in_netns x_storm $cfg 10000
    done
  done
}
run_netdev() {
  local orig nb cfg r
  orig="$(sysctl -n net.core.netdev_max_backlog)"
  # shellcheck disable=SC2064
  trap "sysctl -q -w net.core.netdev_max_backlog=$orig; cleanup" EXIT
  for nb in 1000 16384; do
    sysctl -q -w net.core.netdev_max_backlog="$nb"
    for cfg in "128 2048 1" "4096 2048 1"; do
      for r in $(seq "$RUNS"); do
        # shellcheck disable=SC2086
        printf 'netdev_max_backlog %s, somaxconn %s, tcp_max_syn_backlog %s, tcp_syncookies %s (run %d): ' "$nb" $cfg "$r"
        # shellcheck disable=SC2086
        in_netns x_storm $cfg 10000
      done
    done
  done
  sysctl -q -w net.core.netdev_max_backlog="$orig"
  echo "host net.core.netdev_max_backlog restored to $(sysctl -n net.core.netdev_max_backlog)"
}
run_ports() {
  in_netns x_ports ""
  in_netns x_ports "10000 65535"
  in_netns x_ports "" --dst-ports 2
  in_netns x_ports "" --src-ips 2
  in_netns x_ports "10000 65535" --dst-ports 2 --max 100000
}
run_churn() { local r; for r in 0 2 1; do printf 'loopback, tcp_tw_reuse %s: ' "$r"; in_netns x_churn "$r" 20; done; }
run_churn_veth() {
  # Two private network namespaces joined by a veth pair: traffic that is not loopback.
  local srv cli r
  unshare -n sleep 100000 & srv=$!
  unshare -n sleep 100000 & cli=$!
  sleep 0.3
  ip link add kt-v0 netns "$srv" type veth peer name kt-v1 netns "$cli"
  nsenter -t "$srv" -n sh -c 'ip addr add 10.77.0.1/24 dev kt-v0 && ip link set kt-v0 up && ip link set lo up'
  nsenter -t "$cli" -n sh -c 'ip addr add 10.77.0.2/24 dev kt-v1 && ip link set kt-v1 up && ip link set lo up'
  start_gw $'[server]\nlisten = "10.77.0.1:9100"\nworkers = 1' nsenter -t "$srv" -n
  for r in 0 2 1; do
    nsenter -t "$cli" -n sysctl -q -w net.ipv4.tcp_tw_reuse="$r"
    printf 'veth, tcp_tw_reuse %s: ' "$r"
    nsenter -t "$cli" -n python3 "$HERE/churn.py" "$GW_ADDR" 20
    [ "$r" = 1 ] || { echo "  (waiting 62 s for TIME_WAIT to expire)"; sleep 62; }
  done
  stop_gw
  kill "$srv" "$cli"; wait "$srv" "$cli" 2>/dev/null || true
}
run_finwait() { local f; for f in 60 15; do in_netns x_finwait "$f" 5000; done; }
run_timewait() { in_netns x_timewait; }
run_idle() {
  local c
  for c in "4096 131072 33554432|4096 16384 4194304" "4096 87380 16777216|4096 65536 16777216" \
           "4096 4096 4096|4096 4096 4096" "4096 1048576 33554432|4096 1048576 16777216"; do
    in_netns x_idle "${c%%|*}" "${c#*|}" 9000
  done
}
run_unread() { local s; for s in 1024 65536; do in_netns x_unread 2000 "$s"; done; }
run_tput() {
  local r c
  for r in $(seq "$RUNS"); do
    for c in "4096 131072 6291456|4096 16384 4194304" "4096 131072 16777216|4096 65536 16777216"; do
      in_netns x_tput "${c%%|*}" "${c#*|}" 1048576 8
    done
  done
}
run_sockbuf() { in_netns python3 "$HERE/sockbuf.py"; }
run_storm_bc() { local s r; for s in 128 4096 65535; do for r in $(seq "$RUNS"); do in_netns x_storm_bc "$s"; done; done; }
run_tput_bc() {
  local r c
  for r in $(seq "$RUNS"); do
    for c in "4096 131072 6291456|4096 16384 4194304" "4096 131072 16777216|4096 65536 16777216"; do
      in_netns x_tput_bc "${c%%|*}" "${c#*|}"
    done
  done
}
run_nofile() { in_netns x_nofile 0; in_netns x_nofile 19900; }
run_memlock() {
  # Unprivileged (uid 65534, no capabilities) like the systemd unit; bisect the smallest limit.
  local w lo hi mid err cfg="$WORK/memlock.toml"
  printf '[server]\nlisten = "127.0.0.1:0"\n' >"$cfg"; chmod 0755 "$WORK"; chmod 0644 "$cfg"
  try() {
    sleep 1.5  # io_uring frees ring memory asynchronously after exit; it is charged per user
    local out
    out="$(timeout 2 prlimit --memlock="$2:$2" setpriv --reuid=65534 --regid=65534 --clear-groups \
      --inh-caps=-all "$GW" --config "$cfg" --workers "$1" 2>&1 || true)"
    [[ "$out" == "gateway listening"* ]]
  }
  for w in 1 2; do
    lo=0; hi=16777216
    while [ $((hi - lo)) -gt 4096 ]; do
      mid=$(( (lo + hi) / 2 / 4096 * 4096 ))
      if try "$w" "$mid"; then hi=$mid; else lo=$mid; fi
    done
    sleep 1.5
    err="$(timeout 2 prlimit --memlock="$lo:$lo" setpriv --reuid=65534 --regid=65534 --clear-groups \
      --inh-caps=-all "$GW" --config "$cfg" --workers "$w" 2>&1 | head -n1 || true)"
    echo "workers $w (io defaults: ring_entries 4096, recv_buffers 4096): starts with RLIMIT_MEMLOCK >= $((hi / 1024)) KiB; at $((lo / 1024)) KiB: $err"
  done
}

if [ "${1:-}" = __inside ]; then
  shift
  ip link set lo up
  "$@"
  exit
fi
[ "${EUID:-$(id -u)}" -eq 0 ] || { echo "run.sh: needs root (network namespaces, sysctl)" >&2; exit 1; }
[ -x "$GW" ] || { echo "run.sh: no gateway at $GW: cargo build --release -p gateway --bins --examples" >&2; exit 1; }
case "${1:-}" in
  backlog) run_backlog ;; netdev) run_netdev ;; ports) run_ports ;; churn) run_churn ;;
  churn-veth) run_churn_veth ;; finwait) run_finwait ;; timewait) run_timewait ;; idle) run_idle ;;
  unread) run_unread ;; tput) run_tput ;; sockbuf) run_sockbuf ;; nofile) run_nofile ;; memlock) run_memlock ;;
  storm-bc) [ -x "$BC" ] || { echo "run.sh: no bench-client at $BC" >&2; exit 1; }; run_storm_bc ;;
  tput-bc) [ -x "$BC" ] || { echo "run.sh: no bench-client at $BC" >&2; exit 1; }; run_tput_bc ;;
  all) for e in backlog netdev ports churn churn-veth finwait timewait idle unread tput sockbuf nofile memlock storm-bc tput-bc; do
         echo "=== $e"; "$0" "$e" "$RUNS"; done ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
