#!/usr/bin/env bash
# Gets a Linux box ready for many WebSocket connections, safely and reversibly.
#
#   tune.sh [options] check     table of every setting: current, recommended, why;
#                               exit 1 if anything falls short
#   tune.sh [options] diff      what `apply` would change (current -> new)
#   tune.sh [options] apply     save the values it will change to the restore file,
#                               then raise them with sysctl -w                 (root)
#   tune.sh [options] persist   install the profile as /etc/sysctl.d/99-ws-gateway.conf
#                               (applied at boot)                               (root)
#   tune.sh [options] revert    restore the saved values byte for byte and remove
#                               the persisted drop-in                           (root)
#   tune.sh [options] render    print the drop-in for --profile (what ships as
#                               kernel-tuning/99-ws-gateway.conf)
#   tune.sh list                settings as tab-separated: key scope kind high-conn throughput
#
# Options:
#   --profile high-conn|throughput   high-conn (default): many mostly idle connections;
#                                    throughput: fewer, busy connections (bigger buffers)
#   --dry-run                        print what would change, change nothing (no root needed)
#   --scope auto|netns|all           which settings to touch. Inside a network namespace
#                                    other than the host's, `auto` (default) means `netns`:
#                                    only per-namespace settings, because host-wide ones
#                                    (fs.*, kernel.*, net.core.rmem_max, tcp_mem, ...)
#                                    would change the whole machine. `all` includes them.
#   --restore-file FILE              default /var/lib/ws-gateway/sysctl-restore.conf on the
#                                    host, sysctl-restore.netns-INODE.conf beside it inside
#                                    another network namespace (env WS_GATEWAY_RESTORE_FILE)
#   --unit FILE                      systemd unit to read LimitNOFILE/LimitMEMLOCK from
#                                    (default: the installed gateway.service if present,
#                                    else kernel-tuning/gateway.service)
#
# "Recommended" is a floor for limits: a value that is already higher (or a port range
# that is already wider) is never lowered. Exit status: 0 ok, 1 check fell short or a
# change failed (each failure says why), 2 usage error. See kernel-tuning/README.md.
set -euo pipefail
export LC_ALL=C

PROG=tune.sh
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SYSCTL_D="${WS_GATEWAY_SYSCTL_D:-/etc/sysctl.d}"
DROPIN_NAME=99-ws-gateway.conf
MARKER="managed-by: ws-gateway kernel-tuning/tune.sh"
RESTORE_FILE="${WS_GATEWAY_RESTORE_FILE:-}"
PROFILE=high-conn
DRY_RUN=0
SCOPE=auto
UNIT=""
VERB=""

# key | scope (netns = per network namespace, global = host-wide) | kind | high-conn | throughput | why
#   kinds: min (>=), max (<=), vec_min (each field >=), range (covers lo..hi), enum (=),
#          removed (reported, never written). "@ram" = computed from RAM (see ram_tcp_mem).
SETTINGS=(
  "fs.file-max|global|min|2097152|2097152|open files system-wide; each connection is one"
  "fs.nr_open|global|min|1048576|1048576|ceiling for ulimit -n / LimitNOFILE"
  "net.core.somaxconn|netns|min|65535|65535|caps the listen() backlog (gateway asks 4096/worker)"
  "net.ipv4.tcp_max_syn_backlog|netns|min|65535|65535|half-open queue; only used if syncookies=0"
  "net.core.netdev_max_backlog|global|min|16384|16384|per-CPU input queue (loopback too)"
  "net.ipv4.ip_local_port_range|netns|range|10000 65535|10000 65535|ephemeral ports per (src, dst, dport)"
  "net.ipv4.tcp_tw_reuse|netns|enum|1|1|reuse TIME_WAIT ports for outgoing connects"
  "net.ipv4.tcp_fin_timeout|netns|max|15|15|orphaned FIN_WAIT_2 lifetime (not TIME_WAIT)"
  "net.ipv4.tcp_mem|global|vec_min|@ram|@ram|pages for all TCP buffers: pressure, hard limit"
  "net.ipv4.tcp_rmem|netns|vec_min|4096 131072 6291456|4096 131072 16777216|receive buffer min/start/autotune max"
  "net.ipv4.tcp_wmem|netns|vec_min|4096 16384 4194304|4096 65536 16777216|send buffer min/start/autotune max"
  "net.core.rmem_max|global|min|212992|16777216|cap for SO_RCVBUF (gateway never sets it)"
  "net.core.wmem_max|global|min|212992|16777216|cap for SO_SNDBUF (gateway never sets it)"
  "net.core.rmem_default|global|min|212992|212992|non-TCP sockets; TCP starts at tcp_rmem[1]"
  "net.core.wmem_default|global|min|212992|212992|non-TCP sockets; TCP starts at tcp_wmem[1]"
  "net.netfilter.nf_conntrack_max|global|min|1048576|262144|tracked flows; a full table drops SYNs"
  "kernel.io_uring_disabled|global|max|0|0|0 = io_uring for everyone; the gateway needs it"
  "net.ipv4.tcp_tw_recycle|global|removed|-|-|removed in Linux 4.12 (broke clients behind NAT)"
)

