# truncate, length, sigraise, abort, write -b/read -b, write -z -u, write -c.
# (write -c into an unallocated cluster, truncate -m off only: the
# differences docs/COMPATIBILITY.md lists are not what this compares)
qemu-img create -q -f qcow2 t.qcow2 1M
qemu-io -c "write -P 1 0 1M" -c "truncate 512k" -c length -c "read -P 1 0 512k" \
    -c "truncate 2M" -c length -c "read -P 0 512k 1536k" -c map t.qcow2
qemu-img check t.qcow2
qemu-io -c "truncate 1000" -c "truncate 1.5M" -c length -c "truncate -m foo 6M" \
    -c "truncate -m" -c truncate -c "truncate x" -c "truncate 0" -c length -c "truncate -1" \
    -c "truncate 1M -m off" -c "truncate 2M 3M" -c length t.qcow2
echo "rc=$?"
qemu-io -r -c "truncate 1M" t.qcow2; echo "rc=$?"
truncate -s 1M r.raw
qemu-io -f raw -c "write -P 1 0 1M" -c "truncate 512k" -c length -c "truncate -m metadata 3M" r.raw
echo "rc=$?"
for c in "sigraise abc" "sigraise -1" "sigraise 1k" "sigraise 99" "sigraise 65" "sigraise 10" \
    "sigraise 14" "sigraise 15"; do
    echo "--- $c"
    qemu-io -c "read 0 1" -c "$c" -c "read 0 2" t.qcow2
    echo "rc=$?"
done
qemu-io -c "read 0 1" -c abort t.qcow2 >out.txt 2>err.txt; echo "rc=$?"; cat out.txt
qemu-img create -q -f qcow2 v.qcow2 1M
qemu-io -c "write -b -P 1 0 64k" -c "read -b -P 1 0 64k" -c "read -b -P 0 64k 64k" \
    -c "write -b -P 2 100 1k" -c "write -b -P 2 512 1000" -c "read -b -v 512 16" -c map -c length \
    -c "write -b -z 0 512" -c "write -b -f 0 512" -c "write -b 0x7ffffffffffff000 4096" \
    -c "read -b 0x7ffffffffffff000 4096" v.qcow2
qemu-io -r -c "read -b -P 1 0 64k" -c "write -b 0 512" v.qcow2
qemu-img check v.qcow2
qemu-img create -q -f qcow2 -b v.qcow2 -F qcow2 o.qcow2
qemu-io -c "read -b -P 0 0 512" -c "write -b -P 3 0 512" -c "read -b -P 3 0 512" o.qcow2
qemu-img check o.qcow2
qemu-io -f raw -c "write -b 0 512" -c "read -b 0 512" r.raw
qemu-img create -q -f qcow2 z.qcow2 1M
qemu-io -c "write -P 3 0 256k" -c "write -z 0 64k" -c "write -z -u 64k 64k" -c "write -u 0 1" \
    -c "write -c -P 4 256k 64k" -c "write -c 1 512" -c "write -c 0 100" -c "read -P 4 256k 64k" \
    -c map z.qcow2
qemu-img map --output=json z.qcow2
qemu-img check z.qcow2
