#!/bin/bash
# test-serve-bad.sh: hostile and broken NBD clients, through a raw socket
# (Python's standard library only): unknown client flags and magics,
# options whose lengths run past what was sent or claim 4 GiB, every
# option answered with the error the specification names, requests past
# the end, over 32 MiB, unaligned, with unknown commands or flags, writes
# on a read-only export, a bad request magic, a header that never gets its
# payload, clients that never finish the handshake (dropped after
# --handshake-limit), hundreds of idle connections, clients that never read
# their replies. After each, the server must still answer a well-behaved
# client, keep its memory bounded, and stop cleanly with SIGTERM.
# SPDX-License-Identifier: MIT
set -u
. "$TEST_SRCDIR/shell/serve-lib.sh"
command -v qemu-img >/dev/null || { echo "SKIP: qemu-img not installed"; exit 77; }
PY=$(command -v python3 || echo /usr/bin/python3)
cd "$T" || exit 1
qemu-img create -q -f qcow2 d.qcow2 64M
qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' d.qcow2 >/dev/null
start_fq rw -t -e 0 --handshake-limit 2 d.qcow2 || bad "serve rw"
cp d.qcow2 ro.qcow2             # its own image: a writer keeps d.qcow2 locked
start_fq ro -t -e 0 -r ro.qcow2 || bad "serve ro"

"$PY" - "$T/rw.sock" "$T/ro.sock" "$(cat "$T/rw.pid")" <<'PY' || bad "bad clients (see above)"
import os, socket, struct, sys, time

RW, RO, PID = sys.argv[1], sys.argv[2], int(sys.argv[3])
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3e889045565a9
fails = 0

def check(cond, what):
    global fails
    if not cond:
        print("FAIL:", what)
        fails += 1

def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("closed after %d of %d bytes" % (len(b), n))
        b += c
    return b

