#!/usr/bin/env bash
# Builds everything the fan-out benchmark needs, outside the repository:
#   $BUILD/uws_pubsub   uWebSockets pub/sub server (uws_pubsub.cpp)
#   $BUILD/harness      the receive-only epoll WebSocket client (harness.c)
#   $BUILD/publisher    the gateway API publisher (publisher.c)
# and, unless NO_GATEWAY_BUILD=1, `cargo build --release -p gateway` in the
# repository (its own target/ directory, as the README says).
#
# Third-party sources (uWebSockets + its uSockets submodule) are exported at
# pinned commits into $BUILD/src; nothing is written into the repository
# except cargo's target/. Where they come from, first that exists:
#   $UWS_GIT_DIR / $USOCKETS_GIT_DIR       bare git directories you provide
#   /work/.mirror/uNetworking+{uWebSockets,uSockets}/repo   (local mirrors)
#   git clone https://github.com/uNetworking/{uWebSockets,uSockets}  (network)
#
# Environment: BUILD (default /tmp/fanout-build), UWS_COMMIT, USOCKETS_COMMIT.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
BUILD=${BUILD:-/tmp/fanout-build}
# uWebSockets v20.79.0+ (master 2026-08-18) and the uSockets commit it pins as its submodule.
UWS_COMMIT=${UWS_COMMIT:-66dcff3dd48f0c19dd1703426365d062039321d0}
USOCKETS_COMMIT=${USOCKETS_COMMIT:-86097c490263ab662d62e8e7b541390bdec7d149}
CC=${CC:-gcc}
CXX=${CXX:-g++}

mkdir -p "$BUILD/src" "$BUILD/obj"
log() { printf '[build] %s\n' "$*" >&2; }
run() { log "+ $*"; "$@"; }

# export_repo NAME COMMIT GIT_DIR_OVERRIDE DEST
export_repo() {
  local name=$1 commit=$2 override=$3 dest=$4 gitdir=""
  if [[ -f "$dest/.exported-$commit" ]]; then
    log "$name $commit already in $dest"
    return
  fi
  if [[ -n "$override" ]]; then
    gitdir=$override
  elif [[ -d "/work/.mirror/uNetworking+$name/repo" ]]; then
    gitdir=/work/.mirror/uNetworking+$name/repo
  else
    gitdir=$BUILD/src/$name.git
    if [[ ! -d "$gitdir" ]]; then
      run git clone --bare --filter=blob:none "https://github.com/uNetworking/$name.git" "$gitdir"
    fi
  fi
  if ! git --git-dir="$gitdir" cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "build.sh: $gitdir has no commit $commit ($name); set ${name^^}_COMMIT or fetch it" >&2
    exit 1
  fi
  rm -rf "$dest"
  mkdir -p "$dest"
  log "exporting $name $commit from $gitdir"
  git --git-dir="$gitdir" archive "$commit" | tar -x -C "$dest"
  touch "$dest/.exported-$commit"
}

UWS=$BUILD/src/uWebSockets
USOCK=$BUILD/src/uSockets
export_repo uWebSockets "$UWS_COMMIT" "${UWS_GIT_DIR:-}" "$UWS"
export_repo uSockets "$USOCKETS_COMMIT" "${USOCKETS_GIT_DIR:-}" "$USOCK"

# uSockets: plain epoll, no TLS, the flags of its own Makefile (-O3 -flto).
OBJ=$BUILD/obj/usockets
rm -rf "$OBJ"
mkdir -p "$OBJ"
(
  cd "$OBJ"
  run $CC -DLIBUS_NO_SSL -std=c11 -I"$USOCK/src" -O3 -flto -c \
    "$USOCK"/src/*.c "$USOCK"/src/eventing/*.c "$USOCK"/src/crypto/*.c "$USOCK"/src/io_uring/*.c
)

# uWS server: the flags uWebSockets' own build.c uses for its examples
# (-march=native -O3 -flto), C++20, no zlib (compression is off anyway).
run $CXX -std=c++20 -march=native -O3 -flto=auto -DUWS_NO_ZLIB -DLIBUS_NO_SSL \
  -I"$UWS/src" -I"$USOCK/src" "$HERE/uws_pubsub.cpp" "$OBJ"/*.o -o "$BUILD/uws_pubsub"

run $CC -O2 -Wall -Wextra -o "$BUILD/harness" "$HERE/harness.c" -lm
run $CC -O2 -Wall -Wextra -o "$BUILD/publisher" "$HERE/publisher.c"

if [[ "${NO_GATEWAY_BUILD:-0}" != 1 ]]; then
  (cd "$REPO" && run cargo build --release -p gateway)
fi

log "done: $BUILD/uws_pubsub $BUILD/harness $BUILD/publisher"
