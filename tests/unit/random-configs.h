/* random-configs.h: the configuration matrix of test-random (cluster
 * size, refcount width, compat level, engine, cache mode, nesting, large
 * sparse disks, lazy refcounts, extended L2, backing chains), one row a
 * run. Only test-random includes it.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TEST_RANDOM_CONFIGS_H
#define FQ_TEST_RANDOM_CONFIGS_H

#include "testlib.h"

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)

struct cfg {
    const char *name;
    const char *fmt;           /* "qcow2" or "raw" */
    uint32_t cluster;
    int refbits;
    int version;
    enum fq_engine_kind engine;
    enum fq_cache_mode cache;
    uint32_t outer_cluster;    /* != 0: nested in a qcow2 image of this cluster size */
    uint64_t size;             /* virtual size */
    uint64_t win;              /* length of each exercised window (large images) */
    int nops;
    unsigned max_workers;
    uint64_t cache_size;       /* cache-size (both caches), 0 = default */
    int lazy;                  /* lazy_refcounts=on */
    int extl2;                 /* extended_l2=on (subclusters) */
    const char *chain;         /* backing chain below the image (chain.h) */
    uint64_t l2_cache;         /* l2-cache-size, 0 = default */
    uint64_t l2_entry;         /* l2-cache-entry-size, 0 = default */
    int batch;                 /* most requests in flight at once (0 = 8) */
    int shm;                   /* the image in memory (/dev/shm, when there is
                                  one): small operations run inline */
    const char *encrypt;       /* LUKS encrypted: cipher-mode "xts" or "cbc"
                                  (passphrase "pw", PBKDF2 for 1 ms) */
};

/* The matrix: every value of each dimension appears at least once, and
 * the risky pairings (1-bit refcounts with tiny clusters, 64-bit refcounts
 * with 2 MiB clusters, v2 with O_DIRECT, nesting across very different
 * cluster sizes, offsets above 4 GiB and across L2 tables, lazy refcounts
 * with O_DIRECT) are present.
 * compat=0.10 images always have 16-bit refcounts (the format says so). */
