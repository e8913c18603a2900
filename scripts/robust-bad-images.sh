#!/usr/bin/env bash
# Every fastqcow subcommand against the whole hostile-image corpus
# (tests/robust/make-bad-images.py), not just the sample the test suite
# runs. ROBUST_REPORT=FILE writes how each class ended.
#   scripts/robust-bad-images.sh [FASTQCOW]
# Use an ASan+UBSan build (scripts/test.sh --asan builds build-asan) to
# catch memory errors: scripts/robust-bad-images.sh build-asan/fastqcow
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
tool=${1:-${BUILD_DIR:-build}/fastqcow}
[ -x "$tool" ] || bash scripts/build.sh >/dev/null
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ROBUST_ALL=1 FASTQCOW=$(realpath "$tool") TEST_SRCDIR=$PWD/tests bash tests/shell/test-robust-bad-images.sh
