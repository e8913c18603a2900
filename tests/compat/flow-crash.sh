# A process killed mid-session (sigraise) leaves the image as a crash would:
# what was written with the default writethrough cache is there and check
# finds the image consistent; check -r and a read-write open cope.
qemu-img create -q -f qcow2 n.qcow2 16M
qemu-io -c "write -P 0x5a 0 512" -c "write -P 1 1M 128k" -c "sigraise 9" n.qcow2
echo "rc=$?"
qemu-img check n.qcow2; echo "rc=$?"
qemu-io -c "read -P 0x5a 0 512" -c "read -P 1 1M 128k" n.qcow2
qemu-io -c "aio_write -P 2 2M 64k" -c aio_flush -c "write -P 3 4M 4k" -c "sigraise 15" n.qcow2
echo "rc=$?"
qemu-img check -r all n.qcow2; echo "rc=$?"
qemu-io -c "read -P 2 2M 64k" -c "read -P 3 4M 4k" n.qcow2
qemu-io -c "write -P 4 0 64k" -c abort n.qcow2 >/dev/null 2>&1
echo "rc=$?"
qemu-img check n.qcow2; echo "rc=$?"
qemu-io -c "read -P 4 0 64k" n.qcow2
