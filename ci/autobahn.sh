#!/usr/bin/env bash
# Build the gateway (release) and run the Autobahn|TestSuite fuzzingclient against it
# via ../shared/tools/autobahn.sh (installs Python 2.7 + the suite privately; see its
# header). Reports go to target/autobahn/ (not committed); a summary is written to
# results/autobahn/summary.md (+ index.json if < 200 KB).
# Exit: non-zero if any case FAILED (autobahn.sh exits 1) or on setup errors (2).
#
# Overrides: AUTOBAHN_URL (default ws://127.0.0.1:9001/echo), GATEWAY_CONFIG
# (default ci/autobahn.toml), AUTOBAHN_SERVER_CMD (default: the release gateway),
# AUTOBAHN_SKIP_BUILD=1, plus every AUTOBAHN_* knob of the shared tool
# (AUTOBAHN_CASES, AUTOBAHN_NO_DEFLATE, AUTOBAHN_TIMEOUT, ...).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOL="$ROOT/../shared/tools/autobahn.sh"
[ -f "$TOOL" ] || { echo "ci/autobahn.sh: $TOOL not found (../shared must be checked out beside the repo)" >&2; exit 2; }

URL="${AUTOBAHN_URL:-ws://127.0.0.1:9001/echo}"
CONFIG="${GATEWAY_CONFIG:-$ROOT/ci/autobahn.toml}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
GATEWAY="$TARGET_DIR/release/gateway"
OUTDIR="$TARGET_DIR/autobahn/reports"   # wiped by the tool on every run
RESULTS="$ROOT/results/autobahn"

if [ -z "${AUTOBAHN_SERVER_CMD:-}" ]; then
  if [ "${AUTOBAHN_SKIP_BUILD:-0}" != 1 ]; then
    cargo build --release --locked -p gateway
  fi
  [ -x "$GATEWAY" ] || { echo "ci/autobahn.sh: $GATEWAY not built" >&2; exit 2; }
  AUTOBAHN_SERVER_CMD="$(printf 'exec %q --config %q' "$GATEWAY" "$CONFIG")"
fi
export AUTOBAHN_SERVER_CMD

# autobahn.sh only waits for *something* to accept on the port: make sure that is not
# a stale/dev server (config/dev.toml also uses 9001), or we would test the wrong one.
if python3 - "$URL" <<'PY'
import socket, sys, urllib.parse
u = urllib.parse.urlsplit(sys.argv[1])
try:
    socket.create_connection((u.hostname, u.port or 80), 1).close()
except OSError:
    sys.exit(1)
PY
then
  echo "ci/autobahn.sh: something already listens at $URL; stop it first" >&2
  exit 2
fi
export AUTOBAHN_OUTDIR="$OUTDIR"

rc=0
line="$(bash "$TOOL" "$URL")" || rc=$?
echo "$line"

if [ -f "$OUTDIR/index.json" ]; then
  mkdir -p "$RESULTS"
  python3 "$ROOT/ci/autobahn_summary.py" "$OUTDIR/index.json" "${line:-autobahn: no summary line (exit $rc)}" \
    > "$RESULTS/summary.md.tmp"
  mv "$RESULTS/summary.md.tmp" "$RESULTS/summary.md"
  if [ "$(stat -c %s "$OUTDIR/index.json")" -lt 204800 ]; then
    cp "$OUTDIR/index.json" "$RESULTS/index.json"
  else
    rm -f "$RESULTS/index.json"
  fi
  echo "ci/autobahn.sh: summary: results/autobahn/summary.md; full report: $OUTDIR/index.html"
fi
exit "$rc"
