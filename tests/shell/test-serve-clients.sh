#!/bin/bash
# test-serve-clients.sh: `fastqcow serve` with real clients, beside
# qemu-nbd serving the same image: for every kind of image the library
# reads (a three-layer backing chain with zero clusters and discards,
# compressed clusters, extended L2 with subclusters, compat 0.10, internal
# snapshots, a sparse raw file, an odd size) the content read back through
# nbdcopy and qemu-img convert equals `qemu-img convert -O raw`, and
# nbdinfo --map (base:allocation), --map=qemu:allocation-depth and
# nbdinfo --json's flags and sizes equal qemu-nbd's. Then writes through
# qemu-io (-P patterns), nbdcopy both ways with four connections, and
# qemu-img info/map/compare on nbd:// URIs; the image is checked clean.
# SPDX-License-Identifier: MIT
set -u
. "$TEST_SRCDIR/shell/serve-lib.sh"
for p in qemu-img qemu-io qemu-nbd nbdinfo nbdcopy; do
    command -v $p >/dev/null || { echo "SKIP: $p not installed"; exit 77; }
done
cd "$T" || exit 1
qio() { qemu-io "$@" >/dev/null || bad "qemu-io $*"; }

# ---- images ----
qemu-img create -q -f raw base.raw 6M
qio -f raw -c 'write -P 1 0 1M' -c 'write -P 2 3M 512k' base.raw
qemu-img create -q -f qcow2 -b base.raw -F raw mid.qcow2 6M
qio -f qcow2 -c 'write -P 5 64k 64k' -c 'write -z 128k 64k' -c 'write -P 6 2M 64k' \
    -c 'discard 3M 64k' -c 'write -z 4M 128k' mid.qcow2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 chain.qcow2 8M
qio -f qcow2 -c 'write -P 9 96k 8k' -c 'write -z 2M 32k' -c 'write -P 10 7M 100k' chain.qcow2
qemu-img convert -q -c -O qcow2 -o cluster_size=4k chain.qcow2 compressed.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k extl2.qcow2 4M
qio -f qcow2 -c 'write -P 3 2k 3k' -c 'write -z 70k 2k' -c 'write -P 4 1M 100k' extl2.qcow2
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 4M
qio -f qcow2 -c 'write -P 7 0 70k' -c 'write -z 1M 64k' -c 'write -P 8 2M 4k' v2.qcow2
qemu-img create -q -f qcow2 snap.qcow2 4M
qio -f qcow2 -c 'write -P 11 0 128k' snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
qio -f qcow2 -c 'write -P 12 64k 128k' -c 'discard 0 64k' snap.qcow2
truncate -s 5M sparse.raw
qio -f raw -c 'write -P 13 1M 128k' -c 'write -P 14 4M 4k' sparse.raw
qemu-img create -q -f qcow2 odd.qcow2 1000000
qio -f qcow2 -c 'write -P 15 900000 99999' odd.qcow2

