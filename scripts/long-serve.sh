#!/usr/bin/env bash
# long-serve.sh: a soak of `fastqcow serve` (minutes to hours), beyond what
# the suite's tests/shell/test-serve-*.sh check in seconds:
#   - CLIENTS well-behaved clients (libnbd), each owning a region of a
#     qcow2 overlay over a backing file, issue random reads, writes (FUA
#     or not), write-zeroes and flushes, many in flight, verify
#     every read against their own model, and now and then drop the
#     connection without warning and reconnect;
#   - HOSTILE raw-socket clients at the same time: garbage, options with
#     lying lengths, headers without payloads, bad magics, requests past
#     the end, and floods of reads they never read back;
#   - the server's memory is sampled all along (it must stay bounded);
#   - at the end SIGTERM (it must exit 0), qemu-img check must find the
#     image clean and its content must equal every client's model;
#   - then FUZZ_SECONDS of the protocol fuzzer (scripts/fuzz.sh fuzz-nbd).
#
#   scripts/long-serve.sh                  # 10 minutes
#   DURATION=3600 CLIENTS=8 HOSTILE=4 scripts/long-serve.sh
#   FUZZ_SECONDS=0 ...                     # no fuzzing
#
# Needs python3 with libnbd's bindings (python3-libnbd), qemu-img.
# Prints one RESULT line; exit 0 pass, 1 fail.
# SPDX-License-Identifier: MIT
set -uo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
CLIENTS=${CLIENTS:-4}
HOSTILE=${HOSTILE:-2}
FUZZ_SECONDS=${FUZZ_SECONDS:-300}
SIZE_MB=${SIZE_MB:-512}
FASTQCOW=${FASTQCOW:-build/fastqcow}
[ -x "$FASTQCOW" ] || { echo "long-serve: build first (scripts/build.sh)"; exit 1; }
FASTQCOW=$(realpath "$FASTQCOW")
PY=""
for p in /usr/bin/python3 python3; do "$p" -c 'import nbd' 2>/dev/null && { PY=$p; break; }; done
[ -n "$PY" ] || { echo "long-serve: python3-libnbd missing (scripts/setup.sh)"; exit 1; }
T=$(mktemp -d "${TMPDIR:-/tmp}/long-serve.XXXXXX")
SPID=""
cleanup() { [ -n "$SPID" ] && kill "$SPID" 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
fail=0

qemu-img create -q -f raw "$T/base.raw" ${SIZE_MB}M
qemu-io -f raw -c "write -P 0x11 0 $((SIZE_MB / 2))M" "$T/base.raw" >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=64k -b "$T/base.raw" -F raw "$T/top.qcow2" ${SIZE_MB}M
"$FASTQCOW" serve -t -e 0 --discard=unmap --detect-zeroes=unmap --handshake-limit 2 \
    --fork --pid-file "$T/srv.pid" -k "$T/srv.sock" "$T/top.qcow2" || { echo "long-serve: server did not start"; exit 1; }
SPID=$(cat "$T/srv.pid")
echo "long-serve: $DURATION s, $CLIENTS clients, $HOSTILE hostile, ${SIZE_MB} MiB image, server pid $SPID"

"$PY" - "$T" "$DURATION" "$CLIENTS" "$HOSTILE" "$SIZE_MB" "$SPID" <<'PY'
import os, random, socket, struct, sys, time, multiprocessing as mp
import nbd

T, DURATION, CLIENTS, HOSTILE, SIZE_MB, SPID = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
URI = "nbd+unix:///?socket=%s/srv.sock" % T
SIZE = SIZE_MB << 20
REGION = SIZE // CLIENTS
BLK = 4096

def good(idx, out):
    """One client: random requests on its own region, verified by a model."""
    rnd = random.Random(idx * 7919)
    base = idx * REGION
    half = SIZE // 2
    model = bytearray(REGION)
    # the region starts as the backing file shows it: 0x11 below half, zeros above
    lo = max(0, min(REGION, half - base))
    model[:lo] = b"\x11" * lo
    ops = errors = 0
    deadline = time.time() + DURATION
    h = None
    while time.time() < deadline:
        if h is None:
            h = nbd.NBD(); h.connect_uri(URI)
        pend = []
        for _ in range(rnd.randint(1, 32)):
            off = rnd.randrange(0, REGION // BLK) * BLK
            ln = min(REGION - off, rnd.choice((BLK, 8 * BLK, 64 * BLK, 256 * BLK)))
            op = rnd.random()
            # overlapping requests in flight are undefined: one batch touches disjoint ranges
            if any(not (off + ln <= o or o + l <= off) for o, l, _ in pend):
                continue
            if op < 0.45:
                buf = nbd.Buffer(ln)
                h.aio_pread(buf, base + off)
                pend.append((off, ln, ("r", buf)))
            elif op < 0.8:
                data = bytes([rnd.randrange(256)]) * ln if rnd.random() < 0.5 else os.urandom(ln)
                if rnd.random() < 0.1:
                    data = bytes(ln)
                h.aio_pwrite(nbd.Buffer.from_bytearray(bytearray(data)), base + off,
                             flags=nbd.CMD_FLAG_FUA if rnd.random() < 0.2 else 0)
                model[off:off + ln] = data
                pend.append((off, ln, ("w", None)))
            elif op < 0.9:
                h.aio_zero(ln, base + off, flags=nbd.CMD_FLAG_NO_HOLE if rnd.random() < 0.5 else 0)
                model[off:off + ln] = bytes(ln)
                pend.append((off, ln, ("z", None)))
            else:
                h.aio_flush()
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for off, ln, (kind, buf) in pend:
            if kind == "r" and buf.to_bytearray() != model[off:off + ln]:
                errors += 1
                print("client %d: read at %d+%d differs from the model" % (idx, base + off, ln), flush=True)
        ops += len(pend)
        if rnd.random() < 0.02:
            h.flush()
            del h          # vanish without NBD_CMD_DISC
            h = None
    if h is not None:
        h.flush(); h.shutdown()
    with open("%s/model.%d" % (T, idx), "wb") as f:
        f.write(model)
    out.put((idx, ops, errors))

def hostile(idx):
    rnd = random.Random(1000 + idx)
    deadline = time.time() + DURATION
    held = []
    while time.time() < deadline:
        try:
            s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect("%s/srv.sock" % T)
            s.recv(18)
            k = rnd.randrange(7)
            if k == 0:
                s.sendall(os.urandom(rnd.randrange(1, 4096)))
            elif k == 1:
                s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, rnd.randrange(20), rnd.choice((0xffffffff, 70000, 5))) + os.urandom(64))
            else:
                s.sendall(struct.pack(">I", 3) + struct.pack(">QII", 0x49484156454F5054, 1, 0))
                s.recv(10)
                if k == 2:
                    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, 1, 0, 1 << 20) + b"x" * 100)
                elif k == 3:
                    s.sendall(os.urandom(28))
                elif k == 4:
                    s.sendall(struct.pack(">IHHQQI", 0x25609513, rnd.randrange(1 << 16), rnd.randrange(12), 2, rnd.randrange(1 << 63), rnd.randrange(1 << 32)))
                else:
                    s.setblocking(False)
                    try:
                        for i in range(2000):
                            s.send(struct.pack(">IHHQQI", 0x25609513, 0, 0, i, (i * 1048576) % SIZE, 1 << 20))
                    except (BlockingIOError, OSError):
                        pass
            if rnd.random() < 0.3 and len(held) < 20:
                held.append(s)
            else:
                s.close()
            if held and rnd.random() < 0.1:
                held.pop(0).close()
        except OSError:
            pass
        time.sleep(rnd.random() * 0.05)

