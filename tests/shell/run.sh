#!/bin/bash
# run.sh SCRIPT: how meson runs each shell test.
#
# In a sanitizer run (scripts/test.sh --asan sets FQ_TEST_QUICK), the leak
# check at the exit of every sanitized process costs more than the rest of
# a short command's run (it scans the process's memory, and page faults are
# dear in a VM), and a shell test starts hundreds of them. So the shell
# tests of the long-running commands (serve, mount, the exports and the
# NBD client, where a leak grows with the clients) always check for leaks,
# and of the others one in three does, which third rotating with
# FQ_TEST_SEED (printed by scripts/test.sh; the same seed, the same
# choice). The C tests, which drive the library itself, always check.
# SPDX-License-Identifier: MIT
script=$1
name=$(basename "$script" .sh)
if [ -n "${FQ_TEST_QUICK:-}" ] && [ -n "${FQ_TEST_SEED:-}" ]; then
    case $name in
        *serve*|*mount*|*export*|*nbd*) ;;
        *) h=$(printf '%s' "$name" | cksum | cut -d' ' -f1)
           if [ $(( (h + FQ_TEST_SEED) % 3 )) != 0 ]; then
               export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
               echo "run.sh: no leak check in $name this run (FQ_TEST_SEED=$FQ_TEST_SEED)"
           fi;;
    esac
fi
exec bash "$script"