# The reason for each setting, written as comments into the drop-in.
declare -A REASON=(
  [fs.file-max]="Maximum number of open files in the whole system. Every connection is a
descriptor, so a million connections need a million plus what everything
else on the box holds. Recent kernels size the default from RAM (often
already higher); tune.sh never lowers it."
  [fs.nr_open]="Ceiling for a single process's open-files limit (ulimit -n,
LimitNOFILE=). systemd cannot start a unit whose LimitNOFILE exceeds it. The
gateway needs one descriptor per connection: LimitNOFILE=1048576 in
gateway.service needs fs.nr_open >= 1048576 (the kernel default)."
  [net.core.somaxconn]="Upper bound for the accept queue of every listening socket: listen(fd, n)
gets min(n, somaxconn). The gateway asks for server.backlog (4096) per
worker; a reconnect storm after a restart or failover needs room to queue
completed handshakes while workers accept (measured: 19,000 clients at
once overflowed 4096 in 2 of 3 runs, 65535 never). Raise the gateway's
server.backlog with it. Before Linux 5.4 the default was 128. Per network
namespace."
  [net.ipv4.tcp_max_syn_backlog]="Limit of half-open (SYN_RECV) connections per listener, consulted only when
net.ipv4.tcp_syncookies=0; with syncookies on (the default) a full SYN queue
answers with cookies instead of dropping. Raised for hosts that turn
syncookies off. Per network namespace."
  [net.core.netdev_max_backlog]="Per-CPU queue of received packets waiting for the network softirq;
loopback traffic goes through it too. When it is full packets are dropped
(second column of /proc/net/softnet_stat) and TCP retransmits after a
timeout. Host-wide."
  [net.ipv4.ip_local_port_range]="Ephemeral ports for outgoing connections. Limits how many connections one
source address can hold to one destination address and port: the bench
client and upstream connections, not accepted connections (those use the
listening port). Starts at 10000 so that listening ports below it (the
gateway's 8080) are never handed out; reserve others with
net.ipv4.ip_local_reserved_ports. Per network namespace."
  [net.ipv4.tcp_tw_reuse]="1 lets connect() reuse a port whose previous connection is in TIME_WAIT
(safe: it relies on TCP timestamps; waits net.ipv4.tcp_tw_reuse_delay, 1 s).
2 (the default) does this for loopback only; 0 never. Measured over a veth
pair: with 2, one client's connect rate fell from 14,000/s to ~300/s after
the first second; with 1 it stayed at 14,000/s. Matters for clients making
many short connections (bench client, upstreams). Per network namespace."
  [net.ipv4.tcp_fin_timeout]="How long an orphaned socket (closed by the application) stays in
FIN_WAIT_2 waiting for the peer's FIN. It does NOT shorten TIME_WAIT (fixed at
60 s by the kernel). Shorter frees sockets faster when many clients vanish
without closing (measured: 5,000 orphans gone after ~15 s instead of ~60 s).
Per network namespace."
  [net.ipv4.tcp_mem]="Pages of memory all TCP sockets together may use for buffers: below the
first value no pressure, above the second the kernel shrinks buffers, at the
third new allocations fail. Default is about 4.7%/6.25%/9.4% of RAM; a box
that exists to hold connections can give TCP more. Idle connections hold no
buffer memory, so this matters when many connections have data queued
(slow readers, fan-out bursts). tune.sh computes 3/16, 1/4 and 3/8 of RAM.
Host-wide."
  [net.ipv4.tcp_rmem]="Receive buffer per TCP socket: minimum, initial, autotuning maximum
(bytes). These are limits, not allocations: an idle socket holds no buffer.
The maximum bounds one connection's window (throughput over long round
trips). Per network namespace."
  [net.ipv4.tcp_wmem]="Send buffer per TCP socket: minimum, initial, autotuning maximum (bytes).
Limits, not allocations. The maximum bounds unsent plus unacknowledged
data per connection. Per network namespace."
  [net.core.rmem_max]="Largest receive buffer a program may request with SO_RCVBUF (which also
switches autotuning off for that socket). The gateway never sets SO_RCVBUF,
so it only matters for programs that do. Host-wide."
  [net.core.wmem_max]="Largest send buffer a program may request with SO_SNDBUF. The gateway
never sets SO_SNDBUF. Host-wide."
  [net.core.rmem_default]="Initial receive buffer of non-TCP sockets (UDP, unix). TCP sockets start
at tcp_rmem[1] instead, so raising this does nothing for WebSocket traffic;
listed because many guides raise it. Host-wide."
  [net.core.wmem_default]="Initial send buffer of non-TCP sockets. TCP sockets start at tcp_wmem[1].
Host-wide."
  [net.netfilter.nf_conntrack_max]="Connections the connection tracker follows when nf_conntrack is loaded
(a firewall or NAT rule uses it). When the table is full new connections are
dropped ('nf_conntrack: table full, dropping packet' in dmesg). Only exists
while the module is loaded; the leading '-' makes systemd-sysctl skip it when
it is not. If the module loads after boot, run tune.sh apply again.
Host-wide."
  [kernel.io_uring_disabled]="0: any process may use io_uring. 1: only processes with CAP_SYS_ADMIN or in
