#!/usr/bin/env bash
# Install the Autobahn|TestSuite (wstest) privately, at pinned versions, and print the
# path of a `wstest` wrapper on stdout. Used by ci/autobahn.sh; runnable on its own.
#
#   ci/autobahn-install.sh            -> /tmp/ws-gateway-autobahn/bin/wstest
#
# Why it looks like this: autobahntestsuite (25.10.1 included) is Python-2.7-only
# code (implicit relative imports; autobahn 0.10.9, Twisted 19.10), and its sdist
# omits requirements.txt, so `pip install autobahntestsuite` on Python 3 "succeeds"
# with no dependencies and `wstest` dies with "No module named '_version'". Debian
# bookworm has no python2.7, so this script downloads Debian *bullseye*'s python2.7
# .debs (plus libssl1.1, libffi7 and the headers) with apt-get and a private apt
# state, checks them against the SHA-256 sums below, and unpacks them with `dpkg -x`
# under the cache dir: nothing is installed system-wide. It then makes a 2.7
# virtualenv with virtualenv 20.21.1 (the last release that can; its bundled seeds
# are pip 20.3.4, setuptools 44.1.1, wheel 0.37.1) and pip-installs the complete,
# pinned dependency set with --no-deps (then `pip check`), plus wsaccel (C masking
# and UTF-8 checks: 2-3x faster runs; best effort, it needs gcc).
# Idempotent: a stamp of every pin + a lock; ~40 s the first time, ~0 s after.
#
# Needs: bash, python3 with `venv` (Debian: python3-venv), apt-get + dpkg with the
# Debian archive keyring (Debian: debian-archive-keyring), flock; gcc for wsaccel.
# .ci/run installs the missing ones. amd64 only, unless AUTOBAHN_PYTHON2 is given.
#
# Environment:
#   AUTOBAHN_HOME     cache dir (default ${TMPDIR:-/tmp}/ws-gateway-autobahn)
#   AUTOBAHN_PYTHON2  use this python2.7 binary instead of Debian bullseye's
#   AUTOBAHN_DEBIAN_MIRROR  Debian mirror for bullseye (default: the first non-security
#                     mirror configured for apt on this machine)
# Exit: 0 installed (wrapper path on stdout); 2 on any error.
set -euo pipefail

AB_HOME="${AUTOBAHN_HOME:-${TMPDIR:-/tmp}/ws-gateway-autobahn}"
PY2_OVERRIDE="${AUTOBAHN_PYTHON2:-}"

log() { echo "autobahn-install: $*" >&2; }
die() { echo "autobahn-install: ERROR: $*" >&2; exit 2; }

# --- pins ------------------------------------------------------------------------
# Debian bullseye (11.11, final point release) packages: name version sha256 (amd64).
DEBS='python2.7             2.7.18-8+deb11u1 0b0b34b069d41970af75a4fe5b9012465e480fc0a0488ec16554d6299fe0b46e
python2.7-minimal     2.7.18-8+deb11u1 44f0cdc1a343303d31c55fcb3a6402cfe326adf749ec30e375e6e0c0c5f7c1f7
libpython2.7-stdlib   2.7.18-8+deb11u1 3e627d6d8992b853e000b8a4c09dda613fb767cdb711a2eac20ebc9f867b593c
libpython2.7-minimal  2.7.18-8+deb11u1 85833c92314011b89bbead6f9a5a7a360b5ee4f9b95e001225afead4ebf9f7d3
python2.7-dev         2.7.18-8+deb11u1 5394a986dffe6823b40a86edf4a4793e696eac097b5c9c52e3f47298f1edf51b
libpython2.7-dev      2.7.18-8+deb11u1 887034beb360069df8b519ad93893454ef3402415775a0466940fb73d6a8b8ca
libssl1.1             1.1.1w-0+deb11u1 aadf8b4b197335645b230c2839b4517aa444fd2e8f434e5438c48a18857988f7
libffi7               3.3-6            30ca89bfddae5fa6e0a2a044f22b6e50cd17c4bc6bc850c579819aeab7101f0f'
# Python 3 venv that only runs virtualenv (installed with --no-deps: the full set).
TOOLS_REQS='virtualenv==20.21.1
distlib==0.3.9
filelock==3.12.2
platformdirs==3.11.0'
# Python 2.7 venv: the suite's own pinned set (its requirements.txt for autobahn
# 0.10.9) and every transitive dependency, frozen; installed with --no-deps.
# (argparse: unittest2 wants its metadata, which only Debian's python2.7 ships.)
PY27_REQS='setuptools==44.0.0
autobahntestsuite==25.10.1
autobahn==0.10.9
txaio==2.1.0
Twisted==19.10.0
zope.interface==4.6.0
incremental==16.10.1
constantly==15.1.0
Automat==22.10.0
attrs==21.4.0
hyperlink==21.0.0
idna==2.10
PyHamcrest==1.10.1
typing==3.10.0.0
pyOpenSSL==19.1.0
cryptography==3.3.2
cffi==1.15.1
pycparser==2.21
enum34==1.1.10
ipaddress==1.0.23
six==1.16.0
service-identity==18.1.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
klein==17.10.0
Werkzeug==1.0.1
Jinja2==2.11.3
MarkupSafe==1.1.1
unittest2==1.1.0
argparse==1.4.0
linecache2==1.0.0
traceback2==1.4.0'
WSACCEL='wsaccel==0.6.2'

