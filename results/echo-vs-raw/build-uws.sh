#!/usr/bin/env bash
# Builds $BUILD/uws_echo (uws_echo.cpp: the uWebSockets echo server of
# run.sh and results/low-rate/run.sh, UWS_BIN=...) outside the repository.
#
# results/fanout/build.sh does the work it shares with the fan-out
# benchmark: it exports uWebSockets + uSockets at its pinned commits
# (UWS_COMMIT / USOCKETS_COMMIT, from UWS_GIT_DIR / USOCKETS_GIT_DIR, else
# /work/.mirror/uNetworking+{uWebSockets,uSockets}/repo, else a clone from
# GitHub) and compiles uSockets (epoll, no TLS, -O3 -flto) into
# $BUILD/obj/usockets, along with its own servers and clients. This script
# then links uws_echo.cpp against those objects with the same flags as
# uws_pubsub (uWebSockets' build.c flags: -march=native -O3 -flto).
#
#   results/echo-vs-raw/build-uws.sh          # -> /tmp/uws-build/uws_echo
#   BUILD=/tmp/x results/echo-vs-raw/build-uws.sh
#
# Environment: BUILD (default /tmp/uws-build), CXX, and fanout/build.sh's.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
export BUILD=${BUILD:-/tmp/uws-build}
CXX=${CXX:-g++}

NO_GATEWAY_BUILD=1 "$HERE/../fanout/build.sh"

UWS=$BUILD/src/uWebSockets
USOCK=$BUILD/src/uSockets
commit() { basename "$(ls "$1"/.exported-* | head -1)" | sed 's/^\.exported-//'; }
echo "+ $CXX ... uws_echo.cpp" >&2
$CXX -std=c++20 -march=native -O3 -flto=auto -DUWS_NO_ZLIB -DLIBUS_NO_SSL \
  -I"$UWS/src" -I"$USOCK/src" "$HERE/uws_echo.cpp" "$BUILD"/obj/usockets/*.o -o "$BUILD/uws_echo"
echo "uWebSockets $(commit "$UWS"), uSockets $(commit "$USOCK")" >"$BUILD/uws_echo.version"
echo "done: $BUILD/uws_echo ($(cat "$BUILD/uws_echo.version"))" >&2
