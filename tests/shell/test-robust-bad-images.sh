#!/bin/bash
# test-robust-bad-images.sh: every fastqcow subcommand against a corpus of
# damaged images (tests/robust/make-bad-images.py, generated here into a
# temporary directory): info (human and json), check, check -r all, map,
# bitmap --dump, compare, convert to qcow2 and raw, and io reading, writing and flushing
# (on copies). Each run must either succeed or exit non-zero with a
# message; never crash (exit >= 128), hang (timeout) or trip a sanitizer.
#
# After io wrote to a copy, an image whose `qemu-img check` could complete
# before must still be checkable (writes must not overwrite metadata of a
# damaged image with other metadata). For the classes check-*, `check`
# must exit as `qemu-img check` does, and `check -r all` must leave an
# image `qemu-img check` finds clean. The class check-rebuild (damaged
# refcount structures, which `check -r all` rebuilds) runs whole, and the
# repaired image must read as the undamaged one it was made from; where
# qemu-img's own check fails on the damage (exit 1), `check` reporting
# corruption (exit 2) is what is wanted.
#
# By default one image of each class, every 32nd of the rest and a
# third of check-rebuild run. A sanitizer run (FQ_TEST_QUICK=1; the whole
# corpus under ASan would take minutes) runs one image of each class and an
# eighth of check-rebuild, the secondary subcommands (info --output=json,
# bitmap --dump, compare, convert -O raw, io after the repair) on every
# other image. Which ones rotates with FQ_TEST_SEED
# (tests/shell/sample-lib.sh: a new seed each run, printed), so that
# successive runs walk every image; ROBUST_ALL=1 or FQ_TEST_FULL=1 runs all
# of them (scripts/robust-bad-images.sh). The last line gives the figures;
# ROBUST_REPORT=FILE also writes, per image class, how the runs ended.
# ROBUST_JOBS=N runs N images at once; ROBUST_CLASS=CLASS runs only the
# images of one class (all of them).
# SPDX-License-Identifier: MIT
set -u
. "$(dirname "${BASH_SOURCE[0]}")/sample-lib.sh" || exit 1   # sampling (FQ_TEST_SEED)
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io/python3 not installed"; exit 77; }
SRC=${TEST_SRCDIR:-$(dirname "$0")/..}
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/robust-bad.XXXXXX") || exit 1
trap '[ -n "${ROBUST_KEEP:-}" ] || rm -rf "$T"' EXIT
python3 "$SRC/robust/make-bad-images.py" "$T/img" >/dev/null || { echo "FAIL: corpus generation"; exit 1; }
TO=${ROBUST_TIMEOUT:-20}