# ---- content, maps and flags beside qemu-nbd ----
# the flags nbdinfo --json reports, without content and URI lines
flags() { grep -vE '"(content|uri)"' | sed 's/,$//'; }
for img in chain.qcow2:qcow2 compressed.qcow2:qcow2 extl2.qcow2:qcow2 v2.qcow2:qcow2 \
           snap.qcow2:qcow2 sparse.raw:raw odd.qcow2:qcow2; do
    f=${img%%:*} fmt=${img##*:}
    qemu-img convert -f $fmt -O raw "$f" "$f.ref"
    start_fq fq -r -t -A -f $fmt "$f" || { bad "serve $f"; continue; }
    nbdinfo --json "$(uri fq)" | flags >"$f.fq.json"
    nbdinfo --map "$(uri fq)" >"$f.fq.map" || bad "$f: nbdinfo --map"
    nbdinfo --map=qemu:allocation-depth "$(uri fq)" >"$f.fq.depth" || bad "$f: nbdinfo --map=depth"
    nbdcopy "$(uri fq)" "$f.copy" || bad "$f: nbdcopy"
    cmp -s "$f.copy" "$f.ref" || bad "$f: nbdcopy read differs from qemu-img convert"
    if [ "$f" = chain.qcow2 ]; then
        qemu-img convert -f raw -O raw "$(uri fq)" "$f.conv" || bad "$f: qemu-img convert nbd"
        cmp -s "$f.conv" "$f.ref" || bad "$f: qemu-img convert from NBD differs"
    fi
    stop fq
    start_qemu q -r -t -A -f $fmt "$f" || { bad "qemu-nbd $f"; continue; }
    nbdinfo --json "$(uri q)" | flags >"$f.q.json"
    nbdinfo --map "$(uri q)" >"$f.q.map"
    nbdinfo --map=qemu:allocation-depth "$(uri q)" >"$f.q.depth"
    stop q
    for k in json map depth; do
        cmp -s "$f.q.$k" "$f.fq.$k" || { bad "$f: nbdinfo $k differs from qemu-nbd's"; diff "$f.q.$k" "$f.fq.$k" | head; }
    done
done

# ---- writes ----
qemu-img create -q -f qcow2 -b base.raw -F raw rw.qcow2 6M
cp base.raw rw.ref
start_fq rw -t -e 4 rw.qcow2 || bad "serve rw"
U=$(uri rw)
qemu-io -f raw -c 'write -P 0x21 100k 300k' -c 'write -P 0x22 1M 64k' -c 'write -z 2M 1M' \
    -c 'discard 3M 64k' -c 'aio_write -P 0x23 4M 4k' -c 'aio_write -P 0x24 4100k 8k' -c 'aio_flush' \
    -c 'read -P 0x21 100k 300k' -c 'read -P 0x22 1M 64k' -c 'read -P 0 2M 1M' \
    -c 'read -P 0x24 4100k 8k' -c 'read -P 0x23 -s 1k -l 2k 4M 4k' "$U" >io.out ||
    bad "qemu-io on NBD"
grep -q "Pattern verification failed" io.out && bad "qemu-io read back a wrong pattern"
qio -f raw -c 'write -P 0x21 100k 300k' -c 'write -P 0x22 1M 64k' -c 'write -z 2M 1M' \
    -c 'write -P 0x23 4M 4k' -c 'write -P 0x24 4100k 8k' rw.ref
qemu-img compare -f raw -F raw "$U" rw.ref >/dev/null || bad "NBD content after qemu-io writes"
qemu-img info -f raw "$U" | grep -q "virtual size: 6 MiB" || bad "qemu-img info on NBD"
qemu-img map -f raw --output=json "$U" >/dev/null || bad "qemu-img map on NBD"
# nbdcopy both ways, four connections (the server allows them: -e 4)
head -c 6M /dev/urandom >rand.raw
nbdcopy --connections=4 rand.raw "$U" || bad "nbdcopy to NBD"
nbdcopy --connections=4 "$U" back.raw || bad "nbdcopy from NBD"
cmp -s back.raw rand.raw || bad "nbdcopy round trip differs"
stop rw
qemu-img check -q rw.qcow2 || bad "qemu-img check after writes over NBD"
qemu-img compare -q rw.qcow2 rand.raw || bad "image content after nbdcopy"

# ---- TCP (nbd://) and export names ----
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -f "$T/tcp.pid"
"$FASTQCOW" serve --fork --pid-file "$T/tcp.pid" -b 127.0.0.1 -p "$port" -t -e 2 -x disk \
    -D "a test disk" -r --export other=sparse.raw chain.qcow2 || bad "serve over TCP"
SERVER_PIDS+=("$(cat "$T/tcp.pid")")
N=nbd://127.0.0.1:$port
nbdinfo --list "$N" >list.out || bad "nbdinfo --list"
grep -q 'export="disk"' list.out && grep -q 'description: a test disk' list.out &&
    grep -q 'export="other"' list.out || { bad "nbdinfo --list output"; cat list.out; }
qemu-img info -f raw "$N/disk" | grep -q "virtual size: 8 MiB" || bad "qemu-img info nbd://"
qemu-img compare -f raw -F raw "$N/disk" chain.qcow2.ref >/dev/null || bad "qemu-img compare nbd://"
qemu-img map -f raw --output=json "$N/other" >/dev/null || bad "qemu-img map nbd://"
nbdcopy "$N/other" other.raw && cmp -s other.raw sparse.raw.ref || bad "second export over TCP"
stop tcp
[ $fail = 0 ] && echo "ok: serve with real clients"
exit $fail
