# -s (snapshot), -C (copy-on-read), -d, -m, -U, -k/-i, -T: what each does
# to the image, as qemu-img map and check then see it.
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c "write -P 1 0 128k" -c "write -P 2 1M 64k" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c "write -P 3 64k 64k" top.qcow2 >/dev/null
qemu-io -c map -c "alloc 0 4M" top.qcow2
echo "== -s"
qemu-io -s -c "write -P 9 2M 4k" -c map -c "alloc 0 4M" -c info -c length -c "read -P 1 0 64k" \
    -c "read -P 9 2M 4k" top.qcow2
qemu-img map --output=json top.qcow2
echo "== -C"
cp top.qcow2 top2.qcow2
qemu-io -C -c "read -P 1 4k 4k" -c "read 3M 4k" -c "read 1M 70k" -c "aio_read 2M 4k" -c aio_flush \
    -c "readv 2560k 4k 4k" -c map top2.qcow2
qemu-img map --output=json top2.qcow2
qemu-img check top2.qcow2
qemu-img create -q -f qcow2 e.qcow2 1M
qemu-io -C -c "read 0 4k" -c map e.qcow2
qemu-img map --output=json e.qcow2
echo "== open -s, open -C"
qemu-io -c "open -s top.qcow2" -c "write -P 8 0 4k" -c "read -P 8 0 4k" -c close \
    -c "open -C top.qcow2" -c "read 0 4k" -c map
qemu-img map --output=json top.qcow2
echo "== -d, -m, -U, -k, -i"
qemu-img create -q -f qcow2 d.qcow2 4M
qemu-io -d ignore -c "write -P 3 0 128k" -c "discard 0 128k" -c "read -P 3 0 128k" \
    -c "write -z -u 0 64k" -c map d.qcow2
qemu-img map --output=json d.qcow2
qemu-io -d unmap -c "discard 64k 64k" -c map d.qcow2
qemu-io -m -t none -c "write -P 3 512 4k" -c "read -P 3 512 4k" -c "readv -P 3 512 1k 3k" d.qcow2
qemu-io -U -n -c "read 0 1" d.qcow2
qemu-io -k -c "read 0 1" d.qcow2; echo "rc=$?"
qemu-io -k -t none -c "read 0 1" d.qcow2; echo "rc=$?"
qemu-io -i threads -c "read 0 1" d.qcow2; echo "rc=$?"
qemu-io -i native -c "read 0 1" d.qcow2; echo "rc=$?"
qemu-io -T nosuch_event -c length d.qcow2; echo "rc=$?"
