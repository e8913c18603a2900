#!/usr/bin/env bash
# Long power-loss and fault walk of defragmentation: tests/unit/test-defrag
# with TL_LONG=1 (every prefix of each write log, three reordered and torn
# variants of each, each state defragmented again; every fault of the
# fault walk), for several seeds.
#   scripts/long-defrag-crash.sh [SEEDS] [FIRST-SEED] [CASE-SUBSTRING]
# (default 3 seeds). Each seed takes several minutes on one core.
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BUILD_DIR:-build}
[ -x "$dir/tests/test-defrag" ] || BUILD_DIR=$dir bash scripts/build.sh >/dev/null
seeds=${1:-3}
first=${2:-$(date +%s)}
fail=0
for ((i = 0; i < seeds; i++)); do
    TL_LONG=1 "$dir/tests/test-defrag" $((first + i)) ${3:+"$3"} || fail=1
done
exit $fail
