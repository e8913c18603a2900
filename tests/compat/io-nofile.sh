# qemu-io without an image: open, close, open again, from -c and from stdin;
# commands that need an image, and those that do not.
qemu-img create -q -f qcow2 t.qcow2 1M
qemu-img create -q -f raw r.raw 1M
qemu-io -c "open t.qcow2" -c "write -P 3 0 4k" -c close -c "read 0 1" \
    -c "open -r t.qcow2" -c "open t.qcow2" -c "write 0 1" -c "read -P 3 0 4k"
echo "rc=$?"
printf 'read 0 1\nopen t.qcow2\nread -P 3 0 1\nclose\nread 0 1\nopen -r t.qcow2\nwrite 0 1\nreopen -w\nwrite 0 1\nlength\nquit\nlength\n' | qemu-io
echo "rc=$?"
printf 'open -o driver=raw r.raw\nwrite -P 5 0 1k\nclose\nopen -f raw r.raw\nopen r.raw\nread -P 5 0 1k\n' | qemu-io
echo "rc=$?"
qemu-io -c open; echo "rc=$?"
qemu-io -c "open nosuch"; echo "rc=$?"
qemu-io -c "open -o foo=bar t.qcow2"; echo "rc=$?"
qemu-io -c "open -o lazy-refcounts=foo t.qcow2"; echo "rc=$?"
qemu-io -c "open -o l2-cache-size=1M,cache-size=512k t.qcow2"; echo "rc=$?"
qemu-io -c "open -o l2-cache-size=1M t.qcow2" -c "read 0 1"; echo "rc=$?"
qemu-io -c "open t.qcow2 u.qcow2"; echo "rc=$?"
qemu-io -c "open -x t.qcow2"; echo "rc=$?"
qemu-io -c "open -t foo t.qcow2"; echo "rc=$?"
qemu-io -c "open -rn -t none t.qcow2" -c info
qemu-io -c close -c close; echo "rc=$?"
for c in abort aio_flush "aio_read 0 1" "alloc 0" close "discard 0 1" flush info length map \
    "read 0 1" reopen "sleep 1" "truncate 0" "write 0 1" "writev 0 1" foo write sleep \
    sigraise "sigraise 0" "quit 1 2 3" "help read" "help open" "help nosuch"; do
    echo "--- $c"
    qemu-io -c "$c"
    echo "rc=$?"
done
