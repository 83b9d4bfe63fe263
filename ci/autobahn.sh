#!/usr/bin/env bash
# Build the gateway (release) and run the Autobahn|TestSuite fuzzingclient (the
# standard RFC 6455 conformance suite) against its /echo route. The suite is installed
# privately at pinned versions by ci/autobahn-install.sh (Python 2.7 + wstest in a
# cache dir under /tmp; see its header). Reports go to target/autobahn/reports/ (not
# committed; wiped each run), the run's spec and logs to target/autobahn/run/, and a
# summary to results/autobahn/summary.md (+ index.json if < 200 KB).
# Prints one summary line on stdout:
#   autobahn: N cases, P ok, F failed, X non-strict, U unimplemented, I informational
# Exit: 1 if any case FAILED (behavior FAILED, or behaviorClose FAILED/UNCLEAN, i.e.
# what the HTML report paints red); 2 on setup/run errors; 0 otherwise.
#
# Overrides:
#   AUTOBAHN_URL         server under test (default ws://127.0.0.1:9001/echo; loopback only)
#   GATEWAY_CONFIG       gateway config (default ci/autobahn.toml)
#   AUTOBAHN_SERVER_CMD  shell command starting the server under test (default: the
#                        release gateway with GATEWAY_CONFIG): run in its own process
#                        group (output in target/autobahn/run/server.log) and killed at exit
#   AUTOBAHN_SKIP_BUILD=1  do not run cargo build (the binary must exist)
#   AUTOBAHN_CASES       comma-separated case patterns (default "*"), e.g. "1.*,2.*,5.*"
#   AUTOBAHN_EXCLUDE     extra comma-separated patterns to exclude, e.g. "9.*"
#   AUTOBAHN_NO_DEFLATE=1  exclude the permessage-deflate cases 12.* and 13.*
#   AUTOBAHN_AGENT       agent name in the report (default "testee")
#   AUTOBAHN_STRICT=1    also exit 1 on NON-STRICT / WRONG CODE cases
#   AUTOBAHN_TIMEOUT     time limit for the wstest run, seconds (default 1800)
#   AUTOBAHN_WAIT        seconds to wait for the server port to accept (default 15)
#   AUTOBAHN_OUTDIR      report dir (default target/autobahn/reports; wiped each run,
#                        so it must be empty, absent, or hold an earlier report)
#   AUTOBAHN_ALLOW_NONLOCAL=1  permit a non-loopback host (only for the project's own
#                        test hosts in a network namespace it created)
#   AUTOBAHN_HOME, AUTOBAHN_PYTHON2, AUTOBAHN_DEBIAN_MIRROR: see ci/autobahn-install.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

log() { echo "ci/autobahn.sh: $*" >&2; }
die() { echo "ci/autobahn.sh: ERROR: $*" >&2; exit 2; }

