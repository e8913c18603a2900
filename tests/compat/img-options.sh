# Every qemu-img subcommand takes its options anywhere on the command line
# and "--" ends them; option errors in qemu-img's words.
qemu-img create t.qcow2 1M -f qcow2 -o cluster_size=4k
qemu-io t.qcow2 -c "write -P 1 0 64k" >/dev/null
qemu-img info t.qcow2 --output=json | grep -v actual-size
qemu-img check t.qcow2 --output json
qemu-img map t.qcow2 --output=json --max-length 128k
qemu-img snapshot t.qcow2 -c s1
qemu-img snapshot t.qcow2 -l | sed -E 's/[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]{8}/DATE/'
qemu-img resize t.qcow2 -q 2M; echo "rc=$?"
qemu-img resize -q t.qcow2 -- 3M; echo "rc=$?"
qemu-img resize t.qcow2 2M -q; echo "rc=$?"
qemu-img amend t.qcow2 -o lazy_refcounts=on
qemu-img convert t.qcow2 -O raw t.raw -p | od -c | head -2
qemu-img compare t.raw t.qcow2 -f raw
qemu-img measure t.qcow2 -O qcow2
qemu-img create -f qcow2 -- u.qcow2 1M
qemu-img rebase u.qcow2 -u -b t.qcow2 -F qcow2
qemu-img info u.qcow2 | grep backing
qemu-img commit u.qcow2 -d
qemu-img dd if=t.qcow2 -O qcow2 of=d.qcow2 bs=64k count=4
qemu-img bench -c 10 t.qcow2 -q; echo "rc=$?"
for c in "info -f" "info --output" "create -o" "convert -O" "check -r" "snapshot -c" "amend -o" \
    "rebase -b" "commit -b" "compare -f" "info -x t.qcow2" "info --foo t.qcow2" "bench -c" \
    "bench -x t.qcow2" bench "dd -x" "resize -f" info create "check -r foo t.qcow2" \
    "info --output=xml t.qcow2" "convert -m 17 t.qcow2 x.raw" "convert t.qcow2" \
    "compare t.qcow2" "map --start-offset=x t.qcow2"; do
    echo "--- $c"
    qemu-img $c
    echo "rc=$?"
done