the group kernel.io_uring_group. 2: nobody. The gateway is built on
io_uring and will not start without it. Host-wide."
  [net.ipv4.tcp_tw_recycle]="Removed in Linux 4.12: it dropped connections from clients behind NAT.
Guides that still set it fail on modern kernels. tune.sh reports it and never
writes it; use net.ipv4.tcp_tw_reuse instead."
)

die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
usage_error() { printf '%s: %s\n(see the top of %s for usage)\n' "$PROG" "$*" "${BASH_SOURCE[0]}" >&2; exit 2; }
note() { printf '%s: %s\n' "$PROG" "$*" >&2; }

while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || usage_error "--profile needs a value: high-conn or throughput"; PROFILE="$2"; shift 2 ;;
    --profile=*) PROFILE="${1#*=}"; shift ;;
    --dry-run|-n) DRY_RUN=1; shift ;;
    --scope) [ $# -ge 2 ] || usage_error "--scope needs a value: auto, netns or all"; SCOPE="$2"; shift 2 ;;
    --scope=*) SCOPE="${1#*=}"; shift ;;
    --restore-file) [ $# -ge 2 ] || usage_error "--restore-file needs a path"; RESTORE_FILE="$2"; shift 2 ;;
    --restore-file=*) RESTORE_FILE="${1#*=}"; shift ;;
    --unit) [ $# -ge 2 ] || usage_error "--unit needs a path"; UNIT="$2"; shift 2 ;;
    --unit=*) UNIT="${1#*=}"; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    check|diff|apply|persist|revert|render|list)
      [ -z "$VERB" ] || usage_error "one verb at a time (got $VERB and $1)"; VERB="$1"; shift ;;
    *) usage_error "unknown argument '$1' (verbs: check diff apply persist revert render list)" ;;
  esac
done
[ -n "$VERB" ] || usage_error "missing verb: check, diff, apply, persist, revert, render or list"
case "$PROFILE" in high-conn|throughput) ;; *) usage_error "unknown profile '$PROFILE' (high-conn or throughput)" ;; esac
case "$SCOPE" in auto|netns|all) ;; *) usage_error "unknown scope '$SCOPE' (auto, netns or all)" ;; esac

# ---------------------------------------------------------------- namespace scope
# Are we in the host's (initial) network namespace? Compare with a process that
# surely is: kthreadd (kernel threads live in the initial namespace), else PID 1.
# Without permission to look (non-root, or PID 1 holding capabilities we lack),
# fall back on what the kernel shows: net.core.netdev_max_backlog and other
# host-wide net.core keys exist only in the initial network namespace.
host_netns() {
  local p
  for p in 2 1; do
    if [ "$p" = 2 ] && [ "$(cat /proc/2/comm 2>/dev/null)" != kthreadd ]; then continue; fi
    readlink "/proc/$p/ns/net" 2>/dev/null && return 0
  done
  return 1
}
NETNS_SELF="$(readlink /proc/self/ns/net 2>/dev/null || echo unknown)"
IN_CHILD_NETNS=0
if NETNS_INIT="$(host_netns)"; then
  [ "$NETNS_SELF" = "$NETNS_INIT" ] || IN_CHILD_NETNS=1
else
  NETNS_INIT="the host's"
  [ -e /proc/sys/net/core/netdev_max_backlog ] || IN_CHILD_NETNS=1
fi
# Default restore file: one for the host; inside another network namespace one named
# after it, so a namespace that is gone can never leave values for the host to "restore".
if [ -z "$RESTORE_FILE" ]; then
  if [ "$IN_CHILD_NETNS" = 1 ]; then
    RESTORE_FILE="/var/lib/ws-gateway/sysctl-restore.netns-$(printf '%s' "$NETNS_SELF" | tr -cd '0-9').conf"
  else
    RESTORE_FILE=/var/lib/ws-gateway/sysctl-restore.conf
  fi
fi
if [ "$SCOPE" = auto ]; then
  if [ "$IN_CHILD_NETNS" = 1 ]; then SCOPE=netns; else SCOPE=all; fi
fi

