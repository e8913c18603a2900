#!/usr/bin/env python3
"""bench/lib/compressible.py: write a raw file of realistically compressible
data, for the compressed rows of bench/feature-table.

    compressible.py SIZE SEED FILE

Every 64 KiB cluster is one of (weights in brackets):
  text   [35]  words of a synthetic 4000-word vocabulary, Zipf-weighted,
               with punctuation and line breaks (deflate: about 1/3)
  log    [25]  log lines: timestamps, host and process names, numbers
  rec    [15]  fixed-size binary records (counters, small ints, doubles)
  rand   [15]  random bytes: incompressible (stored uncompressed by
               qemu-img convert -c, so the reader gets a plain cluster)
  mixed  [10]  half text or log, half random
A cluster of text, log or rec is a 64 KiB window at a random offset of a
4 MiB stream of its kind, so no two clusters are alike. No cluster is all
zeros (convert would leave it unallocated and reads of it would be free).
With zlib the clusters compress to about half in all. Deterministic for a
given SEED. Python's random only: no third-party module.
SPDX-License-Identifier: MIT
"""
import itertools
import random
import re
import struct
import sys

CLUSTER = 65536
STREAM = 4 << 20


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    size, seed, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if size % CLUSTER:
        sys.exit("compressible.py: size must be a multiple of 64 KiB")
    rnd = random.Random(seed)

    syll = ["ka", "to", "ri", "an", "el", "mo", "su", "ver", "ing", "ion", "the", "and",
            "st", "re", "pa", "lo", "qu", "ex", "nd", "or"]
    vocab = ["".join(rnd.choice(syll) for _ in range(rnd.randint(1, 4))) for _ in range(4000)]
    cum = list(itertools.accumulate(1.0 / (i + 1) for i in range(len(vocab))))

    def text(n):
        out, ln = [], 0
        while ln < n:
            s = " ".join(rnd.choices(vocab, cum_weights=cum, k=12)) + rnd.choice([". ", ", ", ".\n", "; "])
            out.append(s)
            ln += len(s)
        return "".join(out).encode()[:n]

    hosts = ["web01", "web02", "db1", "cache3", "lb0"]
    procs = ["kernel", "sshd", "nginx", "postgres", "cron", "systemd"]
    msgs = ["connection from %d.%d.%d.%d port %d",
            "request GET /api/v1/items/%d took %d ms status %d",
            "checkpoint complete: wrote %d buffers (%d.%d%%)",
            "eth0: link up, %d Mbps, id=0x%x",
            "session %d opened for user u%d by (uid=%d)"]
    nargs = [len(re.findall("%[dx]", m)) for m in msgs]

    def log(n):
        out, ln, t = [], 0, 1700000000.0
        while ln < n:
            t += rnd.random() * 3
            i = rnd.randrange(len(msgs))
            s = "%.3f %s %s[%d]: %s\n" % (t, rnd.choice(hosts), rnd.choice(procs), rnd.randint(100, 40000),
                                           msgs[i] % tuple(rnd.randint(0, 65535) for _ in range(nargs[i])))
            out.append(s)
            ln += len(s)
        return "".join(out).encode()[:n]

    def records(n):
        b, i = bytearray(), 0
        while len(b) < n:
            b += struct.pack("<IIHHdI", i, rnd.randint(0, 1000), rnd.randint(0, 7), 0,
                             rnd.random() * 100, 0xdeadbeef if rnd.random() < 0.5 else 0)
            i += 1
        return bytes(b[:n])

    streams = {"text": text(STREAM), "log": log(STREAM), "rec": records(STREAM)}
    kinds = ["text"] * 35 + ["log"] * 25 + ["rec"] * 15 + ["rand"] * 15 + ["mixed"] * 10
    with open(path, "wb") as f:
        for _ in range(size // CLUSTER):
            k = rnd.choice(kinds)
            if k == "rand":
                d = rnd.randbytes(CLUSTER)
            elif k == "mixed":
                s = streams[rnd.choice(["text", "log"])]
                o = rnd.randrange(0, STREAM - CLUSTER // 2)
                d = s[o:o + CLUSTER // 2] + rnd.randbytes(CLUSTER // 2)
            else:
                s = streams[k]
                o = rnd.randrange(0, STREAM - CLUSTER)
                d = s[o:o + CLUSTER]
            f.write(d)


if __name__ == "__main__":
    main()
