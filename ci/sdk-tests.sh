#!/usr/bin/env bash
# End-to-end tests of the gateway's pubsub route with Centrifugo's REAL client
# SDKs: centrifuge-python (ci/sdk/test_python.py) and centrifuge-js under Node
# (ci/sdk/test_js.mjs), plus the server HTTP API. Pins: ci/sdk/requirements.txt,
# ci/sdk/package.json + package-lock.json.
#
#   ci/sdk-tests.sh                 build the gateway (release) if needed, run both
#   SDK_ONLY=python|js ci/sdk-tests.sh   run one SDK's tests
#   SDK_CLUSTER=0 | only                 skip the cluster part | run only it
#   GATEWAY_BIN=path ci/sdk-tests.sh     use that binary instead of building
#   SDK_TEST_CACHE=dir                   private venv + node_modules (default
#                                        /tmp/ws-gateway-sdk), reinstalled only
#                                        when the pins (or python/node) change
#
# Starts two gateways on free loopback ports: ci/sdk/gateway.toml with
# --workers 2 (+ its server API on the admin listener) and
# ci/sdk/gateway-noanon.toml (anonymous connections refused). Both are stopped
# on exit, whatever happens. Needs python3 (>= 3.11, with venv), node (>= 18)
# and npm; the registries (PyPI, npm) only when the pins changed.
#
# Then the cluster, as issue 14 has a new user check it (ci/sdk/test_cluster.py,
# ci/sdk/test_cluster.mjs): redis-server, then nats-server, on a free loopback
# port, and each time three nodes from config/cluster-redis.toml /
# config/cluster-nats.toml (only broker.addresses changed) started with
# `--listen 127.0.0.1:P --admin-listen 127.0.0.1:Q`. The Python program kills
# redis-server mid-run and restarts it. A missing broker binary skips its part
# (SKIP line), except under CI=true, where it fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SDK="$ROOT/ci/sdk"
CACHE="${SDK_TEST_CACHE:-/tmp/ws-gateway-sdk}"
ONLY="${SDK_ONLY:-}"
CLUSTER="${SDK_CLUSTER:-1}"
T0=$SECONDS

say() { printf '==> sdk-tests: %s\n' "$*"; }
die() {
  printf '==> sdk-tests: FAILED: %s\n' "$*" >&2
  exit 1
}

case "$ONLY" in
  "" | python | js) ;;
  *) die "SDK_ONLY must be python or js, not '$ONLY'" ;;
esac
want() { [ -z "$ONLY" ] || [ "$ONLY" = "$1" ]; }
case "$CLUSTER" in
  0 | 1 | only) ;;
  *) die "SDK_CLUSTER must be 0 or only, not '$CLUSTER'" ;;
esac

# --- tools ----------------------------------------------------------------------
if want python; then
  command -v python3 >/dev/null || die "python3 not found (needs Python >= 3.11 with venv)"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "python3 is $(python3 --version 2>&1); the tests need >= 3.11 (tomllib)"
fi
if want js; then
  command -v node >/dev/null || die "node not found (apt-get install nodejs npm)"
  command -v npm >/dev/null || die "npm not found (apt-get install npm)"
  node -e 'process.exit(Number(process.versions.node.split(".")[0]) < 18 ? 1 : 0)' \
    || die "node is $(node --version); the tests need >= 18"
fi

# --- the gateway ------------------------------------------------------------------
if [ -n "${GATEWAY_BIN:-}" ]; then
  BIN="$GATEWAY_BIN"
  [ -x "$BIN" ] || die "GATEWAY_BIN=$BIN is not an executable"
