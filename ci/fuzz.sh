#!/usr/bin/env bash
# Fuzz smoke run of wsproto (fuzz/, cargo fuzz + libFuzzer): builds every
# target, then runs each over its committed corpus (fuzz/corpus/<target>) and
# hand-written seeds (fuzz/seeds/<target>) plus a fixed time budget. Fails
# (non-zero exit) if any target crashes, leaks past its limits or hangs; the
# crashing input is left under fuzz/artifacts/<target>/. One summary line per
# target. Method and long-run results: results/fuzzing.md.
#
#   ci/fuzz.sh                       all targets, FUZZ_SECONDS each
#   ci/fuzz.sh codec_server session  only these targets
#   FUZZ_SECONDS=60                  time budget per target (default 8: the
#                                    whole run stays within ~2 minutes)
#   FUZZ_SANITIZER=address           ASan build (default none: wsproto has no
#                                    unsafe code, and none runs ~5x faster)
#
# Needs only cargo (the stable toolchain) and a C++ compiler for libFuzzer,
# which libfuzzer-sys builds from source. cargo fuzz passes nightly flags
# (-Zsanitizer, sancov passes); RUSTC_BOOTSTRAP=1 lets stable accept them.
set -euo pipefail

CARGO_FUZZ_VERSION=0.13.2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ_DIR="$ROOT/fuzz"
BUDGET="${FUZZ_SECONDS:-8}"
SANITIZER="${FUZZ_SANITIZER:-none}"
export RUSTC_BOOTSTRAP=1

start=$SECONDS

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "ci/fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION"
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list --fuzz-dir "$FUZZ_DIR")
fi
[ "${#targets[@]}" -gt 0 ] || { echo "ci/fuzz.sh: no fuzz targets found" >&2; exit 1; }

# The committed lock file is used as is (cargo fuzz has no --locked).
cargo fetch --locked --manifest-path "$FUZZ_DIR/Cargo.toml"
build_start=$SECONDS
cargo fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER"
echo "ci/fuzz.sh: built ${#targets[@]} targets (sanitizer $SANITIZER) in $((SECONDS - build_start))s"

# New corpus entries go to a scratch directory, never into the committed corpus.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

# Value of `key: value` in libFuzzer's last status line ("cov: 123 ft: 456 ...").
field() {
  sed -n 's/.*DONE .* '"$1"': \([^ ]*\).*/\1/p' "$2" | tail -n 1
}

failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/seeds/$t"
  log="$scratch/$t.log"
  t0=$SECONDS
  rc=0
  cargo fuzz run --fuzz-dir "$FUZZ_DIR" --sanitizer "$SANITIZER" "$t" \
    "$scratch/$t" "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/seeds/$t" -- \
    -max_total_time="$BUDGET" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1 || rc=$?
  secs=$((SECONDS - t0))
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
  if [ "$rc" -eq 0 ] && grep -qa 'DONE ' "$log"; then
    line="$(printf 'fuzz %-20s ok     %9s execs in %3ss  cov %-5s ft %-6s corpus %s' \
      "$t" "${execs:-?}" "$secs" "$(field cov "$log")" "$(field ft "$log")" "$(field corp "$log")")"
  else
    line="$(printf 'fuzz %-20s FAILED (exit %s after %ss)' "$t" "$rc" "$secs")"
    failed+=("$t")
    echo "---- $t: the panic, then the last 40 lines of the libFuzzer log ----"
    grep -a -m 1 -A 2 'panicked at' "$log" || true
    tail -n 40 "$log"
    echo "---- reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz --sanitizer $SANITIZER $t <input under fuzz/artifacts/$t/>"
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "==> ci/fuzz.sh: ${#targets[@]} targets, ${BUDGET}s each, sanitizer $SANITIZER, $((SECONDS - start))s total"
printf '%s\n' "${summary[@]}"
[ "${#failed[@]}" -eq 0 ] || echo "==> ci/fuzz.sh: FAILED: ${failed[*]}"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ "${#failed[@]}" -eq 0 ]
