#!/usr/bin/env bash
# Repeats of the latency and CPU runs (tags suffixed -r2, -r3), to show the spread.
cd "$(dirname "$0")"
for r in ${ROUNDS:-r2 r3}; do
  ./all.sh lat-memory-1-$r KIND=memory NODES=1
  ./all.sh lat-redis-2-$r KIND=redis NODES=2
  ./all.sh lat-nats-2-$r KIND=nats NODES=2
  for k in memory redis nats; do ./all.sh cpu-$k-1-$r KIND=$k NODES=1 SUBS=20 RATE=1000 WARMUP=1; done
  for k in redis nats; do ./all.sh cpu-$k-2-$r KIND=$k NODES=2 SUBS=20 RATE=1000 WARMUP=1; done
done
