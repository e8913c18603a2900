# convert -B (a backing file for the target), and the progress lines of
# convert and compare.
qemu-img create -q -f qcow2 cb.qcow2 4M
qemu-io -c "write -P 1 0 1M" cb.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b cb.qcow2 -F qcow2 ct.qcow2
qemu-io -c "write -P 2 512k 64k" -c "write -z 2M 64k" ct.qcow2 >/dev/null
qemu-img convert -O qcow2 -B cb.qcow2 ct.qcow2 co.qcow2; echo "rc=$?"
qemu-img convert -O qcow2 -B cb.qcow2 -F qcow2 ct.qcow2 co.qcow2; echo "rc=$?"
qemu-img map --output=json co.qcow2
qemu-img info co.qcow2 | grep backing
qemu-img compare ct.qcow2 co.qcow2
qemu-img convert -O raw -B cb.qcow2 -F qcow2 ct.qcow2 co.raw; echo "rc=$?"
qemu-img convert -O raw -B cb.qcow2 ct.qcow2 co.raw; echo "rc=$?"
qemu-img convert -O qcow2 -o backing_file=cb.qcow2,backing_fmt=qcow2 ct.qcow2 co2.qcow2; echo "rc=$?"
qemu-img map --output=json co2.qcow2
qemu-img convert -n -O qcow2 -B cb.qcow2 -F qcow2 ct.qcow2 co.qcow2; echo "rc=$?"
qemu-img convert -O qcow2 -B cb.qcow2 -F qcow2 cb.qcow2 co5.qcow2
qemu-img map --output=json co5.qcow2
qemu-img check co5.qcow2
qemu-img convert -c -O qcow2 -B cb.qcow2 -F qcow2 ct.qcow2 co6.qcow2
qemu-img compare co6.qcow2 ct.qcow2
echo "== progress"
qemu-img create -q -f qcow2 pp.qcow2 64M
qemu-io -c "write -P 1 0 20M" -c "write -P 2 40M 3M" -c "write -z 50M 1M" -c "write -P 3 63M 1M" pp.qcow2 >/dev/null
qemu-img convert -p -O raw pp.qcow2 pp.raw | od -c
qemu-img convert -p -S 0 -O raw pp.qcow2 pp2.raw | od -c | tail -3
qemu-img convert -p -c -O qcow2 pp.qcow2 ppc.qcow2 | od -c | tail -4
qemu-img create -q -f qcow2 em.qcow2 1M
qemu-img convert -p -O raw em.qcow2 em.raw | od -c
qemu-img create -q -f qcow2 -b pp.qcow2 -F qcow2 ov.qcow2
qemu-io -c "write -P 5 10M 5M" ov.qcow2 >/dev/null
qemu-img convert -p -O qcow2 -B pp.qcow2 -F qcow2 ov.qcow2 ovc.qcow2 | od -c
qemu-img compare -p pp.qcow2 pp.raw | od -c
qemu-img create -q -f qcow2 small.qcow2 32M
qemu-img compare -p small.qcow2 pp.qcow2 | od -c; echo "rc=${PIPESTATUS[0]}"
qemu-io -f raw -c "write -P 9 45M 1k" pp.raw >/dev/null
qemu-img compare -p pp.qcow2 pp.raw | od -c; echo "rc=${PIPESTATUS[0]}"