def closed(s, timeout=5):
    """The server closed the connection (reads end) within timeout."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False

def connect(path=RW, flags=3):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    g = recvn(s, 18)
    assert g[:16] == b"NBDMAGICIHAVEOPT", g
    if flags is not None:
        s.sendall(struct.pack(">I", flags))
    return s

def opt(s, o, data=b"", length=None):
    s.sendall(struct.pack(">QII", IHAVEOPT, o, len(data) if length is None else length) + data)

def reply(s):
    magic, o, typ, ln = struct.unpack(">QIII", recvn(s, 20))
    assert magic == REPLY_MAGIC, hex(magic)
    return o, typ, recvn(s, ln)

def go(s, name=b""):
    opt(s, 7, struct.pack(">I", len(name)) + name + b"\0\0")
    while True:
        o, typ, d = reply(s)
        if typ != 3:
            return typ

def req(s, typ, off=0, ln=0, flags=0, handle=7, payload=b""):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, flags, typ, handle, off, ln) + payload)

def simple(s):
    magic, err, handle = struct.unpack(">IIQ", recvn(s, 16))
    assert magic == 0x67446698, hex(magic)
    return err, handle

def healthy(path=RW):
    """A well-behaved client is served: handshake, read, disconnect."""
    s = connect(path)
    check(go(s) == 1, "GO for a good client")
    req(s, 0, 65536, 4096, handle=99)
    err, h = simple(s)
    data = recvn(s, 4096)
    check(err == 0 and h == 99 and data == b"\x5a" * 4096, "good client read")
    req(s, 2)
    check(closed(s), "server closes after DISC")

def rss_kb():
    for line in open("/proc/%d/status" % PID):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0

ERR = lambda n: (1 << 31) + n

# ---- handshake ----
s = connect(flags=0x80)
check(closed(s), "unknown client flag: closed")
s = connect(); s.sendall(b"X" * 16)
check(closed(s), "bad option magic: closed")
s = connect(); opt(s, 3, b"x")
check(reply(s)[1] == ERR(3), "LIST with data: ERR_INVALID")
opt(s, 5)
check(reply(s)[1] == ERR(2), "STARTTLS without TLS: ERR_POLICY")
opt(s, 99, b"abc")
check(reply(s)[1] == ERR(1), "unknown option: ERR_UNSUP")
opt(s, 7, struct.pack(">I", 100) + b"\0\0")
check(reply(s)[1] == ERR(3), "GO with a name past the option: ERR_INVALID")
opt(s, 7, struct.pack(">I", 4) + b"nope\0\0")
check(reply(s)[1] == ERR(6), "GO for an unknown export: ERR_UNKNOWN")
opt(s, 7, struct.pack(">I", 0) + b"\0\5\0\1")
check(reply(s)[1] == ERR(3), "GO whose info count does not match: ERR_INVALID")
opt(s, 10, struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", 15) + b"base:allocation")
check(reply(s)[1] == ERR(3), "SET_META_CONTEXT before structured replies: ERR_INVALID")
opt(s, 8)
check(reply(s)[1] == 1, "STRUCTURED_REPLY: ACK")
opt(s, 10, struct.pack(">I", 0) + struct.pack(">I", 1) + struct.pack(">I", 999) + b"base:")
check(reply(s)[1] == ERR(3), "SET_META_CONTEXT with a query past the option: ERR_INVALID")
opt(s, 2)
check(reply(s)[1] == 1 and closed(s), "ABORT: ACK, then closed")
# an option claiming 4 GiB: skipped as it comes, never buffered
s = connect(); opt(s, 7, b"\0" * 1000, length=0xffffffff)
time.sleep(0.2)
check(rss_kb() < 200000, "4 GiB option: memory stays bounded")
s.close()
s = connect(); opt(s, 1, b"", length=0xffffffff)
check(closed(s), "EXPORT_NAME of 4 GiB: closed")
s = connect(); opt(s, 100, b"\0" * 70000)
check(reply(s)[1] == ERR(9), "a 70000-byte option: ERR_TOO_BIG")
s.close()
# an option whose data never comes, and a client that sends nothing: both
# dropped by the handshake limit (2 s) while others are served
lazy = connect(); opt(lazy, 7, b"\0\0", length=10)
silent = connect(flags=None)
healthy()
check(closed(lazy, 6) and closed(silent, 6), "handshake limit drops stalled clients")

# ---- transmission ----
s = connect(); check(go(s) == 1, "GO")
size = 64 << 20
req(s, 0, size - 512, 4096, handle=1)
check(simple(s) == (22, 1), "read past the end: EINVAL")
req(s, 1, size - 512, 4096, handle=2, payload=b"w" * 4096)
check(simple(s) == (28, 2), "write past the end: ENOSPC")
req(s, 0, 1 << 63, 512, handle=3)
check(simple(s) == (22, 3), "read at 2^63: EINVAL")
req(s, 0, 0, (32 << 20) + 1, handle=4)
check(simple(s) == (22, 4), "read over 32 MiB: EINVAL")
req(s, 1, 0, (32 << 20) + 1, handle=5, payload=b"\0" * ((32 << 20) + 1))
check(simple(s) == (22, 5), "write over 32 MiB: EINVAL, payload skipped")
req(s, 42, 0, 0, handle=6)
check(simple(s) == (22, 6), "unknown command: EINVAL")
req(s, 0, 0, 512, flags=0x8000, handle=8)
check(simple(s) == (22, 8), "unknown flag: EINVAL")
req(s, 7, 0, 512, handle=9)
check(simple(s) == (22, 9), "block status without contexts: EINVAL")
req(s, 1, 1, 3, handle=10, payload=b"abc")
check(simple(s) == (0, 10), "unaligned write")
req(s, 0, 0, 5, handle=11)
check(simple(s) == (0, 11) and recvn(s, 5) == b"\x5aabc\x5a", "unaligned read")
req(s, 3, 0, 0, handle=12)
check(simple(s) == (0, 12), "flush")
s.sendall(b"\xde\xad" * 14)
check(closed(s), "bad request magic: closed")
r = connect(RO); check(go(r) == 1, "GO read-only")
req(r, 1, 0, 512, handle=1, payload=b"\0" * 512)
check(simple(r) == (1, 1), "write on read-only: EPERM")
req(r, 4, 0, 512, handle=2)
check(simple(r) == (1, 2), "trim on read-only: EPERM")
r.close()
# a header whose payload never comes: others are still served
hang = connect(); go(hang)
req(hang, 1, 0, 1 << 20, handle=1, payload=b"\1" * 1000)
healthy()
hang.close()

# ---- many connections, clients that never read ----
idle = [connect() for _ in range(300)]
healthy()
check(rss_kb() < 300000, "300 idle connections: memory %d KiB" % rss_kb())
for i in idle:
    i.close()
greedy = []
for _ in range(4):
    g = connect(); go(g)
    g.setblocking(False)
    try:
        # 4096 reads of 1 MiB each (4 GiB of replies), never read back
        for i in range(4096):
            g.send(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, (i % 48) << 20, 1 << 20))
    except BlockingIOError:
        pass
    greedy.append(g)
time.sleep(1)
healthy()
check(rss_kb() < 600000, "clients that never read: memory %d KiB" % rss_kb())
for g in greedy:
    g.close()
healthy()
sys.exit(1 if fails else 0)
PY
stop rw
stop ro
qemu-img check -q d.qcow2 || bad "qemu-img check"
[ $fail = 0 ] && echo "ok: bad clients"
exit $fail