# one_image NAME: run every subcommand on it; prints one line per run:
#   NAME CLASS SUBCOMMAND STATUS(ok|rejected|CRASH|HANG|SANITIZER|SILENT) EXIT
one_image() {
    local name=$1 cls=$2 base=${3:-} w="$T/w.$1" f="$T/img/$1" rc out
    mkdir -p "$w"
    # damaged LUKS headers: with the base's passphrase, opens go as far as
    # unlocking the key
    if [ "$cls" = luks-header ]; then export FASTQCOW_SECRET=pw; else unset FASTQCOW_SECRET; fi
    run() {
        local sub=$1; shift
        timeout -k 5 "$TO" "$FASTQCOW" "$@" >"$w/out" 2>"$w/err" </dev/null
        rc=$?
        local st=ok
        if grep -qE 'AddressSanitizer|LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer' "$w/err"; then
            st=SANITIZER
        elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            st=HANG
        elif [ $rc -ge 128 ]; then
            st=CRASH
        elif [ $rc -ne 0 ]; then
            if [ -s "$w/err" ] || [ -s "$w/out" ]; then st=rejected; else st=SILENT; fi
        fi
        echo "$name $cls $sub $st $rc"
        if [ $st != ok ] && [ $st != rejected ]; then
            { echo "--- $name: fastqcow $*: exit $rc"; head -c 3000 "$w/err"; } >>"$T/problems"
        fi
    }
    # the sanitizer run (FQ_TEST_QUICK) takes the secondary subcommands on
    # every other image (which half rotating with the seed): each still
    # runs on about half the classes, the plain run on all
    local all=1 num=${name%%-*}
    [ -n "${FQ_TEST_QUICK:-}" ] && [ $(( (10#$num + ${FQ_TEST_SEED:-0}) % 2 )) = 1 ] && all=""
    run info info "$f"
    [ -z "$all" ] || run info-json info --output=json "$f"
    run check check "$f"
    run map map --output=json "$f"
    [ -z "$all" ] || run bitmap-dump bitmap --dump --all "$f" on
    [ -z "$all" ] || run compare compare "$f" "$f"
    run convert convert -O qcow2 "$f" "$w/c.qcow2"
    [ -z "$all" ] || run convert-raw convert -O raw "$f" "$w/c.raw"
    rm -f "$w/c.qcow2" "$w/c.raw"
    cp "$f" "$w/rw.qcow2"
    qemu-img check "$w/rw.qcow2" >/dev/null 2>&1
    local before=$?
    run io io -c 'read 0 64k' -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k' -c flush \
        -c 'write -z 64k 64k' -c 'discard 128k 64k' "$w/rw.qcow2"
    if [ "$rc" -eq 0 ] && [ "$before" -ne 1 ] && [ "$before" -lt 63 ]; then
        qemu-img check "$w/rw.qcow2" >"$w/qc" 2>&1
        local after=$?
        if [ $after -eq 1 ] || [ $after -ge 63 ]; then
            echo "$name $cls io-damage WORSENED $after"
            { echo "--- $name: qemu-img check exit $before before io, $after after"; head -5 "$w/qc"; } >>"$T/problems"
        fi
    fi
    cp "$f" "$w/rw.qcow2"
    run check-repair check -r all "$w/rw.qcow2"
    [ -z "$all" ] || run io-after-repair io -c 'read 0 64k' -c 'write 0 4k' "$w/rw.qcow2"
    case $cls in check-*)
        # check finds what qemu-img finds; check -r all leaves it clean for qemu-img
        local q after
        qemu-img check "$f" >/dev/null 2>&1; q=$?
        timeout -k 5 "$TO" "$FASTQCOW" check "$f" >/dev/null 2>&1; rc=$?
        cp "$f" "$w/ck.qcow2"
        cp "$T/img/backing.qcow2" "$w/backing.qcow2"   # for overlays
        timeout -k 5 "$TO" "$FASTQCOW" check -r all "$w/ck.qcow2" >/dev/null 2>&1
        qemu-img check "$w/ck.qcow2" >"$w/qc" 2>&1; after=$?
        local same=0
        [ $rc -eq $q ] || { [ $cls = check-rebuild ] && [ $q = 1 ] && [ $rc = 2 ]; } && same=1
        if [ $same = 0 ] || [ $after -ne 0 ]; then
            echo "$name $cls check-vs-qemu MISMATCH $rc"
            { echo "--- $name: check exit $rc, qemu-img $q; after check -r all qemu-img exits $after"
              head -5 "$w/qc"; } >>"$T/problems"
        else
            echo "$name $cls check-vs-qemu ok $rc"
        fi
        if [ $cls = check-rebuild ]; then
            # every data cluster's content survived the rebuild
            cp "$T/img/base-$base.qcow2" "$w/base.qcow2"
            if (cd "$w" && qemu-img compare -q base.qcow2 ck.qcow2) >"$w/cmp" 2>&1; then
                echo "$name $cls data-intact ok 0"
            else
                echo "$name $cls data-intact MISMATCH 1"
                { echo "--- $name: after check -r all the image reads differently from base-$base"
                  head -3 "$w/cmp"; } >>"$T/problems"
            fi
        fi;;
    esac
    rm -rf "$w"
}
export -f one_image
export T TO FASTQCOW FQ_TEST_QUICK FQ_TEST_SEED

seed=""
if [ -n "${ROBUST_CLASS:-}" ]; then
    sel='$2 == "'"$ROBUST_CLASS"'" { print $1, $2, $4 }'
elif [ -n "${ROBUST_ALL:-}" ] || [ -n "${FQ_TEST_FULL:-}" ]; then
    sel='{ print $1, $2, $4 }'
else
    # image number SEED (modulo the class's size) of each class, every
    # RESTth of the others and every REBUILDth of check-rebuild, from SEED
    # on (two passes over the manifest: counts, then picks)
    seed=$FQ_TEST_SEED rest=32 rebuild=3
    [ -n "${FQ_TEST_QUICK:-}" ] && rest=0 rebuild=8
    sel='NR == FNR { c[$2]++; next }
         { i = n[$2]++; k++
           if (i == '"$seed"' % c[$2] || ($2 == "check-rebuild" && i % '"$rebuild"' == '"$seed"' % '"$rebuild"') ||
               ('"$rest"' > 0 && (k + '"$seed"') % '"$rest"' == 0))
           print $1, $2, $4 }'
fi
# (a "-" for an empty base: xargs -L would join a line that ends in a
# blank to the next one, and skip that image)
awk -F'\t' "$sel" "$T/img/MANIFEST" ${seed:+"$T/img/MANIFEST"} | awk '{ print $1, $2, (NF > 2 ? $3 : "-") }' |
    xargs -P "${ROBUST_JOBS:-2}" -L 1 bash -c 'one_image "$0" "$1" "$2"' >"$T/results"

nimg=$(awk '{ print $1 }' "$T/results" | sort -u | wc -l)
nrun=$(wc -l <"$T/results")
bad=$(awk '$4 != "ok" && $4 != "rejected"' "$T/results" | wc -l)
worse=$(awk '$4 == "WORSENED"' "$T/results" | wc -l)
if [ -s "$T/problems" ]; then
    head -c 20000 "$T/problems"
fi
awk '$4 != "ok" && $4 != "rejected" { print "FAIL:", $0 }' "$T/results" | head -50
# a bad image accepted by info must at least be checkable
if [ -n "${ROBUST_REPORT:-}" ]; then
    awk '{ k = $2 " " $3; n[k]++; s[k, $4]++; cls[$2] = 1; sub_[$3] = 1 }
         END { for (c in cls) { line = c; for (x in sub_) { k = c " " x;
               line = line sprintf(" %s=%d/%d", x, s[k, "ok"], n[k]) } print line } }' \
        "$T/results" | sort >"$ROBUST_REPORT"
fi
ok=$(awk '$4 == "ok"' "$T/results" | wc -l)
rej=$(awk '$4 == "rejected"' "$T/results" | wc -l)
crash=$(awk '$4 == "CRASH"' "$T/results" | wc -l)
hang=$(awk '$4 == "HANG"' "$T/results" | wc -l)
san=$(awk '$4 == "SANITIZER"' "$T/results" | wc -l)
silent=$(awk '$4 == "SILENT"' "$T/results" | wc -l)
mismatch=$(awk '$4 == "MISMATCH"' "$T/results" | wc -l)
echo "RESULT bad-images: images=$nimg classes=$(awk '{ print $2 }' "$T/results" | sort -u | wc -l) runs=$((nrun - worse)) ok=$ok rejected=$rej crashes=$crash hangs=$hang sanitizer=$san silent=$silent made_worse=$worse check_mismatch=$mismatch"
[ "$bad" -eq 0 ] || exit 1
exit 0
