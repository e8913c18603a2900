#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan+UBSan, tests/fuzz/) into
# ${FUZZ_BUILD_DIR:-build-fuzz} and run each for FUZZ_SECONDS seconds
# (default 30, what CI uses), starting from seeds made by
# tests/fuzz/make-seeds.sh plus the corpus kept from earlier runs.
#
#   scripts/fuzz.sh                       # 30 s per target
#   FUZZ_SECONDS=3600 scripts/fuzz.sh     # a long run (see docs/RELIABILITY.md)
#   FUZZ_TARGETS=fuzz-ops scripts/fuzz.sh # one target
#   FUZZ_JOBS=2 ...                       # libFuzzer -jobs/-workers
#   scripts/fuzz.sh --build-only          # build the targets, run nothing
#
# A crash, a leak, a sanitizer report, a timeout or an out-of-memory stops
# the run with exit 1 and leaves the input in $dir/fuzz-artifacts/; replay
# it with `$dir/tests/fuzz/TARGET FILE`. One RESULT line per target gives
# executions, coverage and the corpus size.
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-30}
dir=${FUZZ_BUILD_DIR:-build-fuzz}
targets=${FUZZ_TARGETS:-fuzz-image fuzz-ops fuzz-nbd}
jobs=${FUZZ_JOBS:-1}
command -v clang >/dev/null || { echo "fuzz: clang not installed (scripts/setup.sh)"; exit 1; }
if [ ! -f "$dir/build.ninja" ]; then
  CC=clang meson setup "$dir" -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
    -Dbuildtype=debugoptimized >/dev/null
fi
ninja -C "$dir" $(for t in $targets; do echo "tests/fuzz/$t"; done) >/dev/null
[ "${1:-}" != --build-only ] || exit 0
seeds=$dir/fuzz-seeds
[ -d "$seeds/fuzz-nbd" ] || bash tests/fuzz/make-seeds.sh "$seeds" >/dev/null
mkdir -p "$dir/fuzz-artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for t in $targets; do
  corpus=$dir/fuzz-corpus/$t
  log=$dir/fuzz-$t.log
  mkdir -p "$corpus"
  tsecs=$secs
  case $t in
    fuzz-image) maxlen=262144 ;;
    fuzz-nbd) maxlen=16384; tsecs=$(( (secs + 1) / 2 )) ;;  # a small parser: half the time
    *) maxlen=4096 ;;
  esac
  extra=()
  [ "$jobs" -gt 1 ] && extra=(-jobs="$jobs" -workers="$jobs")
  rc=0
  "$dir/tests/fuzz/$t" -max_total_time="$tsecs" -rss_limit_mb=2048 -timeout=60 \
      -max_len="$maxlen" -print_final_stats=1 -artifact_prefix="$dir/fuzz-artifacts/$t-" \
      "${extra[@]}" "$corpus" "$seeds/$t" >"$log" 2>&1 || rc=$?
  execs=$(cat "$log" fuzz-*.log 2>/dev/null | grep -h 'stat::number_of_executed_units' |
          awk '{ s += $2 } END { print s + 0 }' || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{ print $2 }' || true)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | awk '{ print $2 }' || true)
  n=$(ls "$corpus" | wc -l)
  if [ "$rc" -ne 0 ]; then
    status=1
    echo "fuzz: $t FAILED (exit $rc); log $log"
    grep -E 'ERROR|SUMMARY|Test unit written' "$log" | head -10
  fi
  echo "RESULT fuzz: target=$t seconds=$tsecs execs=$execs cov=${cov:-0} ft=${ft:-0} corpus=$n crashes=$((rc != 0))"
done
exit $status
