#!/bin/bash
# test-datafile.sh: qcow2 images with an external data file (data_file,
# data_file_raw), both ways with qemu-img and qemu-io.
#  - images qemu-img makes (plain and raw data files) read by fastqcow as
#    qemu-io wrote them, then written by fastqcow (allocating, in place,
#    partial clusters, zeroing with and without unmap, discard) alongside a
#    raw model: qemu-img and fastqcow read them as the model, qemu-img
#    check finds them clean, and a raw data file stays the raw disk
#    (qemu-img compare -f raw DATAFILE MODEL);
#  - images fastqcow creates (create, convert -O qcow2 -o data_file=...)
#    pass qemu-img check, read back through qemu-io, and info, map and
#    check print what qemu-img prints for them (human and JSON);
#  - the same writes made by qemu-io and by fastqcow on twin images (plain,
#    raw, raw with extended L2) leave the same mapping and data file;
#  - resize carries the data file along; amend changes its name.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/datafile.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
clean() { qemu-img check -q "$1" || { bad "$2: qemu-img check"; qemu-img check "$1" 2>&1 | head -8; }; }
same() {
    qemu-img compare -q -f qcow2 -F raw "$1" "$2" || bad "$3: qemu-img reads $1 unlike $2"
    F compare -q -f qcow2 -F raw "$1" "$2" || bad "$3: fastqcow reads $1 unlike $2"
}
# the same qemu-io commands on the image (through `tool`) and on the model
both() {
    local tool=$1 img=$2 model=$3; shift 3
    local args=()
    for c in "$@"; do args+=(-c "$c"); done
    if [ "$tool" = fastqcow ]; then
        F io "${args[@]}" "$img" >/dev/null || bad "fastqcow io ${*} on $img"
    else
        qemu-io "${args[@]}" "$img" >/dev/null || bad "qemu-io ${*} on $img"
    fi
    # the model: zeroing and discard of whole clusters read as zeros
    local margs=()
    for c in "$@"; do
        case $c in
            "discard "*) set -- $c; margs+=(-c "write -z $2 $3") ;;
            "write -z -u "*) margs+=(-c "write -z ${c#write -z -u }") ;;
            *) margs+=(-c "$c") ;;
        esac
    done
    qemu-io -f raw "${margs[@]}" "$model" >/dev/null || bad "model $*"
}

WRITES=("write -P 0x5a 64k 128k" "write -P 0x5b 100k 10k" "write -P 0x5c 1M 4k"
        "write -z 2M 1M" "write -z -u 4M 128k" "discard 3M 64k" "write -P 0x5d 8188k 8k")
for raw in off on; do
    tag="qemu-made data_file_raw=$raw"
    rm -f q.qcow2 q.data m.raw
    qemu-img create -q -f qcow2 -o data_file=q.data,data_file_raw=$raw q.qcow2 16M || { bad "$tag: create"; continue; }
    qemu-img create -q -f raw m.raw 16M
    both qemu-io q.qcow2 m.raw "write -P 0x11 0 1M" "write -P 0x22 2M 64k" "write -P 0x33 5M 300k" \
        "write -z 3M 64k" "write -P 0x44 3M 4k"
    F io -c 'read -P 0x11 0 1M' -c 'read -P 0x22 2M 64k' -c 'read -P 0x33 5M 300k' \
        -c 'read -P 0x44 3M 4k' -c 'read -P 0 3076k 60k' q.qcow2 >/dev/null || bad "$tag: fastqcow read -P"
    same q.qcow2 m.raw "$tag: as qemu-io wrote it"
    both fastqcow q.qcow2 m.raw "${WRITES[@]}"
    same q.qcow2 m.raw "$tag: after fastqcow's writes"
    clean q.qcow2 "$tag"
    qemu-io -c 'read -P 0x5b 100k 10k' -c 'read -P 0x5d 8188k 8k' q.qcow2 >/dev/null ||
        bad "$tag: qemu-io read -P after fastqcow's writes"
    [ "$(stat -c %s q.qcow2)" -le 393216 ] || bad "$tag: guest data went into the qcow2 file ($(stat -c %s q.qcow2) bytes)"
    if [ $raw = on ]; then
        qemu-img compare -q -f raw -F raw q.data m.raw || bad "$tag: the data file is not the raw disk"
    fi
    # what check, info and map say: as qemu-img says it
    diff <(F check q.qcow2 2>&1) <(qemu-img check q.qcow2 2>&1) >/dev/null || bad "$tag: check output differs"
    diff <(F map q.qcow2) <(qemu-img map q.qcow2) || bad "$tag: map differs"
    diff <(F map --output=json q.qcow2) <(qemu-img map --output=json q.qcow2) || bad "$tag: map json differs"
    diff <(F info q.qcow2 | grep -v '^disk size') <(qemu-img info q.qcow2 | grep -v '^disk size') ||
        bad "$tag: info differs"
    diff <(F info --output=json q.qcow2 | grep -v actual-size) \
         <(qemu-img info --output=json q.qcow2 | grep -v actual-size) || bad "$tag: info json differs"
done

