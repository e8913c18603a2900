#!/bin/bash
# test-nbd-client.sh: NBD servers as images (the nbd protocol driver).
# fastqcow serve and qemu-nbd serve images qemu-img and qemu-io made, on
# Unix sockets and one TCP port on 127.0.0.1; info, map and convert read
# them through every name form (nbd://, nbd+unix://, nbd:unix:,
# nbd:HOST:PORT, exportname=), a qcow2 image served raw is probed as
# qcow2; io writes, zeroes and reads through a writable server; a
# read-only server refuses writes with a clear message; a server that
# dies mid-session gives errors, never a hang; a backing file name that is
# an NBD name is refused unless --allow-backing-protocol allows it.
# SPDX-License-Identifier: MIT
set -u
pkg-config --exists libnbd 2>/dev/null || { echo "SKIP: libnbd (libnbd-dev) not installed"; exit 77; }
. "$TEST_SRCDIR/shell/serve-lib.sh"
cd "$T" || exit 1
F=$FASTQCOW
TO="timeout 20"

qemu-img create -q -f qcow2 src.qcow2 8M
qemu-io -f qcow2 -c 'write -P 0x11 0 1M' -c 'write -P 0x22 3M 512k' -c 'write -z 5M 64k' \
    src.qcow2 >/dev/null
qemu-img create -q -f raw rw.img 4M
qemu-img create -q -f raw ro.img 1M
qemu-io -f raw -c 'write -P 0x33 0 1M' ro.img >/dev/null

# A qcow2 image served raw (the client probes it), by both servers.
start_fq fq -t -e 8 -r -f raw -x exp src.qcow2 || bad "serve src.qcow2"
start_qemu qn -t -e 8 -r -f raw src.qcow2 || bad "qemu-nbd src.qcow2"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
rm -f tcp.pid
qemu-nbd --fork --pid-file "$T/tcp.pid" -t -e 8 -r -b 127.0.0.1 -p "$PORT" -f raw src.qcow2 \
    && SERVER_PIDS+=("$(cat tcp.pid)") || bad "qemu-nbd on TCP port $PORT"

# info through every name form: the format is probed, the size is the guest's
for name in "$(uri fq exp)" "nbd:unix:$T/fq.sock:exportname=exp" "$(uri qn)" \
            "nbd:unix:$T/qn.sock" "nbd://127.0.0.1:$PORT/" "nbd:127.0.0.1:$PORT"; do
    out=$($TO "$F" info "$name" 2>&1) || bad "info $name: $out"
    grep -q '^file format: qcow2$' <<<"$out" || bad "info $name: not probed as qcow2: $out"
    grep -q '^virtual size: 8 MiB (8388608 bytes)$' <<<"$out" || bad "info $name: size: $out"
done

# map: the same extents as qemu-img reports for the file itself
qemu-img map -U -f qcow2 src.qcow2 | awk 'NR > 1 { print $1, $2, $3 }' >map.want
$TO "$F" map "$(uri qn)" | awk 'NR > 1 { print $1, $2, $3 }' >map.got || bad "map"
cmp -s map.want map.got || { bad "map over NBD differs from qemu-img map"; diff map.want map.got; }

# convert out of each server, compared with the source
for name in "$(uri fq exp)" "$(uri qn)" "nbd://127.0.0.1:$PORT"; do
    rm -f out.qcow2
    $TO "$F" convert -O qcow2 "$name" out.qcow2 || bad "convert $name"
    qemu-img compare -U -f qcow2 -F qcow2 src.qcow2 out.qcow2 >/dev/null \
        || bad "convert $name: differs from the source"
    qemu-img check -q out.qcow2 || bad "convert $name: check"
done
# compare: an NBD image against the file, and against a changed copy
$TO "$F" compare -U "$(uri qn)" src.qcow2 >/dev/null || bad "compare over NBD"
qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 diff.qcow2 8M
qemu-io -c 'write -P 0x99 4M 4k' diff.qcow2 >/dev/null
$TO "$F" compare -U "$(uri qn)" diff.qcow2 >/dev/null; [ $? = 1 ] || bad "compare over NBD: difference not seen"
# the export as raw bytes: the qcow2 file itself
rm -f bytes.raw
$TO "$F" convert -f raw -O raw "$(uri qn)" bytes.raw || bad "convert -f raw"
cmp -s bytes.raw src.qcow2 || bad "raw bytes over NBD differ from the file"

# a writable server: writes, write-zeroes, discard, flush, read back
start_fq rw -t -e 8 -f raw rw.img || bad "serve rw.img"
out=$($TO "$F" io -f raw -c 'write -P 0x5a 0 64k' -c 'read -P 0x5a 0 64k' \
      -c 'write -P 0x66 1M 3M' -c 'write -z 1M 64k' -c 'discard 2M 64k' -c 'flush' \
      -c 'read -P 0 1M 64k' -c 'read -P 0x66 1088k 960k' -c 'read -P 0x66 3M 1M' \
      "$(uri rw)" 2>&1) || bad "io over NBD: $out"
