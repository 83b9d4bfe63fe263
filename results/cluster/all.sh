#!/usr/bin/env bash
# Every run of results/cluster.md, in order; each waits for a quiet machine
# and records a load check (uptime, rustc processes) in out/$TAG/load.txt;
# run.sh's cpu-series.txt counts rustc processes once a second.
#   LOCK=/tmp/box.lock QUIET_TRIES=20 all.sh placement   # each run holds the lock exclusively
#   ROUNDS="r1 r2" LOCK=/tmp/box.lock all.sh placement
set -uo pipefail
SELF=$(readlink -f "$0")
cd "$(dirname "$0")"
alltick() { cat /proc/[0-9]*/stat 2>/dev/null | sed 's/^.*) //' | awk '{s+=$12+$13} END{print s}'; }
run() { # TAG, then VAR=value...
  if [ -n "${LOCK:-}" ] && [ -z "${LOCKED:-}" ]; then
    # Shared box: each run (its quiet-machine wait included) holds $LOCK
    # exclusively; builds take it shared.
    LOCKED=1 flock -x "$LOCK" "$SELF" "$@"
    return
  fi
  local tag=$1; shift
  # Wait (up to 10 min) for a quiet machine: no cargo, rustc or linker, and
  # under 10 ticks (3 % of a core) used by all processes together in 3 s.
  # (/proc/stat's machine-wide ticks do not follow the processes' ticks in
  # this VM, so the processes' own are summed.)
  local i; for i in $(seq ${QUIET_TRIES:-200}); do
    busy=0; for n in cargo rustc cc ld rust-lld; do pgrep -x $n > /dev/null && busy=1; done
    a=$(alltick); sleep 3; b=$(alltick)
    [ $busy = 0 ] && [ $((b - a)) -lt 10 ] && break
  done
  local pre; pre="$(uptime) rustc=$(pgrep -c rustc)"
  env TAG="$tag" "$@" ./run.sh
  { echo "before: $pre"; echo "after: $(uptime) rustc=$(pgrep -c rustc)"
    echo "rustc seen during the run: $(grep -vc 'rustc=0' "out/$tag/cpu-series.txt") of $(wc -l < "out/$tag/cpu-series.txt") samples"
    python3 table.py other "$tag"
  } > "out/$tag/load.txt"
}
[ $# -gt 1 ] && { t=$1; shift; run "$t" "$@"; exit; }   # one run: all.sh TAG VAR=value...
case ${1:-all} in
  latency|all)
    run lat-memory-1 KIND=memory NODES=1
    run lat-redis-2 KIND=redis NODES=2
    run lat-nats-2 KIND=nats NODES=2 ;;&
  cpu|all)
    for k in memory redis nats; do run cpu-$k-1 KIND=$k NODES=1 SUBS=20 RATE=1000 WARMUP=1; done
    for k in redis nats; do run cpu-$k-2 KIND=$k NODES=2 SUBS=20 RATE=1000 WARMUP=1; done ;;&
  placement)
    # broker.placement thread vs workers, paired: each shape (broker,
    # nodes, workers) runs with one placement, then at once with the other
    # (thread first in odd rounds, workers first in even ones); the CPU
    # shape of section 2 (20 subscribers, 1,000 publications/s).
    # SHAPES: the order of the shapes (round r2 of results/cluster.md ran
    # the two-worker and two-node shapes first:
    # SHAPES="redis-2-2 nats-2-2 redis-1-2 nats-1-2 redis-2-1 nats-2-1 nats-1-1 redis-1-1").
    for r in ${ROUNDS:-r1 r2}; do
      case $r in r1|r3|r5) order="thread workers";; *) order="workers thread";; esac
      for shape in ${SHAPES:-redis-1-1 redis-1-2 redis-2-1 redis-2-2 nats-1-1 nats-1-2 nats-2-1 nats-2-2}; do
        IFS=- read -r k n w <<< "$shape"
        for p in $order; do
          run pl-$k-$n-w$w-$p-$r KIND=$k NODES=$n WORKERS=$w PLACEMENT=$p SUBS=20 RATE=1000 WARMUP=1
        done
      done
    done ;;
  kill|all)
    run kill-redis-3 KIND=redis NODES=3 SUBS=3000 WARMUP=2 KILL_AT=13 RECONNECT="0 2000"
    run kill-nats-3 KIND=nats NODES=3 SUBS=3000 WARMUP=2 KILL_AT=13 RECONNECT="0 2000" ;;
esac