# ---------------------------------------------------------------- helpers
field() { # field N "a|b|c"
  local IFS='|'; local -a f
  read -r -a f <<<"$2"
  printf '%s' "${f[$1]}"
}
key_path() { printf '/proc/sys/%s' "${1//.//}"; }
present() { [ -e "$(key_path "$1")" ]; }
read_raw() { # exact value as the kernel prints it (tabs kept), without the final newline
  local v
  v="$(<"$(key_path "$1")")" || return 1
  printf '%s' "$v"
}
words() { printf '%s' "$1" | tr -s ' \t' '  ' | sed 's/^ //; s/ $//'; }
is_uint() { [[ "$1" =~ ^[0-9]+$ ]]; }
ge() { # ge A B: A >= B for non-negative integers of any size bash holds (up to 2^63-1)
  local a="$1" b="$2"
  a="${a#"${a%%[!0]*}"}"; b="${b#"${b%%[!0]*}"}"
  [ ${#a} -ne ${#b} ] && { [ ${#a} -gt ${#b} ]; return; }
  [[ "$a" > "$b" || "$a" == "$b" ]]
}
max_int() { if ge "$1" "$2"; then printf '%s' "$1"; else printf '%s' "$2"; fi; }
min_int() { if ge "$1" "$2"; then printf '%s' "$2"; else printf '%s' "$1"; fi; }

ram_tcp_mem() { # 3/16, 1/4, 3/8 of RAM, in pages
  local kb page pages
  kb="$(awk '$1 == "MemTotal:" {print $2}' /proc/meminfo)"
  page="$(getconf PAGESIZE 2>/dev/null || echo 4096)"
  pages=$(( kb * 1024 / page ))
  printf '%s %s %s' $(( pages * 3 / 16 )) $(( pages / 4 )) $(( pages * 3 / 8 ))
}

recommended() { # recommended KEY-RECORD -> value for the chosen profile
  local rec
  if [ "$PROFILE" = high-conn ]; then rec="$(field 3 "$1")"; else rec="$(field 4 "$1")"; fi
  [ "$rec" = "@ram" ] && rec="$(ram_tcp_mem)"
  printf '%s' "$rec"
}

shown_recommended() { # human form: ">= 65535", "<= 15", "covers 10000-65535", "= 1"
  local kind="$1" rec="$2"
  case "$kind" in
    min) printf '>= %s' "$rec" ;;
    max) printf '<= %s' "$rec" ;;
    vec_min) printf '>= %s' "$rec" ;;
    range) printf 'covers %s' "${rec/ /-}" ;;
    enum) printf '= %s' "$rec" ;;
    removed) printf 'do not set' ;;
  esac
}

# satisfies KIND CURRENT RECOMMENDED -> 0 when current meets the recommendation
satisfies() {
  local kind="$1" cur rec i
  cur="$(words "$2")"; rec="$(words "$3")"
  local -a c r
  read -r -a c <<<"$cur"; read -r -a r <<<"$rec"
  case "$kind" in
    min) is_uint "$cur" && ge "$cur" "$rec" ;;
    max) is_uint "$cur" && ge "$rec" "$cur" ;;
    enum) [ "$cur" = "$rec" ] ;;
    vec_min)
      [ ${#c[@]} -eq ${#r[@]} ] || return 1
      for i in "${!r[@]}"; do is_uint "${c[$i]}" && ge "${c[$i]}" "${r[$i]}" || return 1; done ;;
    range)
      [ ${#c[@]} -eq 2 ] && is_uint "${c[0]}" && is_uint "${c[1]}" || return 1
      ge "${r[0]}" "${c[0]}" && ge "${c[1]}" "${r[1]}" ;;
    *) return 1 ;;
  esac
}

# target KIND CURRENT RECOMMENDED -> the value apply writes: the recommendation,
# but never below what is there (element-wise for triples, the union for ranges)
target() {
  local kind="$1" cur rec i out=""
  cur="$(words "$2")"; rec="$(words "$3")"
  local -a c r
  read -r -a c <<<"$cur"; read -r -a r <<<"$rec"
  case "$kind" in
    min) if is_uint "$cur"; then max_int "$cur" "$rec"; else printf '%s' "$rec"; fi ;;
    max) if is_uint "$cur"; then min_int "$cur" "$rec"; else printf '%s' "$rec"; fi ;;
    enum) printf '%s' "$rec" ;;
    vec_min)
      if [ ${#c[@]} -ne ${#r[@]} ]; then printf '%s' "$rec"; return; fi
      for i in "${!r[@]}"; do
        if is_uint "${c[$i]}"; then out+="$(max_int "${c[$i]}" "${r[$i]}") "; else out+="${r[$i]} "; fi
      done
      printf '%s' "${out% }" ;;
    range)
      if [ ${#c[@]} -eq 2 ] && is_uint "${c[0]}" && is_uint "${c[1]}"; then
        printf '%s %s' "$(min_int "${c[0]}" "${r[0]}")" "$(max_int "${c[1]}" "${r[1]}")"
      else printf '%s' "$rec"; fi ;;
  esac
}

in_scope() { [ "$SCOPE" = all ] || [ "$(field 1 "$1")" = netns ]; }

need_root() {
  [ "$DRY_RUN" = 1 ] && return 0
  [ "${EUID:-$(id -u)}" -eq 0 ] ||
    die "$VERB needs root: it writes $1. Run it with sudo, or add --dry-run to see what it would do."
}

explain_write_error() { # explain_write_error KEY VALUE STDERR-TEXT
  local key="$1" val="$2" err="$3" why
  case "$err" in
    *"Read-only file system"*) why="/proc/sys is mounted read-only here (a container?). Set it on the host, or with the container runtime's --sysctl option for per-namespace keys." ;;
    *"Permission denied"*|*"permission denied"*|*"Operation not permitted"*)
      why="the kernel refused the write: not root in the initial user namespace, or a host-wide key written from a network namespace it does not belong to." ;;
    *"Invalid argument"*) why="the kernel rejected the value '$val' (out of range for this kernel?)." ;;
    *"No such file"*|*"cannot stat"*) why="the key does not exist on this kernel (module not loaded, or not visible in this network namespace)." ;;
    *) why="sysctl said: $err" ;;
  esac
  printf '%s: error: could not set %s = %s: %s\n' "$PROG" "$key" "$val" "$why" >&2
}

