#!/bin/bash
# run.sh SCRIPT: how meson runs each shell test.
#
# In a sanitizer run (scripts/test.sh --asan sets FQ_TEST_QUICK), which
# comes after the plain run of every test, the shell tests are shared out
# to keep CI within its time: a sanitized process costs several times a
# plain one to start (and more to leave, with the leak check), and a shell
# test starts hundreds of them. So:
#   - the shell tests of the long-running commands (serve, mount, the
#     exports and the NBD client: where a leak or a stray write grows with
#     the clients) run every time, with the leak check;
#   - of the others, every other one runs, which half rotating with
#     FQ_TEST_SEED (printed by scripts/test.sh; the same seed, the same
#     choice), and half of those with the leak check: each runs sanitized
#     every second run, leak-checked every fourth;
#   - the C tests, which drive the library itself, all run, leak-checked.
# FQ_TEST_FULL=1 runs every shell test, leak-checked.
# SPDX-License-Identifier: MIT
script=$1
name=$(basename "$script" .sh)
if [ -n "${FQ_TEST_QUICK:-}" ] && [ -n "${FQ_TEST_SEED:-}" ] && [ -z "${FQ_TEST_FULL:-}" ]; then
    case $name in
        *serve*|*mount*|*export*|*nbd*) ;;
        *) . "$(dirname "$script")/sample-lib.sh" >/dev/null   # sample_pick
           # the test's place among the others: exact halves and quarters
           i=0
           for t in "$(dirname "$script")"/test-*.sh; do
               case $(basename "$t" .sh) in *serve*|*mount*|*export*|*nbd*) continue;; esac
               [ "$t" -ef "$script" ] && break
               i=$((i + 1))
           done
           if ! sample_pick "$i" 2; then
               echo "SKIP: sanitizer run: $name runs in every other one (FQ_TEST_SEED=$FQ_TEST_SEED)"
               exit 77
           fi
           if ! sample_pick "$i" 4; then
               export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
               echo "run.sh: no leak check in $name this run (FQ_TEST_SEED=$FQ_TEST_SEED)"
           fi;;
    esac
fi
exec bash "$script"
