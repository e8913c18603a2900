# Backing chains: overlays, commit, rebase, info --backing-chain, map depth.
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c "write -P 1 0 4M" base.qcow2 >/dev/null
qemu-img create -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -c "write -P 2 1M 1M" mid.qcow2
qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -c "write -P 3 2M 64k" -c "write -z 3M 64k" top.qcow2
qemu-io -c "read -P 1 0 1M" -c "read -P 2 1M 1M" -c "read -P 3 2M 64k" -c "read -P 0 3M 64k" \
    -c "read -P 1 3200k 64k" -c map top.qcow2
qemu-img map top.qcow2
qemu-img map --output=json top.qcow2
qemu-img info --backing-chain top.qcow2 | grep -v "^disk size"
qemu-img compare base.qcow2 top.qcow2; echo "rc=$?"
qemu-img commit -d top.qcow2
qemu-io -c "read -P 3 2M 64k" mid.qcow2
qemu-img commit -b base.qcow2 top.qcow2
qemu-io -c "read -P 3 2M 64k" -c "read -P 2 1M 1M" base.qcow2
qemu-img create -q -f qcow2 nb.qcow2 4M
qemu-img rebase -b nb.qcow2 -F qcow2 top.qcow2
qemu-io -c "read -P 1 0 1M" -c "read -P 3 2M 64k" top.qcow2
qemu-img info top.qcow2 | grep backing
qemu-img rebase -u -b "" top.qcow2
qemu-img info top.qcow2 | grep -c backing
qemu-img check top.qcow2
qemu-img create -f qcow2 -b base.qcow2 x.qcow2; echo "rc=$?"
qemu-img create -f qcow2 -b nosuch.qcow2 -F qcow2 x.qcow2; echo "rc=$?"
qemu-img create -f qcow2 -u -b nosuch.qcow2 -F qcow2 x.qcow2 1M; echo "rc=$?"