write_value() { # write_value KEY VALUE -> 0 when the kernel now reports VALUE
  local key="$1" val="$2" err now
  if ! err="$(sysctl -q -w "$key=$val" 2>&1)"; then
    explain_write_error "$key" "$val" "$err"; return 1
  fi
  now="$(read_raw "$key")" || { explain_write_error "$key" "$val" "cannot read it back"; return 1; }
  if [ "$(words "$now")" != "$(words "$val")" ]; then
    printf '%s: error: %s: wrote %s but the kernel reports %s (clamped or rejected)\n' \
      "$PROG" "$key" "$(words "$val")" "$(words "$now")" >&2
    return 1
  fi
}

scope_banner() {
  if [ "$IN_CHILD_NETNS" = 1 ]; then
    if [ "$SCOPE" = netns ]; then
      printf '# network namespace %s (not the host'"'"'s %s): only per-namespace settings are checked or changed;\n' "$NETNS_SELF" "$NETNS_INIT"
      printf '# host-wide ones are shown but skipped (they would change the whole machine; --scope all includes them)\n'
    else
      printf '# network namespace %s, --scope all: host-wide settings are included and would change the whole machine\n' "$NETNS_SELF"
    fi
  fi
}

# ---------------------------------------------------------------- plan
# plan_changes fills PLAN_KEYS/PLAN_OLD/PLAN_NEW with what apply would change.
PLAN_KEYS=(); PLAN_OLD=(); PLAN_NEW=()
plan_changes() {
  local rec key kind cur want
  PLAN_KEYS=(); PLAN_OLD=(); PLAN_NEW=()
  for rec in "${SETTINGS[@]}"; do
    key="$(field 0 "$rec")"; kind="$(field 2 "$rec")"
    [ "$kind" = removed ] && continue
    in_scope "$rec" || continue
    present "$key" || continue
    cur="$(read_raw "$key")" || continue
    want="$(recommended "$rec")"
    satisfies "$kind" "$cur" "$want" && continue
    PLAN_KEYS+=("$key"); PLAN_OLD+=("$cur"); PLAN_NEW+=("$(target "$kind" "$cur" "$want")")
  done
}

# ---------------------------------------------------------------- unit limits
unit_file() {
  if [ -n "$UNIT" ]; then printf '%s' "$UNIT"; return; fi
  local f
  for f in /etc/systemd/system/gateway.service /usr/lib/systemd/system/gateway.service "$HERE/gateway.service"; do
    [ -f "$f" ] && { printf '%s' "$f"; return; }
  done
}
unit_value() { # last assignment of KEY= in the unit's [Service] section
  awk -F= -v k="$2" '/^\[/ {s = ($0 == "[Service]")} s && $1 == k {v = substr($0, length(k) + 2)} END {print v}' "$1"
}
to_bytes() { # systemd size like 64M, 1G, 8388608, infinity
  local v="$1" n u
  [ "$v" = infinity ] && { printf 'infinity'; return; }
  n="${v%%[KMGTkmgt]*}"; u="${v#"$n"}"
  is_uint "$n" || { printf '%s' "$v"; return; }
  case "$u" in
    ""|B) printf '%s' "$n" ;; K|k) printf '%s' $(( n * 1024 )) ;; M|m) printf '%s' $(( n * 1048576 )) ;;
    G|g) printf '%s' $(( n * 1073741824 )) ;; T|t) printf '%s' $(( n * 1099511627776 )) ;; *) printf '%s' "$v" ;;
  esac
}

# Locked memory io_uring charges per worker without CAP_IPC_LOCK, measured with
# config/prod.toml (ring_entries 4096: 256 KiB SQEs + 1 MiB CQEs + 16 KiB SQ array,
# recv_buffers 4096: 64 KiB buffer ring, + header): 1364 KiB (README, LimitMEMLOCK).
NCPU="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
MEMLOCK_NEED_KIB=$(( 1364 * NCPU ))

