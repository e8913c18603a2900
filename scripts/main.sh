#!/usr/bin/env bash
# The main job: set up, build, make the seed's four test images and print
# the seed's benchmark table (fastqcow vs qemu-img bench vs fio).
# Usage: scripts/main.sh [bench/seed-table options, e.g. --size 4G]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec bash bench/seed-table "$@"
