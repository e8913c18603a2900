# sample-lib.sh: how the shell tests sample their heaviest loops (sourced,
# not a test). Three modes:
#   default         one case of each kind and a share of the rest
#   FQ_TEST_QUICK=1 (the sanitizer run) a smaller share
#   FQ_TEST_FULL=1  (scripts/long-tests.sh) every case
# Which cases a sample takes rotates with FQ_TEST_SEED (default: a new one
# each run, printed once; scripts/test.sh sets one for the whole suite), so
# that successive runs walk every case; `FQ_TEST_SEED=N` reproduces a run.
# SPDX-License-Identifier: MIT
if [ -z "${FQ_TEST_SEED:-}" ]; then
    FQ_TEST_SEED=$(( ($(date +%s%N) / 1000 + $$) % 1000000007 ))
fi
echo "sample: FQ_TEST_SEED=$FQ_TEST_SEED${FQ_TEST_FULL:+ (FQ_TEST_FULL: every case)}${FQ_TEST_QUICK:+ (FQ_TEST_QUICK)}"

# sample_pick I N: true for case number I (from 0) when the run takes one
# case in N (which one rotating with the seed); always true under
# FQ_TEST_FULL or for N <= 1.
sample_pick() {
    [ -n "${FQ_TEST_FULL:-}" ] && return 0
    [ "$2" -le 1 ] && return 0
    [ $(( ($1 + FQ_TEST_SEED) % $2 )) = 0 ]
}

# sample_share DEFAULT QUICK: the N for sample_pick in this mode (1 under
# FQ_TEST_FULL: every case).
sample_share() {
    if [ -n "${FQ_TEST_FULL:-}" ]; then echo 1
    elif [ -n "${FQ_TEST_QUICK:-}" ]; then echo "$2"
    else echo "$1"; fi
}
