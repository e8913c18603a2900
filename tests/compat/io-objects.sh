# --object and --image-opts on qemu-io's command line.
qemu-img create -q -f qcow2 a.qcow2 1M
for o in secret,id=s0,data=abc secret,data=abc foo,id=x memory-backend-ram,id=m,size=1M \
    iothread,id=t0 secret,id=s0 secret,id=s0,data=a,file=b secret,id=s0,file=/nonexist \
    secret,id=s0,data=YWJj,format=base64 secret,id=s0,data=a,foo=bar secret,help \
    secret,id=0s,data=a id=x '{"qom-type":"secret","id":"s1","data":"x"}' foo secret \
    secret,id=s,format=foo,data=x secret,id=s,data=x,format=raw iothread \
    secret,id=s,data=x,iv=abc qom-type=secret,id=s,data=x secret,id=s,data=x,qom-type=secret \
    secret,,id=x secret,id=a,,b,data=x '{"qom-type":"secret"}' \
    '{"qom-type":"secret","id":"s","data":1}' secret,id=s,file=/etc/hostname \
    secret,id=s,data=x,keyid=k; do
    echo "--- $o"
    qemu-io --object "$o" -c "read 0 1" a.qcow2
    echo "rc=$?"
done
qemu-io --object secret,id=s0,data=a --object secret,id=s0,data=b -c length a.qcow2; echo "rc=$?"
for o in driver=qcow2,file.filename=a.qcow2 driver=qcow2,file.driver=file,file.filename=a.qcow2 \
    file.filename=a.qcow2 driver=qcow2 a.qcow2 driver=raw,file.filename=a.qcow2,foo=bar \
    driver=qcow2,file.filename=a.qcow2,cache.direct=on,l2-cache-size=1M,lazy-refcounts=on,discard=unmap \
    driver=qcow2,file.filename=a.qcow2,lazy-refcounts=foo; do
    echo "--- $o"
    qemu-io --image-opts -c length -c "write -P 4 0 512" -c "read -P 4 0 512" "$o"
    echo "rc=$?"
done
qemu-io --image-opts -f qcow2 a.qcow2; echo "rc=$?"
qemu-io --image-opts -c "open -o driver=raw a.qcow2"; echo "rc=$?"
qemu-io --image-opts -c "open driver=qcow2,file.filename=a.qcow2" -c length; echo "rc=$?"