# created by fastqcow; the same writes through qemu-io on a qemu-made twin
for o in data_file_raw=off data_file_raw=on data_file_raw=on,extended_l2=on; do
    tag="fastqcow-made $o"
    raw=off
    case $o in *raw=on*) raw=on ;; esac
    rm -f f.qcow2 f.data q.qcow2 q.data m.raw
    F create -q -f qcow2 -o data_file=f.data,$o f.qcow2 16M || { bad "$tag: create"; continue; }
    qemu-img create -q -f qcow2 -o data_file=q.data,$o q.qcow2 16M
    clean f.qcow2 "$tag: new"
    [ "$(stat -c %s f.data)" = 16777216 ] || bad "$tag: data file not sized to the disk"
    qemu-img create -q -f raw m.raw 16M
    both fastqcow f.qcow2 m.raw "${WRITES[@]}"
    both qemu-io q.qcow2 m.raw "${WRITES[@]}"
    qemu-io -c 'read -P 0x5a 64k 36k' -c 'read -P 0x5b 100k 10k' -c 'read -P 0 2M 1M' f.qcow2 >/dev/null ||
        bad "$tag: qemu-io read -P"
    same f.qcow2 m.raw "$tag"
    clean f.qcow2 "$tag"
    diff <(qemu-img map --output=json f.qcow2) <(qemu-img map --output=json q.qcow2) ||
        bad "$tag: mapping differs from qemu-io's for the same writes"
    if [ $raw = on ]; then
        cmp -s f.data q.data || bad "$tag: data file differs from qemu-io's for the same writes"
        qemu-img compare -q -f raw -F qcow2 f.data f.qcow2 || bad "$tag: the data file is not the raw disk"
    fi
    F info f.qcow2 | grep -q '^    data file: f.data$' || bad "$tag: info does not name the data file"
done

# convert into an image with a raw data file
qemu-img create -q -f raw src.raw 8M
qemu-io -f raw -c 'write -P 0x61 0 1M' -c 'write -P 0x62 5M 300k' src.raw >/dev/null
F convert -O qcow2 -o data_file=c.data,data_file_raw=on src.raw c.qcow2 || bad "convert -o data_file"
clean c.qcow2 "convert"
qemu-img compare -q -f raw -F qcow2 src.raw c.qcow2 || bad "convert: qemu-img reads the copy unlike the source"
qemu-img compare -q -f raw -F raw src.raw c.data || bad "convert: the data file is not the raw disk"
qemu-img info c.qcow2 | grep -q '^    data file raw: true' || bad "convert: not data_file_raw"

# resize follows the data file; a raw one maps the new clusters
F resize c.qcow2 12M >/dev/null || bad "resize grow"
[ "$(stat -c %s c.data)" = 12582912 ] || bad "resize: data file not grown"
clean c.qcow2 "resize grow"
qemu-io -c 'read -P 0x62 5M 300k' -c 'read -P 0 8M 4M' c.qcow2 >/dev/null || bad "resize: content"
[ "$(qemu-img map --output=json c.qcow2 | grep -c '"data": false')" = 0 ] ||
    bad "resize: the new clusters of a raw data file are not mapped"
F resize --shrink c.qcow2 6M >/dev/null || bad "resize shrink"
[ "$(stat -c %s c.data)" = 6291456 ] || bad "resize: data file not shrunk"
clean c.qcow2 "resize shrink"

# amend: the name; data_file_raw can be dropped, not set
cp c.data c2.data
F amend -o data_file=c2.data,data_file_raw=off c.qcow2 || bad "amend data_file"
qemu-img info --output=json c.qcow2 | grep -q '"data-file": "c2.data"' || bad "amend: name not recorded"
qemu-img info c.qcow2 | grep -q '^    data file raw: false' || bad "amend: raw flag not dropped"
F amend -o data_file_raw=on c.qcow2 2>/dev/null && bad "amend: data_file_raw=on accepted"
qemu-io -c 'read -P 0x61 0 1M' c.qcow2 >/dev/null || bad "amend: qemu-io does not read the new data file"

# an overlay with a data file: commit into its backing file empties it
# (its data clusters were never counted: nothing of the qcow2 file freed),
# rebase onto nothing copies the backing data into the data file
qemu-img create -q -f qcow2 b.qcow2 4M
qemu-io -c 'write -P 0x71 0 4M' b.qcow2 >/dev/null
F create -q -f qcow2 -o data_file=t.data -b b.qcow2 -F qcow2 t.qcow2 4M || bad "overlay create"
F io -c 'write -P 0x72 64k 100k' t.qcow2 >/dev/null || bad "overlay write"
F commit -q t.qcow2 || bad "commit"
clean t.qcow2 "commit (overlay)"
clean b.qcow2 "commit (backing)"
qemu-io -c 'read -P 0x71 0 64k' -c 'read -P 0x72 64k 100k' -c 'read -P 0x71 164k 28k' b.qcow2 >/dev/null ||
    bad "commit: backing content"
F io -c 'write -P 0x73 1M 64k' t.qcow2 >/dev/null
F rebase -b '' t.qcow2 || bad "rebase"
clean t.qcow2 "rebase"
qemu-io -c 'read -P 0x72 64k 100k' -c 'read -P 0x73 1M 64k' -c 'read -P 0x71 2M 2M' t.qcow2 >/dev/null ||
    bad "rebase: content"
exit $fail
