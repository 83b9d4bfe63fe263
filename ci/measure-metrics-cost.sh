#!/usr/bin/env bash
# Measures what metrics cost end to end: gateway CPU per echoed message with
# `[admin] metrics = true` vs `false`, paired bursts against two resident
# gateways. Method and statistics: ci/measure_metrics_cost.py.
#
#   ci/measure-metrics-cost.sh [--pairs N] [--secs S] [--loads ping-pong,batched,open-loop] [--control] [--vs TOML] [--baseline BINARY]
#
# Run it on a quiet machine (check /proc/loadavg). results/metrics-cost.md
# records a run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p gateway -p bench-client >/dev/null 2>&1 ||
  cargo build --release --locked -p gateway -p bench-client
exec python3 ci/measure_metrics_cost.py "$@"
