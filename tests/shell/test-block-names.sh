#!/bin/bash
# test-block-names.sh: image names as qemu takes them: json:{...}
# pseudo-file names (nested "file", dotted "file.filename", runtime
# options such as l2-cache-size, "backing": null, bad JSON and unknown
# keys), the file: prefix, names with colons, the null-co driver
# (size, read-zeroes; json: and --image-opts) through info, map and io,
# compared with qemu-img and qemu-io: same exit code, and the same output
# (or message) after the program's name. Then the safety of those names:
# a backing file name read from an image that is a json: name, a
# null-co:// or blkdebug: name, or a json: name hiding an nbd or
# blkdebug file, is refused, naming the option that allows it, unless
# --allow-backing-protocol allows it; plain backing names (relative,
# "..", absolute, /proc) open as before.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
command -v qemu-io >/dev/null || { echo "SKIP: qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/block-names.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
F=$FASTQCOW
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# same CMD ARGS...: qemu-img CMD and fastqcow CMD: same exit code and
# output, messages compared after the program's name
same() {
    qemu-img "$@" >q.out 2>&1; qrc=$?
    "$F" "$@" >f.out 2>&1; frc=$?
    sed -i 's/^qemu-img: //' q.out
    sed -i 's/^fastqcow: //' f.out
    [ $qrc = $frc ] || { bad "$*: exit $frc, qemu-img $qrc"; cat f.out; return; }
    cmp -s q.out f.out || { bad "$*"; diff q.out f.out; }
}
# same_io ARGS...: qemu-io and fastqcow io, timings filtered
same_io() {
    qemu-io "$@" >q.out 2>&1; qrc=$?
    "$F" io "$@" >f.out 2>&1; frc=$?
    sed -i -e 's/^qemu-io: //' -e 's/ops; .*/ops/' q.out
    sed -i -e 's/^fastqcow: //' -e 's/ops; .*/ops/' f.out
    [ $qrc = $frc ] || { bad "io $*: exit $frc, qemu-io $qrc"; cat f.out; return; }
    cmp -s q.out f.out || { bad "io $*"; diff q.out f.out; }
}

qemu-img create -q -f qcow2 a.qcow2 4M
qemu-io -c 'write -P 7 0 64k' -c 'write -P 9 1M 64k' a.qcow2 >/dev/null
qemu-img create -q -f raw r.raw 1M
cp a.qcow2 'x:y.qcow2'
mkdir d && cp a.qcow2 'd/p:q'

FILE='"file": {"driver": "file", "filename": "a.qcow2"}'
# json: names, good and bad
for n in "json:{\"driver\": \"qcow2\", $FILE}" \
    'json:{"driver":"qcow2","file.filename":"a.qcow2"}' 'json:{"file.filename":"a.qcow2"}' \
    'json:{"file":{"filename":"a.qcow2"}}' \
    "json:{\"driver\": \"qcow2\", \"l2-cache-size\": \"1M\", \"cache-clean-interval\": 5, $FILE}" \
    "json:{\"driver\": \"qcow2\", \"read-only\": true, \"backing\": null, $FILE}" \
    "json:{\"driver\": \"qcow2\", \"file\": {\"filename\": \"x:y.qcow2\"}}" \
    'json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"}}' \
    "json:{\"driver\": \"qcow2\", \"foo\": 1, $FILE}" \
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2","foo":1}}' \
    'json:{"driver":"qcow2","file":{"driver":"nope","filename":"a.qcow2"}}' \
    'json:{"driver":"nope","file":{"filename":"a.qcow2"}}' \
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"missing.qcow2"}}' \
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"r.raw"}}' \
    "json:{\"driver\": \"qcow2\", \"l2-cache-size\": \"abc\", $FILE}" \
    "json:{\"driver\": \"raw\", \"l2-cache-size\": \"1M\", \"file\": {\"filename\": \"r.raw\"}}" \
    'json:{"driver":"qcow2"}' 'json:{bad' 'json:' 'json:[]' 'json:{"a":tru}' \
    'json:{"driver":"qcow2","file":{"filename":"a.qcow2"}' \
    'json:{"driver":"qcow2","file":{"filename":"a.qcow2"}}x'; do
    same info "$n"
done
same info --output=json "json:{\"driver\": \"qcow2\", $FILE}"
same map --output=json "json:{\"driver\": \"qcow2\", \"l2-cache-size\": \"64k\", $FILE}"
same check "json:{\"driver\": \"qcow2\", $FILE}"
same_io -c 'read -P 7 0 64k' -c 'read -P 9 1M 64k' "json:{\"driver\": \"qcow2\", $FILE}"

# the file: prefix and colons: "x:..." names a protocol, "./x:..." and
# "file:x:..." a file
for n in file:a.qcow2 'x:y.qcow2' './x:y.qcow2' 'file:x:y.qcow2' 'd/p:q' 'nul:x' \
    file:missing.qcow2; do
    same info "$n"
done
same_io -c 'read -P 7 0 64k' 'file:x:y.qcow2'

# null-co: its own name, json: and --image-opts, size and read-zeroes
for n in 'null-co://' 'null-co:' 'null-co://x' 'json:{"driver":"null-co"}' \
    'json:{"driver":"null-co","size":1048576}' 'json:{"driver":"null-co","size":"1M"}' \
    'json:{"driver":"raw","file":{"driver":"null-co","size":65536}}' \
    'json:{"driver":"null-co","bogus":1}' \
    'json:{"driver":"qcow2","file":{"driver":"null-co"}}'; do
    same info "$n"
done
same map --output=json 'json:{"driver":"null-co","size":1048576,"read-zeroes":true}'
same info --image-opts 'driver=null-co,size=2M'
same_io -c 'read -P 0 0 64k' -c 'write -P 1 0 64k' -c 'read -P 0 0 64k' -c 'length' \
    'json:{"driver":"null-co","size":"1M","read-zeroes":true}'
same_io -c 'read -P 0 0 4k' -c 'length' --image-opts 'driver=null-co,size=1M,read-zeroes=on'
same_io -c 'write -z 0 1M' -c 'discard 0 64k' -c 'flush' -f raw 'null-co://'

# ---- backing names read from an image --------------------------------------
# refused: json: names (any), null-co://, blkdebug:, json: with nbd or
# blkdebug inside; each refusal names --allow-backing-protocol and what to
# give it; nothing is opened (no connection to the socket nobody serves)
refused() {  # BACKING-NAME WHAT-TO-ALLOW
    rm -f top.qcow2
    qemu-img create -q -f qcow2 -u -b "$1" -F raw top.qcow2 4M
    out=$("$F" info --backing-chain top.qcow2 2>&1) && bad "backing $1 opened unasked"
    grep -q -- "--allow-backing-protocol $2)" <<<"$out" || bad "backing $1: refusal: $out"
    out=$("$F" io -c 'read 0 4k' top.qcow2 2>&1) && bad "io: backing $1 opened unasked"
    grep -q -- "--allow-backing-protocol $2)" <<<"$out" || bad "io: backing $1 refusal: $out"
}
refused 'null-co://' null-co
refused 'json:{"driver":"null-co","read-zeroes":true}' json
refused 'json:{"driver":"raw","file":{"driver":"file","filename":"r.raw"}}' json
refused "blkdebug::$T/r.raw" blkdebug
refused "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"blkdebug\",\"image\":{\"filename\":\"$T/r.raw\"}}}" json
refused "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$T/nobody.sock\"}}}" json
refused "nbd+unix:///?socket=$T/nobody.sock" nbd
# json: allowed, what it hides is not
rm -f top.qcow2
qemu-img create -q -f qcow2 -u -b "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"blkdebug\",\"image\":{\"filename\":\"$T/r.raw\"}}}" -F raw top.qcow2 1M
out=$("$F" --allow-backing-protocol json info --backing-chain top.qcow2 2>&1) && bad "blkdebug in json opened"
grep -q -- '--allow-backing-protocol blkdebug)' <<<"$out" || bad "blkdebug in json: $out"
rm -f top.qcow2
qemu-img create -q -f qcow2 -u -b "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$T/nobody.sock\"}}}" -F raw top.qcow2 1M
out=$("$F" --allow-backing-protocol json info --backing-chain top.qcow2 2>&1) && bad "nbd in json opened"
grep -q -- '--allow-backing-protocol nbd)' <<<"$out" || bad "nbd in json: $out"
# allowed: they open and read as qemu-io reads them
rm -f top.qcow2
qemu-img create -q -f qcow2 -u -b 'json:{"driver":"raw","file":{"driver":"null-co","size":"4M","read-zeroes":true}}' -F raw top.qcow2 4M
qemu-io -c 'read -P 0 0 64k' top.qcow2 >q.out 2>&1 || bad "qemu-io over a null-co backing file"
"$F" --allow-backing-protocol json,null-co io -c 'read -P 0 0 64k' top.qcow2 >f.out 2>&1 \
    || bad "allowed json,null-co backing: $(cat f.out)"
FASTQCOW_ALLOW_BACKING_PROTOCOL=all "$F" io -c 'read -P 0 0 64k' top.qcow2 >/dev/null 2>&1 \
    || bad "allowed by the environment"
rm -f top.qcow2
qemu-img create -q -f qcow2 -u -b "json:{\"driver\":\"qcow2\",\"file\":{\"filename\":\"$T/a.qcow2\"}}" -F qcow2 top.qcow2 4M
"$F" --allow-backing-protocol json io -r -c 'read -P 9 1M 64k' top.qcow2 >f.out 2>&1 \
    || bad "allowed json backing: $(cat f.out)"
"$F" --allow-backing-protocol json info --backing-chain top.qcow2 >f.out 2>&1 \
    || bad "allowed json backing, info --backing-chain: $(cat f.out)"
# plain names still open as qemu-io opens them: relative to the image,
# through "..", absolute; "file:NAME" as written (relative to the
# current directory)
mkdir -p sub
for b in ../a.qcow2 "$T/a.qcow2" "file:../a.qcow2" "file:a.qcow2"; do
    rm -f sub/top.qcow2
    qemu-img create -q -f qcow2 -u -b "$b" -F qcow2 sub/top.qcow2 4M
    same_io -r -c 'read -P 9 1M 64k' sub/top.qcow2
done
# a backing name that is not an image (/proc): both refuse to read a qcow2 out of it
rm -f top.qcow2
qemu-img create -q -f qcow2 -u -b /proc/self/status -F qcow2 top.qcow2 4M
"$F" io -r -c 'read 0 4k' top.qcow2 >/dev/null 2>&1 && bad "/proc backing read as qcow2"

exit $fail