# Prints the limit rows of the check table; returns 1 when one falls short.
check_limits() {
  local unit nofile hard soft nr_open memlock rc=0 status why
  soft="$(ulimit -Sn)"; hard="$(ulimit -Hn)"
  printf '%-31s %-28s %-28s %-7s %s\n' "ulimit -n (this shell)" "$soft soft / $hard hard" ">= 1048576" \
    "$( [ "$soft" = unlimited ] || ge "$soft" 1048576 && echo ok || echo info)" \
    "caps connections of a gateway started from this shell"
  soft="$(ulimit -Sl)"; hard="$(ulimit -Hl)"
  printf '%-31s %-28s %-28s %-7s %s\n' "ulimit -l (this shell, KiB)" "$soft soft / $hard hard" ">= $MEMLOCK_NEED_KIB" \
    "$( [ "$soft" = unlimited ] || ge "$soft" "$MEMLOCK_NEED_KIB" && echo ok || echo info)" \
    "io_uring rings count against it without CAP_IPC_LOCK"
  unit="$(unit_file)"
  if [ -z "$unit" ] || [ ! -r "$unit" ]; then
    printf '%-31s %-28s %-28s %-7s %s\n' "LimitNOFILE (unit)" "no unit found" "1048576" "info" "see kernel-tuning/gateway.service"
    return 0
  fi
  nofile="$(unit_value "$unit" LimitNOFILE)"
  nr_open="$(read_raw fs.nr_open 2>/dev/null || echo 0)"
  hard="${nofile##*:}"
  status=ok; why="set by $unit"
  if [ -z "$nofile" ]; then
    status=LOW; why="$unit sets no LimitNOFILE: the service gets 1024 soft (systemd default)"; rc=1
  elif [ "$hard" = infinity ]; then
    why="infinity: systemd uses fs.nr_open ($nr_open)"
  elif ! is_uint "$hard"; then
    status=LOW; why="cannot read LimitNOFILE=$nofile in $unit"; rc=1
  elif ! ge "$nr_open" "$hard"; then
    status=HIGH; why="above fs.nr_open ($nr_open): systemd cannot start the unit; raise fs.nr_open"; rc=1
  elif ! ge "$hard" 1048576; then
    status=LOW; why="caps the gateway at ~$hard connections per process"; rc=1
  fi
  printf '%-31s %-28s %-28s %-7s %s\n' "LimitNOFILE (unit)" "${nofile:-unset}" ">= 1048576, <= fs.nr_open" "$status" "$why"
  memlock="$(unit_value "$unit" LimitMEMLOCK)"
  local b need=$(( MEMLOCK_NEED_KIB * 1024 ))
  b="$(to_bytes "${memlock:-8M}")"
  status=ok; why="io_uring rings: ~1364 KiB per worker (prod config), $NCPU CPU(s)"
  [ -n "$memlock" ] || why="unset: systemd's default 8M applies; $why"
  if [ "$b" != infinity ] && is_uint "$b" && ! ge "$b" "$need"; then
    status=LOW; rc=1; why="workers fail io_uring_setup with ENOMEM beyond $(( b / 1396736 )) worker(s)"
  fi
  printf '%-31s %-28s %-28s %-7s %s\n' "LimitMEMLOCK (unit)" "${memlock:-unset}" ">= $(( need / 1024 ))K" "$status" "$why"
  return "$rc"
}

# ---------------------------------------------------------------- verbs
cmd_check() {
  local rec key kind cur want status shown short=0
  scope_banner
  printf '# profile %s\n' "$PROFILE"
  printf '%-31s %-28s %-28s %-7s %s\n' SETTING CURRENT RECOMMENDED STATUS WHY
  for rec in "${SETTINGS[@]}"; do
    key="$(field 0 "$rec")"; kind="$(field 2 "$rec")"
    want="$(recommended "$rec")"; shown="$(shown_recommended "$kind" "$want")"
    if [ "$kind" = removed ]; then
      if present "$key"; then cur="$(words "$(read_raw "$key")")"; status=old; else cur="(absent)"; status=removed; fi
    elif ! present "$key"; then
      cur="(absent)"; status=n/a
    else
      cur="$(words "$(read_raw "$key")")"
      if ! in_scope "$rec"; then status=skipped
      elif satisfies "$kind" "$cur" "$want"; then status=ok
      else
        case "$kind" in max) status=HIGH ;; enum) status=DIFF ;; *) status=LOW ;; esac
        short=$((short + 1))
      fi
    fi
    printf '%-31s %-28s %-28s %-7s %s\n' "$key" "$cur" "$shown" "$status" "$(field 5 "$rec")"
  done
  check_limits || short=$((short + 1))
  printf '\n# status: ok = meets it; LOW/HIGH/DIFF = falls short (apply fixes sysctls; LimitNOFILE is the unit'"'"'s);\n'
  printf '# n/a = not on this kernel or not in this namespace (conntrack not loaded, host-wide key in a netns);\n'
  printf '# skipped = host-wide, not touched from this network namespace; removed = gone from modern kernels, never written;\n'
  printf '# info = advice only. Details: kernel-tuning/README.md\n'
  if [ "$short" -gt 0 ]; then
    note "$short setting(s) fall short of profile $PROFILE: run '$PROG --profile $PROFILE diff' to see the changes, 'sudo $PROG --profile $PROFILE apply' to make them"
    return 1
  fi
  note "all settings meet profile $PROFILE"
}

