#!/usr/bin/env bash
# Long test pass: the suite (or the tests named) with FQ_TEST_FULL=1, which
# widens the loops the default run samples to their whole cross-product
# (every refcount-width pair of the amend test, every option and size of
# the create and interop tests with every check, every compat script...;
# grep tests/ for FQ_TEST_FULL). The default run keeps one case of each
# kind; this one runs them all. Minutes, not seconds.
#   scripts/long-tests.sh [TEST...]          # plain build (BUILD_DIR, default build)
#   BUILD_DIR=build-asan scripts/long-tests.sh test-feat-amend
# The damaged-image corpus whole is scripts/robust-bad-images.sh.
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
BUILD_DIR=$BUILD_DIR bash scripts/build.sh >/dev/null
export FQ_TEST_FULL=1
unset FQ_TEST_QUICK
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# the long loops run for minutes: a timeout multiplier of 4
meson test -C "$BUILD_DIR" --num-processes 2 --print-errorlogs -t 4 "$@"
