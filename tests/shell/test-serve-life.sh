#!/bin/bash
# test-serve-life.sh: how `fastqcow serve` starts, runs and stops: socket
# activation (nbdinfo/nbdcopy -- [ fastqcow serve ... ]), --fork with
# --pid-file (written once listening, removed at exit), exit after the last
# client without -t, the -e limit (a second client waits for the first),
# SIGTERM draining a write in flight (replied, flushed, exit 0), a client
# vanishing mid-request losing nothing another flushed, -s (writes to a
# throw-away overlay), -o, --image-opts, TLS with x509 certificates (client
# certificates checked) and PSK keys, plaintext refused when TLS is on,
# and refusals with qemu-nbd's messages (missing image, socket in use).
# SPDX-License-Identifier: MIT
set -u
. "$TEST_SRCDIR/shell/serve-lib.sh"
for p in qemu-img qemu-io nbdinfo nbdcopy; do
    command -v $p >/dev/null || { echo "SKIP: $p not installed"; exit 77; }
done
cd "$T" || exit 1
qemu-img create -q -f qcow2 d.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x31 0 2M' d.qcow2 >/dev/null
qemu-img convert -O raw d.qcow2 d.ref

# ---- socket activation ----
nbdinfo --size -- [ "$FASTQCOW" serve -r d.qcow2 ] >size.out 2>&1 &&
    grep -qx 67108864 size.out || { bad "socket activation (nbdinfo)"; cat size.out; }
nbdcopy -- [ "$FASTQCOW" serve -r -f qcow2 d.qcow2 ] act.raw && cmp -s act.raw d.ref ||
    bad "socket activation (nbdcopy)"

# ---- --fork, --pid-file, exit after the last client, -e ----
start_fq one d.qcow2 || bad "serve --fork"
[ -s "$T/one.pid" ] && [ -S "$T/one.sock" ] || bad "pid file and socket once forked"
p=$(cat "$T/one.pid")
nbdinfo --size "$(uri one)" >/dev/null || bad "nbdinfo on the forked server"
wait_gone "$p" || bad "without -t the server outlives its last client"
[ -e "$T/one.pid" ] || [ -e "$T/one.sock" ] && bad "pid file or socket left behind"
if [ -n "$NBDPY" ]; then
    start_fq lim -t -e 1 d.qcow2 || bad "serve -e 1"
    "$NBDPY" - "$(uri lim)" <<'PY' || bad "-e 1: the second client is served once the first leaves"
import nbd, sys, threading, time
a = nbd.NBD(); a.connect_uri(sys.argv[1])
done = []
def second():
    b = nbd.NBD(); b.connect_uri(sys.argv[1]); done.append(time.time()); b.shutdown()
t = threading.Thread(target=second); t.start()
time.sleep(0.5)
if done:
    sys.exit("second client served while the first was connected")
left = time.time(); a.shutdown(); t.join(10)
sys.exit(0 if done and done[0] >= left else "second client not served")
PY
    stop lim

fi

# ---- SIGTERM drains a write in flight; a vanished client loses nothing ----
start_fq drain -t -e 0 d.qcow2 || bad "serve drain"
"$(command -v python3 || echo /usr/bin/python3)" - "$T/drain.sock" "$(cat "$T/drain.pid")" <<'PY' ||
import os, signal, socket, struct, sys
sock, pid = sys.argv[1], int(sys.argv[2])
def client():
    s = socket.socket(socket.AF_UNIX); s.connect(sock); s.recv(18)
    s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 1, 0))
    got = b""
    while len(got) < 10:
        got += s.recv(10 - len(got))
    return s
def request(s, typ, off, ln, flags=0, payload=b""):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, typ, 1, off, ln) + payload)
def reply(s):
    r = b""
    while len(r) < 16:
        c = s.recv(16 - len(r))
        if not c:
            sys.exit("connection closed before the reply")
        r += c
    return struct.unpack(">IIQ", r)[1]
# one client writes and flushes; another vanishes in the middle of a write
a = client()
request(a, 1, 8 << 20, 65536, payload=b"\x42" * 65536)
request(a, 3, 0, 0)
if reply(a) or reply(a):
    sys.exit("write and flush failed")
a.close()
b = client()
request(b, 1, 9 << 20, 1 << 20, payload=b"\x13" * 4096)
b.close()
# an 8 MiB write with FUA: SIGTERM once the server is reading its payload
h = client()
request(h, 1, 16 << 20, 8 << 20, flags=1, payload=b"\x24" * (2 << 20))
os.kill(pid, signal.SIGTERM)
h.sendall(b"\x24" * (6 << 20))
err = reply(h)
sys.exit(0 if err == 0 else "write in flight at SIGTERM failed: %d" % err)
PY
    bad "SIGTERM drain"