cmd_diff() {
  local i
  scope_banner
  plan_changes
  if [ ${#PLAN_KEYS[@]} -eq 0 ]; then printf '# profile %s: nothing to change\n' "$PROFILE"; return 0; fi
  printf '# profile %s: apply would change %d setting(s)\n' "$PROFILE" "${#PLAN_KEYS[@]}"
  for i in "${!PLAN_KEYS[@]}"; do
    printf '%s: %s -> %s\n' "${PLAN_KEYS[$i]}" "$(words "${PLAN_OLD[$i]}")" "${PLAN_NEW[$i]}"
  done
}

# Restore file: a sysctl.conf (loadable with sysctl -p) with a header naming the
# network namespace it belongs to. Only the first saved value of a key is kept, so
# a second apply never overwrites the original with an already tuned value.
restore_netns() { sed -n 's/^# netns: //p' "$1" | head -n1; }
check_restore_netns() {
  local saved
  saved="$(restore_netns "$RESTORE_FILE")"
  if [ -n "$saved" ] && [ "$saved" != "$NETNS_SELF" ]; then
    die "$RESTORE_FILE holds values saved in network namespace $saved, but this is $NETNS_SELF.
  Values from another namespace must not be restored here. Run '$PROG revert' there, or,
  if that namespace no longer exists, delete the file (or use --restore-file for this one)."
  fi
}
save_restore() { # save_restore KEY... (current values of the keys not yet saved)
  local key new=() tmp dir
  if [ -f "$RESTORE_FILE" ]; then check_restore_netns; fi
  for key in "$@"; do
    if [ -f "$RESTORE_FILE" ] && grep -q "^${key//./\\.} = " "$RESTORE_FILE"; then continue; fi
    new+=("$key")
  done
  [ ${#new[@]} -gt 0 ] || { [ "$DRY_RUN" = 1 ] || note "restore file $RESTORE_FILE already holds the original values"; return 0; }
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would save the current values of %d setting(s) to %s\n' "${#new[@]}" "$RESTORE_FILE"
    return 0
  fi
  dir="$(dirname "$RESTORE_FILE")"
  mkdir -p "$dir" || die "cannot create $dir for the restore file (choose another with --restore-file)"
  tmp="$(mktemp "$RESTORE_FILE.XXXXXX")" || die "cannot write in $dir (choose another place with --restore-file)"
  {
    if [ -f "$RESTORE_FILE" ]; then cat "$RESTORE_FILE"; else
      printf "# ws-gateway tune.sh restore file: values before tuning, restored by 'tune.sh revert'.\n"
      printf "# saved %s (profile %s); loadable by hand with 'sysctl -p FILE'.\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$PROFILE"
      printf '# netns: %s\n' "$NETNS_SELF"
    fi
    for key in "${new[@]}"; do printf '%s = %s\n' "$key" "$(read_raw "$key")"; done
  } >"$tmp" || { rm -f "$tmp"; die "cannot write the restore file $RESTORE_FILE"; }
  mv "$tmp" "$RESTORE_FILE" || { rm -f "$tmp"; die "cannot write the restore file $RESTORE_FILE"; }
  note "saved the current values of ${#new[@]} setting(s) to $RESTORE_FILE"
}

cmd_apply() {
  local i failed=0
  need_root "/proc/sys (and $RESTORE_FILE)"
  scope_banner
  plan_changes
  if [ ${#PLAN_KEYS[@]} -eq 0 ]; then
    printf '# profile %s: nothing to change\n' "$PROFILE"; return 0
  fi
  save_restore "${PLAN_KEYS[@]}"
  for i in "${!PLAN_KEYS[@]}"; do
    if [ "$DRY_RUN" = 1 ]; then
      printf 'would set %s: %s -> %s\n' "${PLAN_KEYS[$i]}" "$(words "${PLAN_OLD[$i]}")" "${PLAN_NEW[$i]}"
    elif write_value "${PLAN_KEYS[$i]}" "${PLAN_NEW[$i]}"; then
      printf 'set %s: %s -> %s\n' "${PLAN_KEYS[$i]}" "$(words "${PLAN_OLD[$i]}")" "${PLAN_NEW[$i]}"
    else
      failed=$((failed + 1))
    fi
  done
  if [ "$failed" -gt 0 ]; then
    die "$failed setting(s) could not be set (reasons above); '$PROG revert' restores what was changed"
  fi
  [ "$DRY_RUN" = 1 ] && printf '# dry run: nothing changed\n'
  return 0
}

render_dropin() { # render_dropin host|shipped
  local mode="$1" rec key kind want val
  printf '# /etc/sysctl.d/%s: kernel settings for the io_uring WebSocket gateway.\n' "$DROPIN_NAME"
  printf '# %s (profile %s).\n' "$MARKER" "$PROFILE"
  if [ "$mode" = shipped ]; then
    printf "# Generated by 'kernel-tuning/tune.sh --profile %s render'; edit tune.sh, not this file.\n" "$PROFILE"
    printf "# 'tune.sh persist' installs a copy adjusted to the host: values the host already has\n"
    printf '# higher (or port ranges already wider) are kept, and tcp_mem is computed from RAM.\n'
  else
    printf "# Installed by 'tune.sh persist' on %s: recommendations raised to what this host\n" "$(date -u +%Y-%m-%d)"
    printf "# already had where that was higher. 'tune.sh revert' removes this file.\n"
  fi
  printf '# Reasons and measured effects: kernel-tuning/README.md. Limits that are not sysctls\n'
  printf '# (LimitNOFILE, LimitMEMLOCK) are in kernel-tuning/gateway.service.\n'
  for rec in "${SETTINGS[@]}"; do
    key="$(field 0 "$rec")"; kind="$(field 2 "$rec")"
    printf '\n'
    printf '%s\n' "${REASON[$key]}" | sed 's/^/# /; s/ *$//'
    if [ "$kind" = removed ]; then printf '# (%s: not set)\n' "$key"; continue; fi
    want="$(recommended "$rec")"
    if [ "$mode" = shipped ] && [ "$(field 3 "$rec")" = "@ram" ]; then
      printf '# %s = <3/16 1/4 3/8 of RAM in pages, set by tune.sh apply/persist>\n' "$key"; continue
    fi
    val="$want"
    if [ "$mode" = host ] && present "$key"; then val="$(target "$kind" "$(read_raw "$key")" "$want")"; fi
    if [ "$key" = net.netfilter.nf_conntrack_max ]; then printf -- '-%s = %s\n' "$key" "$val"
    else printf '%s = %s\n' "$key" "$val"; fi
  done
}

cmd_render() { render_dropin shipped; }

cmd_persist() {
  local dest="$SYSCTL_D/$DROPIN_NAME" tmp rec key kind want keys=()
  if [ "$SCOPE" = netns ]; then
    die "persist writes $dest, which the host applies at boot to everything. From inside a
  network namespace that would tune the host: run it on the host, or pass --scope all if that is what you want."
  fi
  need_root "$dest"
  if [ -e "$dest" ] && ! grep -qF "$MARKER" "$dest"; then
    die "$dest exists and was not written by tune.sh; not overwriting it. Move it aside or merge by hand (tune.sh render prints ours)."
  fi
  # Values that will change at the next boot are saved now, so revert can restore them.
  for rec in "${SETTINGS[@]}"; do
    key="$(field 0 "$rec")"; kind="$(field 2 "$rec")"
    [ "$kind" = removed ] && continue
    present "$key" || continue
    want="$(recommended "$rec")"
    satisfies "$kind" "$(read_raw "$key")" "$want" || keys+=("$key")
  done
  [ ${#keys[@]} -gt 0 ] && save_restore "${keys[@]}"
  if [ "$DRY_RUN" = 1 ]; then
    printf '# would write %s:\n' "$dest"; render_dropin host; return 0
  fi
  mkdir -p "$SYSCTL_D" || die "cannot create $SYSCTL_D"
  tmp="$(mktemp "$SYSCTL_D/.$DROPIN_NAME.XXXXXX")" || die "cannot write in $SYSCTL_D"
  if render_dropin host >"$tmp" && chmod 0644 "$tmp" && mv "$tmp" "$dest"; then
    note "installed $dest (applied at boot by systemd-sysctl; now: 'sudo $PROG --profile $PROFILE apply' or 'sysctl -e -p $dest')"
  else
    rm -f "$tmp"; die "could not install $dest"
  fi
}

cmd_revert() {
  local line key val cur failed=0 restored=0 dest="$SYSCTL_D/$DROPIN_NAME" did=0
  need_root "/proc/sys, $RESTORE_FILE and $dest"
  if [ -f "$RESTORE_FILE" ]; then
    check_restore_netns
    did=1
    while IFS= read -r line || [ -n "$line" ]; do
      case "$line" in ''|'#'*) continue ;; esac
      key="${line%% = *}"; val="${line#* = }"
      [ "$key" != "$line" ] || { note "skipping malformed line in $RESTORE_FILE: $line"; continue; }
      if ! present "$key"; then
        note "cannot restore $key: it does not exist here now (module unloaded?)"; failed=$((failed + 1)); continue
      fi
      cur="$(read_raw "$key")"
      if [ "$cur" = "$val" ]; then continue; fi
      if [ "$DRY_RUN" = 1 ]; then
        printf 'would restore %s: %s -> %s\n' "$key" "$(words "$cur")" "$(words "$val")"; continue
      fi
      if write_value "$key" "$val" && [ "$(read_raw "$key")" = "$val" ]; then
        printf 'restored %s: %s -> %s\n' "$key" "$(words "$cur")" "$(words "$val")"; restored=$((restored + 1))
      else
        failed=$((failed + 1))
      fi
    done <"$RESTORE_FILE"
    if [ "$failed" -gt 0 ]; then
      die "$failed value(s) could not be restored (reasons above); $RESTORE_FILE is kept"
    fi
    if [ "$DRY_RUN" = 1 ]; then printf 'would remove %s\n' "$RESTORE_FILE"
    else rm -f "$RESTORE_FILE"; note "restored $restored value(s); removed $RESTORE_FILE"; fi
  fi
  if [ -e "$dest" ]; then
    if [ "$SCOPE" = netns ]; then
      note "not removing $dest from inside a network namespace (host-wide; use --scope all or run on the host)"
    elif grep -qF "$MARKER" "$dest"; then
      did=1
      if [ "$DRY_RUN" = 1 ]; then printf 'would remove %s\n' "$dest"
      else rm -f "$dest"; note "removed $dest (boot no longer applies it)"; fi
    else
      note "$dest was not written by tune.sh; leaving it"
    fi
  fi
  [ "$did" = 1 ] || note "nothing to revert: no restore file at $RESTORE_FILE and no $dest"
  [ "$DRY_RUN" = 1 ] && printf '# dry run: nothing changed\n'
  return 0
}

cmd_list() {
  local rec
  for rec in "${SETTINGS[@]}"; do
    printf '%s\t%s\t%s\t%s\t%s\n' "$(field 0 "$rec")" "$(field 1 "$rec")" "$(field 2 "$rec")" "$(field 3 "$rec")" "$(field 4 "$rec")"
  done
}

command -v sysctl >/dev/null 2>&1 || case "$VERB" in apply|revert)
  [ "$DRY_RUN" = 1 ] || die "sysctl not found: install procps (apt-get install procps)" ;; esac

case "$VERB" in
  check) cmd_check ;;
  diff) cmd_diff ;;
  apply) cmd_apply ;;
  persist) cmd_persist ;;
  revert) cmd_revert ;;
  render) cmd_render ;;
  list) cmd_list ;;
esac
