#!/usr/bin/env bash
# Long kill test: every metadata command of fastqcow killed with SIGKILL at
# random moments, many times, on the image of issue 18 (64 GiB, 4 KiB
# clusters, 30000 scattered clusters written by qemu-io), then qemu-img
# run the same way on the commands it shares (snapshots, amend, resize,
# commit, rebase, convert -n, check -r) for comparison.
#   scripts/long-kill.sh [KILLS] [DIR]   (default 20 kills per command)
# Prints scripts/kill-test.sh's lines; the RESULT lines give the figures
# (docs/RELIABILITY.md). Takes about an hour on two cores.
# SPDX-License-Identifier: MIT
set -u
cd "$(dirname "$0")/.."
kills=${1:-20}
dir=${2:-/dev/shm/long-kill.$$}
BUILD_DIR=${BUILD_DIR:-build}
[ -x "$BUILD_DIR/fastqcow" ] || BUILD_DIR=$BUILD_DIR bash scripts/build.sh >/dev/null
seed=${KILL_SEED:-$(date +%s)}
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
rc=0
bash scripts/kill-test.sh -t "$PWD/$BUILD_DIR/fastqcow" -k "$kills" -s 64G -n 30000 -S "$seed" -K "$dir" || rc=1
bash scripts/kill-test.sh -t qemu-img -k "$kills" -s 64G -n 30000 -S "$seed" -K \
    -o snap-create,snap-delete,snap-apply,amend-refbits-up,amend-refbits-down,amend-compat,amend-lazy,resize-grow,resize-shrink,commit,rebase,rebase-unsafe,convert-n,check-r "$dir"
exit $rc