URL="${AUTOBAHN_URL:-ws://127.0.0.1:9001/echo}"
CONFIG="${GATEWAY_CONFIG:-$ROOT/ci/autobahn.toml}"
AGENT="${AUTOBAHN_AGENT:-testee}"
TIMEOUT_S="${AUTOBAHN_TIMEOUT:-1800}"
WAIT_S="${AUTOBAHN_WAIT:-15}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
GATEWAY="$TARGET_DIR/release/gateway"
OUTDIR="${AUTOBAHN_OUTDIR:-$TARGET_DIR/autobahn/reports}"
case "$OUTDIR" in /*) ;; *) OUTDIR="$PWD/$OUTDIR" ;; esac
RUNDIR="$TARGET_DIR/autobahn/run"
RESULTS="$ROOT/results/autobahn"

command -v python3 >/dev/null 2>&1 || die "python3 is required"
for n in "$TIMEOUT_S" "$WAIT_S"; do
  [[ "$n" =~ ^[0-9]+$ ]] || die "AUTOBAHN_TIMEOUT and AUTOBAHN_WAIT must be whole seconds"
done

# --- target ----------------------------------------------------------------------
read -r HOST PORT < <(python3 - "$URL" <<'EOF'
import sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
try:
    port = u.port or 80
except ValueError:
    port = None
if u.scheme != "ws" or not u.hostname or port is None:
    sys.exit("ci/autobahn.sh: ERROR: AUTOBAHN_URL must look like ws://HOST:PORT[/path]")
print(u.hostname, port)
EOF
) || exit 2
case "$HOST" in
  127.*|localhost|::1) ;;
  *) [ "${AUTOBAHN_ALLOW_NONLOCAL:-0}" = 1 ] \
       || die "refusing non-loopback host '$HOST' (AUTOBAHN_ALLOW_NONLOCAL=1 is only for the project's own netns test hosts)" ;;
esac
port_open() {
  python3 -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()' \
    "$HOST" "$PORT" 2>/dev/null
}

if [ -e "$OUTDIR" ]; then
  [ -d "$OUTDIR" ] || die "AUTOBAHN_OUTDIR $OUTDIR is not a directory"
  # wiped before the run: only if it is empty or holds an earlier report
  [ -f "$OUTDIR/index.json" ] || [ -z "$(ls -A "$OUTDIR")" ] \
    || die "refusing to wipe $OUTDIR: neither empty nor an earlier report (no index.json)"
fi

# The run waits only for *something* to accept on the port: make sure that is not a
# stale/dev server (config/dev.toml also uses 9001), or we would test the wrong one.
port_open && die "something already listens at $HOST:$PORT; stop it first"

# --- server binary and test suite ---------------------------------------------------
if [ -z "${AUTOBAHN_SERVER_CMD:-}" ]; then
  if [ "${AUTOBAHN_SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --locked -p gateway || die "cargo build failed"
  fi
  [ -x "$GATEWAY" ] || die "$GATEWAY not built"
  [ -f "$CONFIG" ] || die "gateway config $CONFIG not found"
  AUTOBAHN_SERVER_CMD="$(printf 'exec %q --config %q' "$GATEWAY" "$CONFIG")"
fi
WSTEST="$(bash "$ROOT/ci/autobahn-install.sh")" || die "installing the Autobahn|TestSuite failed"

# --- server ------------------------------------------------------------------------
rm -rf "$RUNDIR"
mkdir -p "$RUNDIR"
port_open && die "something started listening at $HOST:$PORT meanwhile; stop it first"
SERVER_PID=""
server_alive() { kill -0 "$SERVER_PID" 2>/dev/null || kill -0 -- "-$SERVER_PID" 2>/dev/null; }
signal_server() { kill "-$1" -- "-$SERVER_PID" 2>/dev/null || true; kill "-$1" "$SERVER_PID" 2>/dev/null || true; }
cleanup() {   # SIGTERM the server's process group; SIGKILL after 5 s
  [ -n "$SERVER_PID" ] || return 0
  signal_server TERM
  local i
  for i in $(seq 50); do
    server_alive || break
    [ "$i" -lt 50 ] || signal_server KILL
    sleep 0.1
  done
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap cleanup EXIT
log "starting server: $AUTOBAHN_SERVER_CMD (output: $RUNDIR/server.log)"
# own process group (setsid), so cleanup stops it and anything it started
setsid bash -c "$AUTOBAHN_SERVER_CMD" > "$RUNDIR/server.log" 2>&1 &
SERVER_PID=$!
deadline=$((SECONDS + WAIT_S))
until port_open; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    tail -20 "$RUNDIR/server.log" >&2
    die "server command exited early"
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "nothing accepts connections on $HOST:$PORT after ${WAIT_S} s"
  sleep 0.2
done

# --- run ---------------------------------------------------------------------------
IFS=',' read -r -a INCL <<< "${AUTOBAHN_CASES:-*}"
IFS=',' read -r -a EXCL <<< "${AUTOBAHN_EXCLUDE:-}"
[ "${AUTOBAHN_NO_DEFLATE:-0}" = 1 ] && EXCL+=("12.*" "13.*")
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
python3 - "$URL" "$AGENT" "$OUTDIR" "${INCL[@]}" -- "${EXCL[@]}" > "$RUNDIR/spec.json" <<'EOF'
import json, sys
url, agent, outdir, *rest = sys.argv[1:]
i = rest.index("--")
clean = lambda l: [c.strip() for c in l if c.strip()]
print(json.dumps({"outdir": outdir, "servers": [{"agent": agent, "url": url}],
                  "cases": clean(rest[:i]) or ["*"], "exclude-cases": clean(rest[i + 1:]),
                  "exclude-agent-cases": {}}, indent=2))
EOF
log "running wstest fuzzingclient against $URL (cases=${INCL[*]} exclude=${EXCL[*]:-none}); log: $RUNDIR/wstest.log"
start=$SECONDS
rc=0
(cd "$RUNDIR" && timeout "$TIMEOUT_S" "$WSTEST" -m fuzzingclient -s spec.json > wstest.log 2>&1) || rc=$?
if [ "$rc" != 0 ]; then
  tail -20 "$RUNDIR/wstest.log" >&2
  die "wstest exited with $rc (124 = AUTOBAHN_TIMEOUT)"
fi
[ -f "$OUTDIR/index.json" ] || { tail -20 "$RUNDIR/wstest.log" >&2; die "no $OUTDIR/index.json produced"; }
log "wstest took $((SECONDS - start)) s; report: $OUTDIR/index.html"
cleanup

# --- summary -----------------------------------------------------------------------
strict=()
[ "${AUTOBAHN_STRICT:-0}" = 1 ] && strict=(--strict)
rc=0
line="$(python3 "$ROOT/ci/autobahn_summary.py" --line "${strict[@]}" "$OUTDIR/index.json")" || rc=$?
echo "$line"
mkdir -p "$RESULTS"
python3 "$ROOT/ci/autobahn_summary.py" "$OUTDIR/index.json" "${line:-autobahn: no summary line (exit $rc)}" \
  > "$RESULTS/summary.md.tmp"
mv "$RESULTS/summary.md.tmp" "$RESULTS/summary.md"
if [ "$(stat -c %s "$OUTDIR/index.json")" -lt 204800 ]; then
  cp "$OUTDIR/index.json" "$RESULTS/index.json"
else
  rm -f "$RESULTS/index.json"
fi
log "summary: results/autobahn/summary.md; full report: $OUTDIR/index.html"
exit "$rc"
