# qemu-io's command line: options anywhere, "--", long options, several
# -c, exit status of failing commands, usage errors.
qemu-img create -f qcow2 t.qcow2 1M
qemu-io t.qcow2 -c "write -P 1 0 4k" -c "read -P 1 0 4k"
echo "rc=$?"
qemu-io -c "read -P 1 0 4k" -f qcow2 t.qcow2 -c "read -P 2 0 4k"
echo "rc=$?"
qemu-io --cmd "read -v 0 16" --format=qcow2 -- t.qcow2
echo "rc=$?"
qemu-io t.qcow2 -r -c "write 0 1"
echo "rc=$?"
qemu-io t.qcow2 u.qcow2 >/dev/null
echo "rc=$?"
qemu-io -x t.qcow2 >/dev/null
echo "rc=$?"
qemu-io --nosuch t.qcow2 >/dev/null
echo "rc=$?"
qemu-io -c >/dev/null
echo "rc=$?"
qemu-io -t foo t.qcow2
echo "rc=$?"
qemu-io -i foo t.qcow2
echo "rc=$?"
qemu-io -d foo t.qcow2
echo "rc=$?"
qemu-io -c "read 0 1" nosuch.qcow2
echo "rc=$?"
qemu-io -f raw -c length t.qcow2
qemu-io -c "write -P 0xab 0 64k" -c "quit" -c "write -P 0xcd 0 64k" t.qcow2
qemu-io -c "read -P 0xab 0 64k" t.qcow2
