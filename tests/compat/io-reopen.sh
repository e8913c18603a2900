# reopen: read-only and back, cache modes, runtime options, and the options
# that cannot change.
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-io -c "reopen -r" -c "write 0 1" -c "reopen -w" -c "write -P 7 0 512" -c "read -P 7 0 512" a.qcow2
echo "rc=$?"
qemu-io -c "reopen -r -w" a.qcow2; echo "rc=$?"
qemu-io -c "reopen -c none" -c "read 0 1" -c "reopen -c foo" a.qcow2; echo "rc=$?"
for o in cluster-size=4k foo=bar driver=raw driver=qcow2 cache.direct=on cache.no-flush=on \
    discard=unmap detect-zeroes=on node-name=x lazy-refcounts=off lazy-refcounts=foo \
    l2-cache-entry-size=4k file.driver=file file.locking=off force-share=on \
    auto-read-only=on pass-discard-request=on overlap-check=all cache-size=1M \
    l2-cache-size=x file.aio=threads "l2-cache-size=1M,refcount-cache-size=1M,cache-size=1M" \
    file.filename=x; do
    echo "--- $o"
    qemu-io -c "reopen -o $o" -c "write 0 1" a.qcow2
    echo "rc=$?"
done
for o in "-c writeback" "-c directsync" "-c unsafe" "-r -c none" "-o" "-x" "x" \
    "-r -o read-only=on" "-c none -o cache.direct=on"; do
    echo "--- $o"
    qemu-io -c "reopen $o" -c "write 0 1" a.qcow2
    echo "rc=$?"
done
qemu-io -r -c "reopen -o read-only=off" -c "write 0 1" a.qcow2; echo "rc=$?"
printf 'open a.qcow2\nreopen -r\nwrite 0 1\nreopen -w\nwrite -P 3 0 512\nread -P 3 0 512\n' | qemu-io
echo "rc=$?"
