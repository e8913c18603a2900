#!/usr/bin/env bash
# Print the figures docs/RELIABILITY.md quotes, from real runs on this
# machine: the hostile-image corpus (every subcommand, every image), the
# fault-injection walk, the power-loss replay and the fuzz targets.
#
#   scripts/reliability-report.sh            # about 5 minutes
#   REPORT_SEEDS=10 FUZZ_SECONDS=1800 scripts/reliability-report.sh  # longer
#
# Uses build-asan/fastqcow for the corpus when it exists (scripts/test.sh
# --asan builds it), else build/fastqcow; ROBUST_TOOL=PATH overrides. Exits 1 if any run found a
# crash, a hang, a sanitizer report, a corruption or a lost write.
# SPDX-License-Identifier: MIT
set -uo pipefail
cd "$(dirname "$0")/.."
seeds=${REPORT_SEEDS:-1}
fuzz_secs=${FUZZ_SECONDS:-60}
dir=${BUILD_DIR:-build}
BUILD_DIR=$dir bash scripts/build.sh >/dev/null || exit 1
tool=$dir/fastqcow
[ -x build-asan/fastqcow ] && tool=build-asan/fastqcow
tool=${ROBUST_TOOL:-$tool}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
val() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" "$2" | tail -1; }

echo "# fastqcow reliability report"
echo
echo "$(date -u +%Y-%m-%d) on $(uname -m), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty tree)')"
echo

echo "## Hostile images ($tool)"
ROBUST_REPORT=$tmp/classes bash scripts/robust-bad-images.sh "$tool" >"$tmp/robust" 2>&1 || status=1
r=$tmp/robust
echo
echo "$(val images $r) images in $(val classes $r) classes of damage, $(val runs $r) subcommand runs:"
echo "$(val ok $r) succeeded, $(val rejected $r) refused with a message;"
echo "crashes $(val crashes $r), hangs $(val hangs $r), sanitizer reports $(val sanitizer $r),"
echo "silent failures $(val silent $r), images made worse by writes $(val made_worse $r)."
echo
echo "| class | info | check | map | io (read+write) | check -r all | convert |"
echo "|---|---|---|---|---|---|---|"
if [ -s "$tmp/classes" ]; then
  awk '{ printf "| %s |", $1
         for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
         printf " %s | %s | %s | %s | %s | %s |\n", v["info"], v["check"], v["map"], v["io"],
                v["check-repair"], v["convert"] }' "$tmp/classes"
fi
echo
echo "(ok/total per subcommand: the rest refused the image with a message.)"
echo

echo "## Fault injection"
FQ_FAULT_LONG=$seeds "$dir/tests/test-fault" 1 >"$tmp/fault" 2>"$tmp/fault.err" || status=1
f=$tmp/fault
echo
echo "$(val points $f) injection points walked ($(val runs $f) runs of a workload with one device"
echo "operation failing once or from then on, by position, kind and write tag, over $seeds seed(s));"
echo "$(val op_errors $f) requests failed cleanly; reopen failures $(val reopen_failures $f),"
echo "corruptions $(val corruptions $f), lost flushed writes $(val lost $f), sectors neither old"
echo "nor new $(val neither_old_nor_new $f), wrong reads $(val bad_reads $f), errors not reported"
echo "$(val silent_errors $f)."
echo

echo "## Power-loss replay"
FQ_CRASH_LONG=$seeds "$dir/tests/test-crash" 1 >"$tmp/crash" 2>"$tmp/crash.err" || status=1
c=$tmp/crash
echo
echo "$(val states $c) crash states replayed ($(val prefixes $c) log prefixes and $(val reordered $c)"
echo "reorderings with torn sectors, from $(val records $c) recorded writes and flushes, including"
echo "$(val table_writes $c) refcount table writes and failed flushes); $(val qemu_checked $c) of them also"
echo "checked by qemu-img. Open failures $(val open_failures $c), corruptions $(val corruptions $c),"
echo "lost flushed writes $(val lost $c), sectors neither old nor new $(val neither_old_nor_new $c),"
echo "failures to write after reopening $(val rw_failures $c)."
echo

echo "## Fuzzing ($fuzz_secs s per target)"
echo
if FUZZ_SECONDS=$fuzz_secs bash scripts/fuzz.sh >"$tmp/fuzz" 2>&1; then :; else status=1; fi
echo "| target | executions | coverage (edges) | features | corpus | crashes |"
echo "|---|---|---|---|---|---|"
grep '^RESULT fuzz' "$tmp/fuzz" | while read -r line; do
  echo "$line" >"$tmp/l"
  t=$(sed -n 's/.*target=\([^ ]*\).*/\1/p' "$tmp/l")
  echo "| $t | $(val execs $tmp/l) | $(val cov $tmp/l) | $(val ft $tmp/l) | $(val corpus $tmp/l) | $(val crashes $tmp/l) |"
done
grep -v '^RESULT' "$tmp/fuzz" | head -20
echo
for x in "$tmp/robust" "$tmp/fault" "$tmp/crash"; do
  grep -q 'FAIL' "$x" "$x.err" 2>/dev/null && { echo "## Failures"; grep -h FAIL "$x" "$x.err" | head -20; }
done
exit $status
