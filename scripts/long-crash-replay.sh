#!/usr/bin/env bash
# Long power-loss replay: tests/unit/test-crash with more seeds and more
# reordered/torn variants per log prefix, two more failed-flush passes and
# passes that fail one write of each kind of metadata before the crash.
#   scripts/long-crash-replay.sh [SEEDS] [FIRST-SEED]   (default 10 seeds)
# Each seed takes a few minutes on one core. Prints test-crash's RESULT line.
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BUILD_DIR:-build}
[ -x "$dir/tests/test-crash" ] || BUILD_DIR=$dir bash scripts/build.sh >/dev/null
seeds=${1:-10}
first=${2:-$(date +%s)}
FQ_CRASH_LONG=$seeds "$dir/tests/test-crash" "$first"