else
  say "cargo build --release -p gateway"
  (cd "$ROOT" && cargo build --release --locked -p gateway --bin gateway --quiet) \
    || die "cargo build --release -p gateway failed"
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/gateway"
  case "$BIN" in /*) ;; *) BIN="$ROOT/$BIN" ;; esac
fi

# --- private SDK installs, keyed by a hash of the pins ---------------------------------
mkdir -p "$CACHE"

# One install at a time per cache (flock when available). Each set of pins
# (with the interpreter's version) gets its own directory, used only once it
# holds a .complete marker, so an interrupted install is redone.
lock_cache() {
  if command -v flock >/dev/null; then
    exec 9>"$CACHE/.lock"
    flock -w 600 9 || die "could not lock $CACHE/.lock within 600s"
  fi
}
unlock_cache() { if command -v flock >/dev/null; then flock -u 9; exec 9>&-; fi; }

VENV="" NODE_PREFIX=""
if want python; then
  key=$( (cat "$SDK/requirements.txt"; python3 -c 'import sys; print(sys.version, sys.executable)') | sha256sum | cut -c1-16)
  VENV="$CACHE/venv-$key"
  if [ ! -f "$VENV/.complete" ]; then
    lock_cache
    if [ ! -f "$VENV/.complete" ]; then
      say "installing ci/sdk/requirements.txt into $VENV"
      rm -rf "$VENV"
      # A venv holds its own path, so it is built in place.
      python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
      # --no-deps: exactly the pinned set, nothing resolved on the side;
      # pip check then proves the pins satisfy each other's requirements.
      "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-input \
        --no-deps -r "$SDK/requirements.txt" || die "pip install -r ci/sdk/requirements.txt failed"
      "$VENV/bin/python" -m pip check --disable-pip-version-check >"$CACHE/pip-check.txt" 2>&1 \
        || die "ci/sdk/requirements.txt pins are inconsistent: $(cat "$CACHE/pip-check.txt")"
      touch "$VENV/.complete"
      find "$CACHE" -maxdepth 1 -name 'venv-*' ! -name "venv-$key" -exec rm -rf {} + 2>/dev/null || true
    fi
    unlock_cache
  fi
fi
if want js; then
  key=$( (cat "$SDK/package.json" "$SDK/package-lock.json"; node --version) | sha256sum | cut -c1-16)
  NODE_PREFIX="$CACHE/node-$key"
  if [ ! -f "$NODE_PREFIX/.complete" ]; then
    lock_cache
    if [ ! -f "$NODE_PREFIX/.complete" ]; then
      say "npm ci (ci/sdk/package-lock.json) into $NODE_PREFIX"
      rm -rf "$NODE_PREFIX" "$NODE_PREFIX.tmp"
      mkdir -p "$NODE_PREFIX.tmp"
      cp "$SDK/package.json" "$SDK/package-lock.json" "$NODE_PREFIX.tmp/"
      (cd "$NODE_PREFIX.tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null) \
        || die "npm ci failed in $NODE_PREFIX.tmp"
      touch "$NODE_PREFIX.tmp/.complete"
      mv "$NODE_PREFIX.tmp" "$NODE_PREFIX"
      find "$CACHE" -maxdepth 1 -name 'node-*' ! -name "node-$key" -exec rm -rf {} + 2>/dev/null || true
    fi
    unlock_cache
  fi
fi

# --- gateways on free ports ------------------------------------------------------------
tmp="$(mktemp -d)"
pids=()
declare -A gwpid=()
kids=()
cleanup() {
  local pid
  # Test programs first (timeout forwards the signal to its command), then
  # the gateways; each gets 5 s before SIGKILL.
  for pid in "${kids[@]}" "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${kids[@]}"; do wait "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # The brokers: their current pid is in a file (test_cluster.py restarts
  # redis-server and writes the new one's there).
  local f
  for f in "$tmp"/broker-*.pid; do
    if [ -f "$f" ]; then stop_pid "$(cat "$f")"; fi
  done
  rm -rf "$tmp"
}
# stop_pid PID: SIGTERM, 5 s, SIGKILL (also for a process that is not our child).
stop_pid() {
  local pid="$1"
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_gateway NAME CONFIG LISTEN ARGS...: starts it, waits for its address lines.
start_gateway() {
  local name="$1" config="$2" listen="$3"
  shift 3
  "$BIN" --config "$config" --listen "$listen" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  local pid=$!
  pids+=("$pid")
  gwpid[$name]=$pid
  local want_line='^gateway listening on '
  case " $* " in *" --admin-listen "*) want_line='^admin listening on ' ;; esac
  for _ in $(seq 150); do
    grep -q "$want_line" "$tmp/$name.out" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "--- $name stdout ---" >&2; cat "$tmp/$name.out" >&2
  echo "--- $name stderr ---" >&2; tail -30 "$tmp/$name.err" >&2
  die "gateway '$name' ($config) did not start"
}
# --- the test programs -------------------------------------------------------------------
summaries=()
failed=0
total_pass=0 total_fail=0
# run_sdk LABEL LINE-PREFIX COMMAND...: runs one program (bounded), keeps its summary.
run_sdk() {
  local label="$1" prefix="$2" rc=0 t=$SECONDS line p f
  shift 2
  say "$label"
  # In the background, so that a signal to this script is handled at once
  # (bash runs traps only between foreground commands, but does interrupt
  # `wait`); its output is shown live by tail.
  timeout -k 5 180 "$@" >"$tmp/$prefix.log" 2>&1 &
  local child=$!
  kids+=("$child")
  tail -n +1 -s 0.2 -f --pid="$child" "$tmp/$prefix.log" &
  local tailer=$!
  kids+=("$tailer")
  wait "$child" || rc=$?
  wait "$tailer" || true
  kids=()
  line=$(grep -E "^$prefix: [0-9]+ passed, [0-9]+ failed" "$tmp/$prefix.log" | tail -1 || true)
  if [ -z "$line" ]; then
    line="$prefix: did not finish (exit $rc)"
    if [ "$rc" -eq 124 ]; then line="$prefix: timed out after 180s"; fi
    if [ "$rc" -eq 0 ]; then rc=1; fi
  else
    p=$(sed -E 's/.*: ([0-9]+) passed.*/\1/' <<<"$line")
    f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
    total_pass=$((total_pass + p)) total_fail=$((total_fail + f))
  fi
  local verdict=""
  if [ "$rc" -ne 0 ]; then failed=1 verdict=" FAILED"; fi
  summaries+=("$label: ${line#"$prefix": } ($((SECONDS - t))s)$verdict")
}