# Bump LAYOUT when the install steps change in a way the pins above do not show.
LAYOUT=1
STAMP="$(printf '%s\n' "$LAYOUT" "$DEBS" "$TOOLS_REQS" "$PY27_REQS" "$WSACCEL" "$PY2_OVERRIDE" \
  | sha256sum | cut -c1-16)"
PY27_ROOT="$AB_HOME/py27"
PY27_LIBS="$PY27_ROOT/usr/lib/x86_64-linux-gnu"
TOOLS="$AB_HOME/venv-tools"
VENV27="$AB_HOME/venv27"
WRAPPER="$AB_HOME/bin/wstest"

# Everything pip and virtualenv write goes under the cache dir, not ~/.cache or ~/.local.
export PIP_CACHE_DIR="$AB_HOME/pip-cache" VIRTUALENV_APP_DATA="$AB_HOME/virtualenv-app-data"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_PYTHON_VERSION_WARNING=1 PIP_NO_INPUT=1

# python2.7 from the bullseye .debs needs their libssl1.1/libffi7, kept in the cache dir
py2env() {
  if [ -z "$PY2_OVERRIDE" ]; then
    LD_LIBRARY_PATH="$PY27_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$@"
  else
    "$@"
  fi
}

debian_mirror() {
  if [ -n "${AUTOBAHN_DEBIAN_MIRROR:-}" ]; then echo "$AUTOBAHN_DEBIAN_MIRROR"; return; fi
  local m f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    m="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")"
    [ -z "$m" ] || { echo "$m"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    m="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) { print $i; exit } else break } }' "$f")"
    [ -z "$m" ] || { echo "$m"; return; }
  done
}

