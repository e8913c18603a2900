#!/usr/bin/env bash
# Set up, build and run every test. With --asan, build with ASan+UBSan;
# with --build-only, set up and build, no tests (.ci/run builds the next
# phase's tree that way while a phase's tests run).
# Usage: scripts/test.sh [--asan] [--werror] [--build-only]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=(); dir=build; build_only=""
for a in "$@"; do
  case "$a" in
    --asan) dir=build-asan; args+=(-Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debugoptimized)
            # gcc: UBSan's runtime linked in, not loaded as a library (the
            # suite starts thousands of sanitized processes, and in a VM
            # their start costs more than their work; meson.build links
            # the sanitized programs position-dependent for the same reason)
            if ${CC:-cc} -v 2>&1 | grep -q '^gcc version'; then
                args+=(-Dc_link_args=-static-libubsan)
            fi
            # the shell tests sample their heaviest loops (the plain run
            # covers them whole)
            export FQ_TEST_QUICK=1 ;;
    --werror) args+=(-Dwerror=true) ;;
    --build-only) build_only=1 ;;
    *) echo "unknown option $a" >&2; exit 2 ;;
  esac
done
BUILD_DIR=$dir bash scripts/build.sh "${args[@]}"
[ -z "$build_only" ] || exit 0
# one sampling seed for the whole run (tests/shell/sample-lib.sh): a new one
# each run, so that successive runs walk every case; FQ_TEST_SEED=N again
# reproduces this run's samples
export FQ_TEST_SEED=${FQ_TEST_SEED:-$(( ($(date +%s%N) / 1000 + $$) % 1000000007 ))}
echo "test.sh: FQ_TEST_SEED=$FQ_TEST_SEED${FQ_TEST_QUICK:+ FQ_TEST_QUICK=1}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
set +e
meson test -C "$dir" --num-processes 2 --print-errorlogs | tee "$dir/test-summary.txt"
rc=${PIPESTATUS[0]}
set -e
# one plain closing line for whoever reads the log
awk '/^Ok:/ {ok=$2} /^Fail:/ {f+=$2} /^Timeout:/ {f+=$2} /^Unexpected Pass:/ {f+=$3}
     /^Skipped:/ {sk=$2} END {printf "%d passed, %d failed, %d skipped\n", ok, f, sk}' \
    "$dir/test-summary.txt"
exit "$rc"