# stop_gateway NAME: it must have survived the tests, stop within 10 s of
# SIGTERM with status 0, and not have panicked (else a FAILED summary line).
stop_gateway() {
  local name="$1" pid="${gwpid[$1]}" rc=0 bad=0
  if ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" || rc=$?
    summaries+=("gateway '$name' exited (status $rc) during the tests FAILED")
    echo "--- gateway $name stderr (tail) ---" >&2; tail -30 "$tmp/$name.err" >&2
    failed=1
    return
  fi
  kill -TERM "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    summaries+=("gateway '$name' still running 10s after SIGTERM FAILED")
    bad=1
  else
    wait "$pid" || rc=$?
    if [ "$rc" -ne 0 ]; then
      summaries+=("gateway '$name' exited with status $rc on SIGTERM FAILED")
      bad=1
    fi
  fi
  if grep -q 'panicked' "$tmp/$name.err"; then
    summaries+=("gateway '$name' panicked: $(grep -m1 'panicked' "$tmp/$name.err") FAILED")
    bad=1
  fi
  if [ "$bad" -ne 0 ]; then
    failed=1
    echo "--- gateway $name stderr (tail) ---" >&2; tail -15 "$tmp/$name.err" >&2
  fi
}

py_ver() { "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("centrifuge-python"), "websockets", m.version("websockets"))'; }
js_ver() { node -p "require('$NODE_PREFIX/node_modules/centrifuge/package.json').version + ' ws ' + require('$NODE_PREFIX/node_modules/ws/package.json').version + ', node ' + process.version"; }
export SDK_NODE_PREFIX="$NODE_PREFIX"

# --- one gateway per config ----------------------------------------------------------------
if [ "$CLUSTER" != only ]; then
  start_gateway main "$SDK/gateway.toml" 127.0.0.1:0 --admin-listen 127.0.0.1:0 --workers 2
  start_gateway noanon "$SDK/gateway-noanon.toml" 127.0.0.1:0 --workers 1
  addr=$(sed -n 's/^gateway listening on \([^ ]*\) .*/\1/p' "$tmp/main.out")
  admin=$(sed -n 's/^admin listening on //p' "$tmp/main.out")
  noanon=$(sed -n 's/^gateway listening on \([^ ]*\) .*/\1/p' "$tmp/noanon.out")
  say "gateway $BIN on $addr (2 workers, API on $admin); no-anonymous gateway on $noanon"

  export SDK_WS_URL="ws://$addr/connection/websocket"
  export SDK_API_URL="http://$admin/api"
  export SDK_NOANON_WS_URL="ws://$noanon/connection/websocket"
  export SDK_GATEWAY_CONFIG="$SDK/gateway.toml"

  if want python; then
    run_sdk "python (centrifuge-python $(py_ver))" python "$VENV/bin/python" "$SDK/test_python.py"
  fi
  if want js; then
    run_sdk "js (centrifuge $(js_ver))" js node "$SDK/test_js.mjs"
  fi
  # The gateways must have survived and must stop cleanly.
  stop_gateway main
  stop_gateway noanon
fi

# --- a cluster of three nodes over Redis, then over NATS -------------------------------------
# broker_bin redis|nats: the server's path, or nothing.
broker_bin() {
  case "$1" in
    redis) command -v redis-server || true ;;
    nats) command -v nats-server || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; } || true ;;
  esac
}