grep -q 'Pattern verification failed' <<<"$out" && bad "io over NBD: $out"
# a request larger than one NBD command (the server's 32 MiB limit is not
# reached here, but several commands per request are: 3 MiB iovecs)
out=$($TO "$F" io -f raw -c 'writev -P 0x77 0 1M 1M 1M' -c 'readv -P 0x77 0 1M 2M' "$(uri rw)" 2>&1) \
    || bad "writev/readv over NBD: $out"
grep -q 'Pattern verification failed' <<<"$out" && bad "writev/readv: $out"
stop rw
qemu-io -f raw -c 'read -P 0x77 0 3M' -c 'read -P 0x66 3M 960k' rw.img | grep -q 'verification failed' \
    && bad "data written over NBD is not in the file"

# a read-only server: a read-write open is refused, clearly; reads work
start_qemu ro -t -e 8 -r -f raw ro.img || bad "qemu-nbd -r"
out=$($TO "$F" io -f raw -c 'write -P 0x44 0 4k' "$(uri ro)" 2>&1) && bad "write on a read-only server succeeded"
grep -q 'read-only' <<<"$out" || bad "read-only refusal does not say so: $out"
out=$($TO "$F" io -r -f raw -c 'read -P 0x33 0 64k' -c 'write -P 0x44 0 4k' "$(uri ro)" 2>&1)
grep -q 'read 65536/65536' <<<"$out" || bad "read from a read-only server: $out"
grep -q 'wrote' <<<"$out" && bad "write through a read-only open: $out"
out=$($TO "$F" convert -n -f raw -O raw ro.img "$(uri ro)" 2>&1) && bad "convert -n onto a read-only server"
grep -qi 'read-only' <<<"$out" || bad "convert -n onto a read-only server: $out"

# a server that disappears mid-session: errors, no hang
start_qemu die -t -e 8 -f raw ro.img || bad "qemu-nbd die"
mkfifo cmds
($TO "$F" io -r -f raw "$(uri die)" <cmds >die.out 2>&1; echo $? >die.rc) &
exec 7>cmds
echo 'read -P 0x33 0 64k' >&7
for _ in $(seq 1 100); do grep -q 'read 65536' die.out 2>/dev/null && break; sleep 0.05; done
kill -9 "$(cat die.pid)"
wait_gone "$(cat die.pid)"
echo 'read 0 64k' >&7
echo 'read 64k 64k' >&7
echo 'quit' >&7
exec 7>&-
wait
grep -q 'read 65536/65536 bytes at offset 0$' die.out || bad "read before the server died: $(cat die.out)"
[ "$(grep -c 'read failed' die.out)" = 2 ] || bad "reads after the server died did not fail: $(cat die.out)"
[ "$(cat die.rc)" != 124 ] || bad "io hung after the server died"

# backing file names that are NBD names: refused unless allowed
for b in "$(uri qn)" "nbd:unix:$T/qn.sock" "nbd://127.0.0.1:$PORT/"; do
    rm -f top.qcow2
    qemu-img create -q -f qcow2 -u -b "$b" -F qcow2 top.qcow2 8M
    out=$($TO "$F" info --backing-chain top.qcow2 2>&1) && bad "backing $b opened unasked"
    grep -q -- '--allow-backing-protocol nbd' <<<"$out" || bad "backing $b: refusal does not name the option: $out"
    out=$($TO "$F" io -c 'read 0 4k' top.qcow2 2>&1) && bad "io: backing $b opened unasked"
    grep -q -- '--allow-backing-protocol nbd' <<<"$out" || bad "io: backing $b refusal: $out"
    out=$($TO "$F" --allow-backing-protocol nbd io -r -c 'read -P 0x11 0 64k' top.qcow2 2>&1)
    grep -q 'read 65536/65536' <<<"$out" || bad "backing $b with --allow-backing-protocol nbd: $out"
done
# the refusal happens before any connection: a name where nobody listens
rm -f top.qcow2
qemu-img create -q -f qcow2 -u -b "nbd+unix:///?socket=$T/nobody.sock" -F raw top.qcow2 8M
out=$($TO "$F" info --backing-chain top.qcow2 2>&1)
grep -q -- '--allow-backing-protocol nbd' <<<"$out" || bad "nobody: $out"
out=$(FASTQCOW_ALLOW_BACKING_PROTOCOL=all $TO "$F" info --backing-chain top.qcow2 2>&1) && bad "nobody.sock opened"
grep -q 'nobody.sock' <<<"$out" || bad "allowed by the environment: no connection tried: $out"
# names given on the command line connect (done above); a plain relative
# backing file still opens as before
qemu-img create -q -f qcow2 -b src.qcow2 -F qcow2 plain.qcow2 8M
$TO "$F" info --backing-chain plain.qcow2 >/dev/null || bad "plain backing file"

exit $fail
