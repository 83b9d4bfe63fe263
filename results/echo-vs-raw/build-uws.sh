#!/usr/bin/env bash
# Builds $BUILD/uws_echo (uws_echo.cpp: the uWebSockets echo server of
# run.sh and results/low-rate/run.sh, UWS_BIN=...) outside the repository.
#
# The uWebSockets + uSockets sources and flags are those of
# results/fanout/build.sh: the same pinned commits (read from that script,
# so they are set in one place; UWS_COMMIT / USOCKETS_COMMIT override), the
# same sources (UWS_GIT_DIR / USOCKETS_GIT_DIR, else
# /work/.mirror/uNetworking+{uWebSockets,uSockets}/repo, else a clone from
# GitHub), uSockets with its Makefile's flags (epoll, no TLS, -O3 -flto) and
# the server with uWebSockets' build.c flags (-march=native -O3 -flto).
#
#   results/echo-vs-raw/build-uws.sh          # -> /tmp/uws-build/uws_echo
#   BUILD=/tmp/x results/echo-vs-raw/build-uws.sh
#
# Environment: BUILD (default /tmp/uws-build), UWS_COMMIT, USOCKETS_COMMIT,
# UWS_GIT_DIR, USOCKETS_GIT_DIR, CC, CXX.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
FANOUT=$HERE/../fanout/build.sh
BUILD=${BUILD:-/tmp/uws-build}
pinned() { sed -n "s/^$1=\${$1:-\([0-9a-f]\{40\}\)}\$/\1/p" "$FANOUT"; }
UWS_COMMIT=${UWS_COMMIT:-$(pinned UWS_COMMIT)}
USOCKETS_COMMIT=${USOCKETS_COMMIT:-$(pinned USOCKETS_COMMIT)}
if [[ -z "$UWS_COMMIT" || -z "$USOCKETS_COMMIT" ]]; then
  echo "build-uws.sh: no pinned commits found in $FANOUT; set UWS_COMMIT and USOCKETS_COMMIT" >&2
  exit 1
fi
CC=${CC:-gcc}
CXX=${CXX:-g++}

mkdir -p "$BUILD/src" "$BUILD/obj"
log() { printf '[build-uws] %s\n' "$*" >&2; }
run() { log "+ $*"; "$@"; }

# export_repo NAME COMMIT GIT_DIR_OVERRIDE DEST (as in fanout/build.sh)
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
    echo "build-uws.sh: $gitdir has no commit $commit ($name); set ${name^^}_COMMIT or fetch it" >&2
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

OBJ=$BUILD/obj/usockets
rm -rf "$OBJ"
mkdir -p "$OBJ"
(
  cd "$OBJ"
  run $CC -DLIBUS_NO_SSL -std=c11 -I"$USOCK/src" -O3 -flto -c \
    "$USOCK"/src/*.c "$USOCK"/src/eventing/*.c "$USOCK"/src/crypto/*.c "$USOCK"/src/io_uring/*.c
)
run $CXX -std=c++20 -march=native -O3 -flto=auto -DUWS_NO_ZLIB -DLIBUS_NO_SSL \
  -I"$UWS/src" -I"$USOCK/src" "$HERE/uws_echo.cpp" "$OBJ"/*.o -o "$BUILD/uws_echo"
echo "uWebSockets $UWS_COMMIT, uSockets $USOCKETS_COMMIT" >"$BUILD/uws_echo.version"
log "done: $BUILD/uws_echo (uWebSockets $UWS_COMMIT, uSockets $USOCKETS_COMMIT)"