fetch_python27() {
  [ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] \
    || die "the pinned python2.7 .debs are amd64; give AUTOBAHN_PYTHON2=/path/to/python2.7"
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -f "$keyring" ] || die "$keyring missing (apt-get install debian-archive-keyring)"
  local mirror a="$AB_HOME/apt"
  mirror="$(debian_mirror)"
  [ -n "$mirror" ] || die "no Debian mirror configured for apt (set AUTOBAHN_DEBIAN_MIRROR)"
  rm -rf "$a" "$PY27_ROOT"
  mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/parts" "$a/debs" "$PY27_ROOT"
  echo "deb [signed-by=$keyring] $mirror bullseye main" > "$a/sources.list"
  local -a o=(-o "Dir::Etc::SourceList=$a/sources.list" -o "Dir::Etc::SourceParts=$a/parts"
              -o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache"
              -o "Dir::State::status=/dev/null" -o "APT::Sandbox::User=root")
  local -a pkgs=() sums=()
  local name ver sum
  while read -r name ver sum; do
    pkgs+=("$name=$ver")
    sums+=("$sum  ${name}_${ver}_amd64.deb")
  done <<< "$DEBS"
  log "fetching python2.7 from Debian bullseye at $mirror (private apt state in $a)"
  apt-get "${o[@]}" -qq update >&2 || die "apt-get update for bullseye failed"
  (cd "$a/debs" && apt-get "${o[@]}" -qq download "${pkgs[@]}" >&2) \
    || die "apt-get download of the pinned python2.7 .debs failed"
  (cd "$a/debs" && printf '%s\n' "${sums[@]}" | sha256sum --quiet -c - >&2) \
    || die "a downloaded .deb does not match its pinned SHA-256"
  local d
  for d in "$a/debs"/*.deb; do dpkg -x "$d" "$PY27_ROOT"; done
  rm -rf "$a"   # ~30 MB of bullseye indexes and the .debs, not needed any more
  [ -x "$PY27_ROOT/usr/bin/python2.7" ] || die "python2.7 missing after unpacking"
}

install() {
  log "installing Autobahn|TestSuite (wstest) into $AB_HOME"
  rm -f "$AB_HOME"/.installed-* "$WRAPPER"
  local py2="$PY2_OVERRIDE" cflags=""
  if [ -z "$py2" ]; then
    fetch_python27
    py2="$PY27_ROOT/usr/bin/python2.7"
    cflags="-I$PY27_ROOT/usr/include -I$PY27_ROOT/usr/include/python2.7"
  fi
  py2env "$py2" -c 'import sys, ssl, ctypes, zlib; assert sys.version_info[:2] == (2, 7)' \
    || die "$py2 is not a usable python2.7 (with ssl, ctypes and zlib)"

  rm -rf "$TOOLS" "$VENV27"
  python3 -m venv "$TOOLS" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
  printf '%s\n' "$TOOLS_REQS" > "$AB_HOME/requirements-tools.txt"
  "$TOOLS/bin/pip" install -q --no-deps -r "$AB_HOME/requirements-tools.txt" >&2 \
    || die "pip install of virtualenv failed"
  # (XDG_DATA_HOME: virtualenv makes its default app-data dir even when told another)
  XDG_DATA_HOME="$AB_HOME/xdg-data" \
    py2env "$TOOLS/bin/virtualenv" -q --no-periodic-update -p "$py2" "$VENV27" >&2 \
    || die "virtualenv for python2.7 failed"

  printf '%s\n' "$PY27_REQS" > "$AB_HOME/requirements-py27.txt"
  CFLAGS="$cflags" py2env "$VENV27/bin/pip" install -q --no-deps -r "$AB_HOME/requirements-py27.txt" >&2 \
    || die "pip install of the pinned testsuite failed"
  local out
  out="$(py2env "$VENV27/bin/pip" check 2>&1)" || { echo "$out" >&2; die "pip check: the pinned set is inconsistent"; }
  # best effort: wsaccel needs a C compiler and the python2.7 headers (the -dev .debs)
  CFLAGS="$cflags" py2env "$VENV27/bin/pip" install -q --no-deps "$WSACCEL" >/dev/null 2>&1 \
    || log "note: $WSACCEL did not build (gcc missing?); wstest falls back to slower pure-Python masking"

  mkdir -p "$AB_HOME/bin"
  # shellcheck disable=SC2016  # $LD_LIBRARY_PATH and $@ expand when the wrapper runs
  {
    echo '#!/usr/bin/env bash'
    echo '# written by ci/autobahn-install.sh'
    [ -n "$PY2_OVERRIDE" ] \
      || printf 'export LD_LIBRARY_PATH=%q"${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\n' "$PY27_LIBS"
    printf 'exec %q "$@"\n' "$VENV27/bin/wstest"
  } > "$WRAPPER.tmp"
  chmod +x "$WRAPPER.tmp"
  mv "$WRAPPER.tmp" "$WRAPPER"
  "$WRAPPER" --autobahnversion >/dev/null 2>&1 || die "wstest does not start"
  touch "$AB_HOME/.installed-$STAMP"
  log "installed: $("$WRAPPER" --autobahnversion 2>&1 | tr '\n' ' ')"
}

command -v python3 >/dev/null 2>&1 || die "python3 is required"
command -v flock >/dev/null 2>&1 || die "flock is required (Debian: util-linux)"
mkdir -p "$AB_HOME"
[ -O "$AB_HOME" ] || die "$AB_HOME belongs to another user"
exec 9>"$AB_HOME/.lock"
flock 9
if ! [ -f "$AB_HOME/.installed-$STAMP" ] || ! [ -x "$WRAPPER" ]; then
  install
fi
flock -u 9
echo "$WRAPPER"