p=$(cat "$T/drain.pid" 2>/dev/null)
[ -n "$p" ] && { wait_gone "$p" || bad "server did not stop after SIGTERM"; }
qemu-img check -q d.qcow2 || bad "qemu-img check after SIGTERM"
qemu-io -f qcow2 -c 'read -P 0x42 8M 64k' -c 'read -P 0x24 16M 8M' -c 'read -P 0 9M 1M' d.qcow2 |
    grep -q "verification failed" && bad "data after SIGTERM drain"
qemu-img convert -O raw d.qcow2 d.ref

# ---- -s, -o, --image-opts ----
start_fq snap -t -s d.qcow2 || bad "serve -s"
qemu-io -f raw -c 'write -P 0x77 0 1M' -c 'read -P 0x77 0 1M' "$(uri snap)" | grep -q "verification failed" &&
    bad "-s overlay reads back"
stop snap
qemu-io -f qcow2 -c 'read -P 0x31 0 1M' d.qcow2 | grep -q "verification failed" && bad "-s wrote to the image"
start_fq off -t -r -o 1M d.qcow2 || bad "serve -o"
[ "$(nbdinfo --size "$(uri off)")" = $((63 << 20)) ] || bad "-o: size"
nbdcopy "$(uri off)" off.raw && cmp -s off.raw <(tail -c +$((1048576 + 1)) d.ref) || bad "-o: content"
stop off
start_fq opts -t --image-opts "driver=qcow2,file.filename=d.qcow2,read-only=on,cache.direct=on" || bad "serve --image-opts"
nbdinfo --json "$(uri opts)" | grep -q '"is_read_only": true' || bad "--image-opts read-only=on"
stop opts

# ---- TLS ----
if command -v certtool >/dev/null && command -v psktool >/dev/null; then
    mkdir x509 psk cli nocert
    (cd x509 &&
     certtool --generate-privkey --key-type=ecdsa --outfile ca-key.pem &&
     printf 'cn = test CA\nca\ncert_signing_key\nexpiration_days = 2\n' >ca.info &&
     certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile ca-cert.pem &&
     certtool --generate-privkey --key-type=ecdsa --outfile server-key.pem &&
     printf 'cn = localhost\ntls_www_server\nencryption_key\nsigning_key\ndns_name = localhost\nexpiration_days = 2\n' >s.info &&
     certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
         --load-privkey server-key.pem --template s.info --outfile server-cert.pem &&
     certtool --generate-privkey --key-type=ecdsa --outfile ../cli/client-key.pem &&
     printf 'cn = client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' >c.info &&
     certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
         --load-privkey ../cli/client-key.pem --template c.info --outfile ../cli/client-cert.pem &&
     cp ca-cert.pem ../cli/ && cp ca-cert.pem ../nocert/) >/dev/null 2>&1 || bad "certtool"
    psktool -u alice -p psk/keys.psk >/dev/null && psktool -u mallory -p bad.psk >/dev/null || bad "psktool"
    start_fq x -t -e 0 --tls-creds "$T/x509" d.qcow2 || bad "serve --tls-creds x509"
    nbdcopy "nbds+unix:///?socket=$T/x.sock&tls-certificates=$T/cli" tls.raw && cmp -s tls.raw d.ref ||
        bad "x509: nbdcopy over TLS"
    nbdinfo "nbd+unix:///?socket=$T/x.sock" >/dev/null 2>&1 && bad "x509: plaintext client served"
    nbdinfo "nbds+unix:///?socket=$T/x.sock&tls-certificates=$T/nocert" >/dev/null 2>&1 &&
        bad "x509: client without a certificate served"
    nbdinfo --size "nbds+unix:///?socket=$T/x.sock&tls-certificates=$T/cli" >/dev/null ||
        bad "x509: the server stopped serving"
    stop x
    start_fq p -t -e 0 --object "tls-creds-psk,id=tls0,dir=$T/psk,endpoint=server" --tls-creds tls0 d.qcow2 ||
        bad "serve --tls-creds psk"
    nbdcopy "nbds+unix://alice@/?socket=$T/p.sock&tls-psk-file=$T/psk/keys.psk" psk.raw &&
        cmp -s psk.raw d.ref || bad "PSK: nbdcopy over TLS"
    nbdinfo "nbds+unix://mallory@/?socket=$T/p.sock&tls-psk-file=$T/bad.psk" >/dev/null 2>&1 &&
        bad "PSK: unknown key served"
    stop p
fi

# ---- refusals ----
"$FASTQCOW" serve -k "$T/m.sock" missing.qcow2 2>err.out && bad "missing image served"
grep -q "missing.qcow2" err.out || { bad "message for a missing image"; cat err.out; }
start_fq busy -t -r d.qcow2 || bad "serve busy"
"$FASTQCOW" serve -r -k "$T/busy.sock" d.qcow2 2>err.out && bad "a socket in use taken over"
grep -q "Failed to bind socket" err.out || { bad "message for a socket in use"; cat err.out; }
stop busy
"$FASTQCOW" serve --discard=sometimes d.qcow2 2>/dev/null && bad "bad --discard accepted"
[ $fail = 0 ] && echo "ok: serve lifetimes"
exit $fail