def rss():
    try:
        for line in open("/proc/%d/status" % SPID):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return -1
    return 0

q = mp.Queue()
procs = [mp.Process(target=good, args=(i, q)) for i in range(CLIENTS)]
procs += [mp.Process(target=hostile, args=(i,)) for i in range(HOSTILE)]
for p in procs:
    p.start()
peak = 0
while any(p.is_alive() for p in procs):
    peak = max(peak, rss())
    time.sleep(1)
res = [q.get() for _ in range(CLIENTS)]
ops = sum(r[1] for r in res); errs = sum(r[2] for r in res)
print("long-serve: %d requests by the clients, %d mismatches, server peak RSS %d MiB" % (ops, errs, peak >> 10))
sys.exit(1 if errs or peak > (1536 << 10) or peak < 0 else 0)
PY
[ $? = 0 ] || fail=1
kill "$SPID" 2>/dev/null
for i in $(seq 1 500); do st=$(sed 's/.*) //' "/proc/$SPID/stat" 2>/dev/null) || break; [ "${st%% *}" = Z ] && break; sleep 0.1; done
SPID=""
qemu-img check -q "$T/top.qcow2" || { echo "long-serve: qemu-img check failed"; fail=1; }
qemu-img convert -O raw "$T/top.qcow2" "$T/final.raw"
for ((i = 0; i < CLIENTS; i++)); do
    region=$(( (SIZE_MB << 20) / CLIENTS ))
    cmp -s <(dd if="$T/final.raw" bs=4096 skip=$((i * region / 4096)) count=$((region / 4096)) status=none) "$T/model.$i" ||
        { echo "long-serve: client $i's region differs from its model"; fail=1; }
done
if [ "$FUZZ_SECONDS" -gt 0 ]; then
    FUZZ_TARGETS=fuzz-nbd FUZZ_SECONDS=$((FUZZ_SECONDS * 2)) bash scripts/fuzz.sh || fail=1
fi
echo "RESULT long-serve: duration=$DURATION clients=$CLIENTS hostile=$HOSTILE fuzz=$FUZZ_SECONDS pass=$((1 - fail))"
exit $fail
