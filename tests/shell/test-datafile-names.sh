#!/bin/bash
# test-datafile-names.sh: the external data file name an image records is
# untrusted input. It is honoured only as a plain file name, used as given
# (relative to the working directory, as the image's creator gave it) and
# naming a regular file: names with a protocol or prefix (nbd://, nbd:,
# json:, file:), kernel files (/proc, /sys), devices, directories, an empty
# name and the image itself are refused with a message, and nothing is
# connected to or written. The caller's own data-file option
# (--image-opts data-file.filename=, data-file=) overrides the name. What
# an image with a data file cannot do (internal snapshots, compressed
# clusters, defragmentation, compat=0.10) is refused as qemu-img refuses
# it; `info` needs no data file (qemu-img info opens none).
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null && command -v python3 >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io/python3 not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/datafile-names.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
F() { "$FASTQCOW" "$@"; }
# setname SRC DST NAME [DST NAME...]: copies of image SRC recording each
# NAME as their data file name (one python run: it starts slowly)
setname() {
    python3 - "$@" <<'EOF'
import shutil, struct, sys
src, pairs = sys.argv[1], sys.argv[2:]
for img, name in zip(pairs[0::2], pairs[1::2]):
  name = name.encode()
  shutil.copyfile(src, img)
  with open(img, 'r+b') as f:
    d = bytearray(f.read(65536))
    hl = struct.unpack_from('>I', d, 100)[0]
    off, exts = hl, []
    while True:
        t, l = struct.unpack_from('>II', d, off)
        if t == 0:
            break
        exts.append((t, bytes(d[off + 8:off + 8 + l])))
        off += 8 + ((l + 7) & ~7)
    exts = [(0x44415441, name)] + [e for e in exts if e[0] != 0x44415441]
    out = b''.join(struct.pack('>II', t, len(v)) + v + bytes(-len(v) % 8) for t, v in exts)
    out += bytes(8)
    f.seek(hl)
    f.write(out)
EOF
}

qemu-img create -q -f qcow2 -o data_file=d.data,data_file_raw=on base.qcow2 4M
qemu-io -c 'write -P 0x42 0 64k' base.qcow2 >/dev/null
cp d.data d.orig
mkdir sub
names=(/proc/self/environ /sys/kernel/mm/transparent_hugepage/enabled /dev/zero /dev/null /tmp
       'json:{"driver":"file","filename":"d.data"}' nbd://127.0.0.1:9/x nbd:127.0.0.1:9 file:d.data sub)
args=()
for i in "${!names[@]}"; do args+=("h$i.qcow2" "${names[$i]}"); done
setname base.qcow2 "${args[@]}" self.qcow2 "$T/self.qcow2" m.qcow2 missing.data e.qcow2 "" \
    sub/r.qcow2 ../d.data
# hostile names: refused with a message, exit 1, never a crash, never opened
for i in "${!names[@]}"; do
    name=${names[$i]}
    cp "h$i.qcow2" h.qcow2
    for cmd in "io -c write 0 512" "check" "convert -O raw"; do
        set -- $cmd
        extra=()
        [ "$1" = convert ] && extra=(out.raw)
        if [ "$1" = io ]; then
            timeout 20 "$FASTQCOW" io -c "${*:3}" h.qcow2 >out 2>err
        else
            timeout 20 "$FASTQCOW" "$@" h.qcow2 "${extra[@]}" >out 2>err
        fi
        rc=$?
        [ $rc = 1 ] || bad "data file '$name': $cmd exits $rc"
        [ -s err ] || bad "data file '$name': $cmd says nothing"
    done
    grep -q "$name\|Could not open" err || bad "data file '$name': the message does not name it: $(cat err)"
    # info needs no data file, and names the one recorded
    F info h.qcow2 | grep -qF "    data file: $name" || bad "data file '$name': info"
done
cmp -s d.data d.orig || bad "the real data file changed"

# the image itself, and a name with no data file behind it
F io -c 'write 0 64k' self.qcow2 >/dev/null 2>err && bad "the image as its own data file accepted"
grep -q 'image file itself' err || bad "self reference: $(cat err)"
qemu-img check -q self.qcow2 || bad "self reference: the image was written"
F io -c 'read 0 512' m.qcow2 >/dev/null 2>err && bad "missing data file accepted"
grep -q "Could not open 'missing.data'" err || bad "missing data file: $(cat err)"
[ -e missing.data ] && bad "a missing data file was created"
F io -c 'read 0 512' e.qcow2 >/dev/null 2>err && bad "empty data file name accepted"

# relative names: from the working directory, as the creator gave them
(cd sub && F io -c 'read -P 0x42 0 64k' r.qcow2 >/dev/null) || bad "'../d.data' from sub/"
F io -c 'read 0 512' sub/r.qcow2 >/dev/null 2>&1 && bad "'../d.data' resolved from elsewhere than the working directory"
# the caller's data-file option wins over the name
F io --image-opts -c 'read -P 0x42 0 64k' driver=qcow2,file.filename=m.qcow2,data-file.filename=d.data \
    >/dev/null || bad "data-file.filename="
F io --image-opts -c 'read -P 0x42 0 64k' driver=qcow2,file.filename=h.qcow2,data-file=d.data \
    >/dev/null || bad "data-file="
qemu-img create -q -f qcow2 plain.qcow2 1M
F io --image-opts -c 'read 0 512' driver=qcow2,file.filename=plain.qcow2,data-file=d.data >/dev/null 2>err &&
    bad "data-file given for an image without one"
grep -q "only be set for images with an external data file" err || bad "data-file without: $(cat err)"
# the bit without any name
python3 -c "
import struct, sys
with open('plain.qcow2', 'r+b') as f:
    f.seek(72); v = struct.unpack('>Q', f.read(8))[0]; f.seek(72); f.write(struct.pack('>Q', v | 4))"
F io -c 'read 0 512' plain.qcow2 >/dev/null 2>err && bad "data file bit without a name accepted"
grep -q "'data-file' is required for this image" err || bad "no name: $(cat err)"

# what a data file cannot carry, refused as qemu-img refuses it
cp d.orig d.data
F snapshot -c s1 base.qcow2 2>err && bad "snapshot with a data file"
grep -q "Could not create snapshot 's1'" err || bad "snapshot: $(cat err)"
F io -c 'write -c 0 64k' base.qcow2 >/dev/null 2>&1 && bad "compressed write with a data file"
F convert -c -O qcow2 -o data_file=cc.data base.qcow2 cc.qcow2 2>/dev/null && bad "convert -c with a data file"
F defrag base.qcow2 >/dev/null 2>&1 && bad "defrag with a data file"
F amend -o compat=0.10 base.qcow2 2>err && bad "downgrade with a data file"
grep -q 'Cannot downgrade an image with a data file' err || bad "downgrade: $(cat err)"
F create -q -f qcow2 -o data_file_raw=on x.qcow2 1M 2>err && bad "data_file_raw without data_file"
grep -q 'data-file-raw requires data-file' err || bad "raw without: $(cat err)"
F create -q -f qcow2 -o data_file=y.data,compat=0.10 y.qcow2 1M 2>/dev/null && bad "data_file with compat=0.10"
F create -q -f qcow2 -o data_file=z.data,data_file_raw=on,backing_file=base.qcow2,backing_fmt=qcow2 z.qcow2 2>err &&
    bad "data_file_raw with a backing file"
grep -q 'Backing file and data-file-raw cannot be used at the same time' err || bad "raw+backing: $(cat err)"
qemu-img check -q base.qcow2 || bad "base image damaged"
cmp -s d.data d.orig || bad "the data file changed under refused operations"
exit $fail