static const struct cfg configs[] = {
    { "raw-threads", "raw", 0, 0, 0, FQ_ENGINE_THREADS, FQ_CACHE_WRITEBACK, 0,
      16 * MiB, 0, 600, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "raw-uring-none", "raw", 0, 0, 0, FQ_ENGINE_IO_URING, FQ_CACHE_NONE, 0,
      16 * MiB, 0, 600, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c512-rb1-v3-threads-wb", "qcow2", 512, 1, 3, FQ_ENGINE_THREADS, FQ_CACHE_WRITEBACK, 0,
      8 * MiB, 0, 2000, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    /* 64 entries per refcount block and per table cluster: the refcount
     * table must grow every 2 MiB of host file */
    { "c512-rb64-v3-sync-wb-rtgrow", "qcow2", 512, 64, 3, FQ_ENGINE_SYNC, FQ_CACHE_WRITEBACK, 0,
      6 * MiB, 0, 1000, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c512-rb16-v2-uring-none", "qcow2", 512, 16, 2, FQ_ENGINE_IO_URING, FQ_CACHE_NONE, 0,
      4 * MiB, 0, 1000, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c4k-rb64-v3-uring-none-oddsize-lazy", "qcow2", 4096, 64, 3, FQ_ENGINE_IO_URING, FQ_CACHE_NONE, 0,
      24 * MiB + 1536, 0, 1200, 0, 0, 1, 0, NULL, 0, 0, 0, 0, NULL },
    { "c4k-rb16-v2-sync-wb-nested64k", "qcow2", 4096, 16, 2, FQ_ENGINE_SYNC, FQ_CACHE_WRITEBACK, 65536,
      16 * MiB, 0, 1500, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    /* cache-size=256k: two L2 slices of 4 KiB over 1 GiB (qemu's sizing) */
    { "c64k-rb16-v3-uring-wb-smallcache", "qcow2", 65536, 16, 3, FQ_ENGINE_IO_URING, FQ_CACHE_WRITEBACK, 0,
      1 * GiB, 8 * MiB, 1000, 0, 256 * KiB, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c64k-rb1-v3-threads-none-1worker", "qcow2", 65536, 1, 3, FQ_ENGINE_THREADS, FQ_CACHE_NONE, 0,
      1 * GiB, 8 * MiB, 1000, 1, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c64k-rb64-v3-threads-none-nested64k", "qcow2", 65536, 64, 3, FQ_ENGINE_THREADS, FQ_CACHE_NONE, 65536,
      1 * GiB, 8 * MiB, 1000, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c2M-rb64-v3-sync-wb-520G", "qcow2", 2 * MiB, 64, 3, FQ_ENGINE_SYNC, FQ_CACHE_WRITEBACK, 0,
      520 * GiB, 16 * MiB, 300, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c2M-rb16-v2-uring-none", "qcow2", 2 * MiB, 16, 2, FQ_ENGINE_IO_URING, FQ_CACHE_NONE, 0,
      32 * MiB, 0, 300, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c512-rb16-v3-uring-wb-nested2M", "qcow2", 512, 16, 3, FQ_ENGINE_IO_URING, FQ_CACHE_WRITEBACK, 2 * MiB,
      4 * MiB, 0, 800, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    { "c64k-rb16-v3-uring-none-nested512", "qcow2", 65536, 16, 3, FQ_ENGINE_IO_URING, FQ_CACHE_NONE, 512,
      32 * MiB, 0, 600, 0, 0, 0, 0, NULL, 0, 0, 0, 0, NULL },
    /* subclusters: 32 per cluster; writes allocate and zero per subcluster */
    { "c64k-extl2-v3-uring-wb", "qcow2", 65536, 16, 3, FQ_ENGINE_IO_URING, FQ_CACHE_WRITEBACK, 0,
      32 * MiB, 0, 1500, 0, 0, 0, 1, NULL, 0, 0, 0, 0, NULL },
    { "c32k-extl2-v3-threads-none", "qcow2", 32768, 16, 3, FQ_ENGINE_THREADS, FQ_CACHE_NONE, 0,
      16 * MiB, 0, 1500, 0, 0, 0, 1, NULL, 0, 0, 0, 0, NULL },
    /* over backing chains built with known content: reads fall through to
     * raw and qcow2 layers (plain, zero and compressed clusters, a raw file
     * shorter than the disk), partial writes copy from them */
    { .name = "c64k-v3-uring-wb-chain-raw", .fmt = "qcow2", .cluster = 65536, .refbits = 16,
      .version = 3, .engine = FQ_ENGINE_IO_URING, .cache = FQ_CACHE_WRITEBACK, .size = 16 * MiB,
      .nops = 1200, .chain = "raw" },
    { .name = "c4k-v3-threads-none-chain-zlib-raw", .fmt = "qcow2", .cluster = 4096, .refbits = 16,
      .version = 3, .engine = FQ_ENGINE_THREADS, .cache = FQ_CACHE_NONE, .size = 8 * MiB + 4096,
      .nops = 1200, .chain = "raw,qcow2:65536:zlib" },
    { .name = "c32k-extl2-v3-uring-wb-chain-zstd-raw", .fmt = "qcow2", .cluster = 32768,
      .refbits = 16, .version = 3, .engine = FQ_ENGINE_IO_URING, .cache = FQ_CACHE_WRITEBACK,
      .size = 8 * MiB, .nops = 1200, .extl2 = 1, .chain = "raw,qcow2:4096:zstd" },
    { .name = "c64k-v2-sync-wb-chain-qcow2-qcow2", .fmt = "qcow2", .cluster = 65536, .refbits = 16,
      .version = 2, .engine = FQ_ENGINE_SYNC, .cache = FQ_CACHE_WRITEBACK, .size = 16 * MiB,
      .nops = 1000, .chain = "qcow2:16384,qcow2:65536:zlib" },
    /* tiny caches (2-3 L2 entries, slices smaller than a cluster, the
     * smallest refcount cache) with many requests in flight, in every
     * engine: loads shared by several requests, requests parked on them,
     * dirty tables evicted by asynchronous write-backs, all the time */
    { .name = "c64k-v3-uring-none-tinycache", .fmt = "qcow2", .cluster = 65536, .refbits = 16,
      .version = 3, .engine = FQ_ENGINE_IO_URING, .cache = FQ_CACHE_NONE, .size = 64 * MiB,
      .nops = 500, .l2_cache = 1536, .l2_entry = 512, .batch = 24 },
    { .name = "c4k-v3-threads-wb-tinycache", .fmt = "qcow2", .cluster = 4096, .refbits = 16,
      .version = 3, .engine = FQ_ENGINE_THREADS, .cache = FQ_CACHE_WRITEBACK, .size = 16 * MiB,
      .nops = 500, .l2_cache = 1024, .l2_entry = 512, .batch = 24 },
    { .name = "c512-rb16-v3-sync-wb-tinycache", .fmt = "qcow2", .cluster = 512, .refbits = 16,
      .version = 3, .engine = FQ_ENGINE_SYNC, .cache = FQ_CACHE_WRITEBACK, .size = 4 * MiB,
      .nops = 400, .l2_cache = 1024, .batch = 16 },
    { .name = "c64k-v3-default-none-shm-tinycache", .fmt = "qcow2", .cluster = 65536,
      .refbits = 16, .version = 3, .engine = FQ_ENGINE_DEFAULT, .cache = FQ_CACHE_NONE,
      .size = 64 * MiB, .nops = 500, .l2_cache = 1536, .l2_entry = 512, .batch = 24, .shm = 1 },
    { .name = "c64k-extl2-v3-uring-wb-tinycache", .fmt = "qcow2", .cluster = 65536, .refbits = 16,
      .version = 3, .engine = FQ_ENGINE_IO_URING, .cache = FQ_CACHE_WRITEBACK, .size = 64 * MiB,
      .nops = 500, .extl2 = 1, .l2_cache = 3072, .l2_entry = 1024, .batch = 24 },
    /* encrypted: data en/decrypted on offload workers in bounce buffers,
     * unaligned writes as read-modify-writes of sectors, fills of partial
     * clusters read through the decrypting planner */
    { .name = "c64k-v3-uring-none-luks-xts", .fmt = "qcow2", .cluster = 65536, .refbits = 16,
      .version = 3, .engine = FQ_ENGINE_IO_URING, .cache = FQ_CACHE_NONE, .size = 16 * MiB,
      .nops = 800, .batch = 16, .encrypt = "xts" },
    { .name = "c16k-extl2-v3-threads-wb-luks-cbc-chain", .fmt = "qcow2", .cluster = 16384,
      .refbits = 16, .version = 3, .engine = FQ_ENGINE_THREADS, .cache = FQ_CACHE_WRITEBACK,
      .size = 8 * MiB, .nops = 800, .extl2 = 1, .chain = "raw", .encrypt = "cbc" },
    { .name = "c512-v2-sync-wb-luks-xts", .fmt = "qcow2", .cluster = 512, .refbits = 16,
      .version = 2, .engine = FQ_ENGINE_SYNC, .cache = FQ_CACHE_WRITEBACK, .size = 4 * MiB,
      .nops = 600, .encrypt = "xts" },
};

#endif
