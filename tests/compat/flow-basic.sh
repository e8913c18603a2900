# An iotests-style session: create, write patterns, read them back, map,
# check, snapshot, resize, convert, compare. Where clusters go once
# snapshots were taken, applied and deleted is each tool's own choice (the
# allocation layout), so the check after them does not print the image's
# end offset.
size=8M
for opts in "" "-o cluster_size=4k,refcount_bits=2" "-o compat=0.10" "-o extended_l2=on" "-o cluster_size=512,lazy_refcounts=on"; do
    echo "=== $opts"
    rm -f t.qcow2 t2.qcow2 t.raw
    qemu-img create -f qcow2 $opts t.qcow2 $size
    w=() r=()
    for i in 0 1 2 3; do
        w+=(-c "write -P $((0x10 + i)) $((i * 2))M 512k")
        r+=(-c "read -P $((0x10 + i)) $((i * 2))M 512k")
    done
    qemu-io "${w[@]}" t.qcow2
    qemu-io -c "write -P 0x22 7M 3k" -c "write -z 6M 64k" -c "discard 4M 64k" -c "writev -P 0x33 5M 1k 3k 512" t.qcow2
    qemu-io "${r[@]}" t.qcow2
    qemu-io -c "read -P 0x22 7M 3k" -c "read -P 0 6M 64k" -c "readv -P 0x33 5M 4608" -c "read -P 0 5M 1" t.qcow2
    qemu-io -c map -c "alloc 0 8M" -c info t.qcow2
    qemu-img map t.qcow2
    qemu-img map --output=json t.qcow2
    qemu-img check t.qcow2
    qemu-img snapshot -c one t.qcow2
    qemu-io -c "write -P 0x44 0 64k" t.qcow2
    qemu-img snapshot -l t.qcow2 | sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}/DATE/'
    qemu-img snapshot -a one t.qcow2 && qemu-io -c "read -P 0x10 0 64k" t.qcow2
    qemu-img snapshot -d one t.qcow2
    qemu-img resize t.qcow2 +4M
    qemu-io -c "read -P 0 8M 4M" -c length t.qcow2
    qemu-img resize --shrink t.qcow2 6M
    qemu-img check t.qcow2 | grep -v "^Image end offset"
    qemu-img convert -O raw t.qcow2 t.raw
    qemu-img convert -O qcow2 -c t.qcow2 t2.qcow2
    qemu-img compare t.qcow2 t.raw
    qemu-img compare -s t2.qcow2 t.raw; echo "rc=$?"
    qemu-img info t.qcow2 | grep -v "^disk size"
    qemu-img info --output=json t2.qcow2 | grep -v actual-size
done
# refcounts of one bit cannot count a snapshot's references: refused, the
# data as it was
qemu-img create -q -f qcow2 -o refcount_bits=1 r1.qcow2 1M
qemu-io -c "write -P 5 0 128k" r1.qcow2 >/dev/null
qemu-img snapshot -c one r1.qcow2; echo "rc=$?"
qemu-img snapshot -l r1.qcow2
qemu-io -c "read -P 5 0 128k" r1.qcow2
