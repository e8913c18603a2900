# resize --shrink drops what lies past the new end; without --shrink,
# qemu-img's refusal and warning; growing again reads zeros.
qemu-img create -q -f qcow2 r.qcow2 4M
qemu-io -c "write -P 1 0 1M" -c "write -c -P 3 1M 64k" -c "write -z 2M 512k" -c "write -P 4 3M 1M" r.qcow2 >/dev/null
qemu-img resize r.qcow2 1M; echo "rc=$?"
qemu-img resize r.qcow2 -- -1M; echo "rc=$?"
qemu-img resize --shrink r.qcow2 3M; echo "rc=$?"
qemu-img resize --shrink r.qcow2 1000; echo "rc=$?"
qemu-img resize --shrink r.qcow2 1000448; echo "rc=$?"
qemu-img resize r.qcow2 4M; echo "rc=$?"
qemu-io -c "read -P 1 0 1000448" -c "read -P 0 1000448 3194304" r.qcow2
qemu-img check r.qcow2
qemu-img map --output=json r.qcow2
qemu-img resize --shrink r.qcow2 -- -3584k; echo "rc=$?"
qemu-img info r.qcow2 | grep virtual
qemu-img create -q -f qcow2 s.qcow2 4M
qemu-io -c "write -P 1 0 1M" -c "write -P 2 2M 1M" s.qcow2 >/dev/null
qemu-img snapshot -c snap s.qcow2
qemu-img resize --shrink s.qcow2 2M
qemu-img snapshot -a snap s.qcow2
qemu-io -c "read -P 1 0 1M" -c "read -P 2 2M 1M" s.qcow2
qemu-img check s.qcow2 | grep -v "^Image end offset"   # the allocation layout's
qemu-img create -q -f raw r.raw 4M
qemu-io -f raw -c "write -P 1 3M 64k" r.raw >/dev/null
qemu-img resize -f raw r.raw 1M; echo "rc=$?"
qemu-img resize -f raw --shrink r.raw 2M; echo "rc=$?"
qemu-img resize -f raw r.raw 4M
qemu-io -f raw -c "read -P 0 2M 2M" r.raw
qemu-img create -q -f qcow2 a.qcow2 2M
qemu-io -c "write -P 1 0 64k" -c "write -P 2 1M 64k" a.qcow2 >/dev/null
qemu-img amend -o size=512k a.qcow2; echo "rc=$?"
qemu-img info a.qcow2 | grep virtual
qemu-img check a.qcow2
