#!/usr/bin/env bash
# Long fault-injection walk: tests/unit/test-fault over several seeds, also
# failing by kind (reads, writes, flushes) and by write tag (data, header,
# L1, L2, refcount block, refcount table), once and from then on.
#   scripts/fault-walk-long.sh [SEEDS] [FIRST-SEED]   (default 10 seeds)
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${BUILD_DIR:-build}
[ -x "$dir/tests/test-fault" ] || BUILD_DIR=$dir bash scripts/build.sh >/dev/null
seeds=${1:-10}
first=${2:-$(date +%s)}
FQ_FAULT_LONG=$seeds "$dir/tests/test-fault" "$first"
