#!/bin/bash
# test-kill.sh: the short pass of the kill test (scripts/kill-test.sh):
# fastqcow's metadata commands killed with SIGKILL at random moments of
# their run on an image made by qemu-img and qemu-io (1 GiB, 4 KiB
# clusters, 2000 scattered clusters, a snapshot), two kills each; every
# image left must pass `qemu-img check` (leaks allowed), keep the content
# of its active state and snapshots where the command must not change
# them, and be repaired clean by `check -r all`. The long pass, with
# qemu-img run the same way for comparison: scripts/long-kill.sh.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
# tmpfs when there is one: flushes cost nothing there, the kills land
# inside the commands' work rather than in their waits
base=${TEST_TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && base=/dev/shm
T=$(mktemp -d "$base/kill.XXXXXX") || exit 1
# not exec'd: the trap must run to remove the directory
trap 'rm -rf "$T"' EXIT
bash "$TEST_SRCDIR/../scripts/kill-test.sh" -t "$FASTQCOW" -k 2 -s 1G -n 2000 \
    -S "${KILL_SEED:-$(date +%s)}" \
    -o snap-create,snap-delete,snap-apply,amend-refbits-up,commit,rebase,check-r "$T"
