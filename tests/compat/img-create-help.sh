# -o help and -o ? list the options as qemu-img lists them; the file's own
# options (extent_size_hint, nocow) with a file name; --object.
for c in "create -o help" "create -f qcow2 -o help" "create -f qcow2 -o ?" "create -f raw -o help x.raw" \
    "create -f qcow2 -o help x.qcow2" "create -f qcow2 -o cluster_size=4k,? y.qcow2" \
    "create -f qcow2 -o help,cluster_size=foo" "create -f qcow2 -o cluster_size=foo,help" \
    "create -f foo -o help" "convert -o help" "convert -O qcow2 -o help" \
    "amend -f qcow2 -o help" "amend -f raw -o help" "amend -o help"; do
    echo "--- $c"
    qemu-img $c
    echo "rc=$?"
done
for o in extent_size_hint=1M extent_size_hint=x extent_size_hint=5G nocow=on "nocow=off,extent_size_hint=0" \
    "preallocation=off,nocow=off,extent_size_hint=1M" encryption=on encrypt.format=luks \
    "compat=1.1,backing_file=b.raw,backing_fmt=raw" "compat=0.10,lazy_refcounts=on" \
    "cluster_size=3" "refcount_bits=3" "compat=0.9" "extended_l2=on,cluster_size=4k"; do
    echo "--- qcow2 $o"
    truncate -s 1M b.raw
    qemu-img create -f qcow2 -o "$o" x.qcow2 1M
    echo "rc=$?"
done
for o in extent_size_hint=1M nocow=on preallocation=full preallocation=foo; do
    echo "--- raw $o"
    qemu-img create -f raw -o "$o" x.raw 1M
    echo "rc=$?"
done
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-img amend -o help a.qcow2
for c in "info --object secret,id=s,data=x a.qcow2" "check --object secret,id=s,data=x a.qcow2" \
    "map --object foo a.qcow2" "create --object secret,id=s,data=x -f qcow2 b.qcow2 1M" \
    "info --object secret,help" "create --object iothread,id=x -f raw c.raw 1M" \
    "info --object secret,id=s a.qcow2" "bench --object secret,id=s,data=x -c 1 a.qcow2"; do
    echo "--- $c"
    qemu-img $c | grep -v "^disk size"
    echo "rc=${PIPESTATUS[0]}"
done
