#!/usr/bin/env bash
# Long power-loss replay: tests/unit/test-crash with more seeds and more
# reordered/torn variants per log prefix, two more failed-flush passes and
# passes that fail one write of each kind of metadata before the crash;
# then tests/unit/test-feat-crash (every metadata command) with three
# reorderings per prefix, qemu-img check on every prefix, the snapshots
# read in every state, and images of 2048 L2 tables.
#   scripts/long-crash-replay.sh [SEEDS] [FIRST-SEED]   (default 10 seeds)
# Each test-crash seed takes a few minutes on one core, test-feat-crash
# about two hours. Prints the RESULT lines.
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BUILD_DIR:-build}
[ -x "$dir/tests/test-crash" ] || BUILD_DIR=$dir bash scripts/build.sh >/dev/null
seeds=${1:-10}
first=${2:-$(date +%s)}
rc=0
FQ_CRASH_LONG=$seeds "$dir/tests/test-crash" "$first" || rc=1
FQ_CRASH_LONG=1 "$dir/tests/test-feat-crash" "$first" || rc=1
exit $rc