# free_ports N: N distinct free loopback ports (all held open while chosen).
free_ports() {
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# start_broker KIND BIN PORT: the server on 127.0.0.1:PORT, its pid in
# $tmp/broker-KIND.pid and its command line in $tmp/broker-KIND.argv (JSON);
# waits for its log to say it is ready (a connect alone could reach somebody
# else's server that took the port first).
start_broker() {
  local kind="$1" bin="$2" port="$3" ready
  local -a argv
  case "$kind" in
    redis)
      argv=("$bin" --port "$port" --save '' --appendonly no --bind 127.0.0.1)
      ready='Ready to accept connections'
      ;;
    nats)
      argv=("$bin" -a 127.0.0.1 -p "$port")
      ready='Server is ready'
      ;;
  esac
  (cd "$tmp" && exec "${argv[@]}") >"$tmp/broker-$kind.log" 2>&1 </dev/null &
  local pid=$!
  # test_cluster.py SIGKILLs redis-server: no "Killed" job notice for it.
  disown "$pid"
  echo "$pid" >"$tmp/broker-$kind.pid"
  python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "${argv[@]}" >"$tmp/broker-$kind.argv"
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    grep -q "$ready" "$tmp/broker-$kind.log" && return 0
    sleep 0.1
  done
  tail -20 "$tmp/broker-$kind.log" >&2
  die "$kind server ($bin) did not start on 127.0.0.1:$port"
}

# run_cluster KIND: the broker, three nodes, the programs, everything stopped.
run_cluster() {
  local kind="$1" bin port i name listen=() admin=() ports
  bin=$(broker_bin "$kind")
  if [ -z "$bin" ]; then
    local server="$kind-server"
    if [ "${CI:-}" = true ]; then
      summaries+=("cluster $kind: $server is not installed (CI=true: required) FAILED")
      failed=1
    else
      say "SKIP: cluster over $kind: $server is not installed"
      summaries+=("cluster $kind: SKIPPED ($server is not installed)")
    fi
    return
  fi
  read -r -a ports <<<"$(free_ports 7)"
  port="${ports[0]}"
  start_broker "$kind" "$bin" "$port"
  # The shipped config as is, but for the broker's address.
  local config="$tmp/cluster-$kind.toml"
  sed 's|^addresses = \["127\.0\.0\.1:[0-9]*"\]$|addresses = ["127.0.0.1:'"$port"'"]|' \
    "$ROOT/config/cluster-$kind.toml" >"$config"
  grep -q "^addresses = \[\"127.0.0.1:$port\"\]$" "$config" \
    || die "config/cluster-$kind.toml: no 'addresses = [\"127.0.0.1:PORT\"]' line to point at the broker"
  for i in 1 2 3; do
    listen+=("127.0.0.1:${ports[$((2 * i - 1))]}")
    admin+=("127.0.0.1:${ports[$((2 * i))]}")
    start_gateway "$kind-n$i" "$config" "${listen[-1]}" --admin-listen "${admin[-1]}"
  done
  say "cluster over $kind ($bin on 127.0.0.1:$port): nodes ${listen[*]} (admin ${admin[*]})"

  export SDK_CLUSTER_BROKER="$kind"
  export SDK_CLUSTER_LISTEN="${listen[*]}"
  export SDK_CLUSTER_ADMIN="${admin[*]}"
  export SDK_GATEWAY_CONFIG="$config"
  if [ "$kind" = redis ]; then
    # For test_cluster.py, which kills redis-server and starts it again.
    export SDK_CLUSTER_REDIS_PIDFILE="$tmp/broker-$kind.pid"
    export SDK_CLUSTER_REDIS_ARGV
    SDK_CLUSTER_REDIS_ARGV=$(cat "$tmp/broker-$kind.argv")
    export SDK_CLUSTER_REDIS_LOG="$tmp/broker-$kind.log"
  else
    unset SDK_CLUSTER_REDIS_PIDFILE SDK_CLUSTER_REDIS_ARGV SDK_CLUSTER_REDIS_LOG
  fi
  if want python; then
    run_sdk "cluster $kind: python (centrifuge-python $(py_ver))" cluster-py \
      "$VENV/bin/python" "$SDK/test_cluster.py"
  fi
  if want js; then
    run_sdk "cluster $kind: js (centrifuge $(js_ver))" cluster-js node "$SDK/test_cluster.mjs"
  fi
  for i in 1 2 3; do stop_gateway "$kind-n$i"; done
  stop_pid "$(cat "$tmp/broker-$kind.pid")"
  rm -f "$tmp/broker-$kind.pid"
}

if [ "$CLUSTER" != 0 ]; then
  run_cluster redis
  run_cluster nats
fi

echo
for s in "${summaries[@]}"; do say "$s"; done
say "total $((SECONDS - T0))s"
echo "sdk: $total_pass passed, $total_fail failed"
if [ "$failed" -ne 0 ]; then
  die "see the FAIL lines above (gateway logs: rerun with the gateway's [log] level = \"debug\")"
fi
say "all SDK tests passed"
