# qemu-img dd: operands, blocks, count bounding the input, skip past it.
qemu-img create -q -f qcow2 src.qcow2 4M
qemu-io -c "write -P 1 0 1M" -c "write -P 2 2M 64k" src.qcow2 >/dev/null
qemu-img dd if=src.qcow2 of=d1.raw; echo "rc=$?"; md5sum d1.raw
qemu-img dd -O qcow2 if=src.qcow2 of=d2.qcow2; echo "rc=$?"
qemu-img map --output=json d2.qcow2; qemu-img check d2.qcow2
qemu-img compare src.qcow2 d2.qcow2
for a in "bs=1M count=2" "bs=64k skip=16 count=2" "bs=64k skip=1" "bs=64k skip=64" "bs=64k skip=65" \
    "skip=16 bs=64k" "bs=1k skip=4097" "count=3 bs=1M skip=2" "bs=4M skip=1" "bs=3 count=5" "bs=3 skip=1398100" \
    "bs=1.5k count=1" "count=0" "bs=2147483647 count=0" "bs=2147483648" "bs=0x10 count=0x10 skip=0x1" \
    "bs=0" "bs=foo" "count=-1" "skip=x" "foo=bar" "foo" "if=src.qcow2" "-p" "-O foo" "-f raw"; do
    rm -f dx.raw
    qemu-img dd $a if=src.qcow2 of=dx.raw
    echo "[$a] rc=$? $(stat -c %s dx.raw 2>/dev/null) $(md5sum < dx.raw 2>/dev/null)"
done
qemu-img dd if=nosuch of=dy.raw; echo "rc=$?"
qemu-img dd of=dz.raw; echo "rc=$?"
