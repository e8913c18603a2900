/* qcow2.h: the qcow2 on-disk format (every field, flag and limit) and the
 * driver's internal state shared by the qcow2_*.c modules.
 *
 * Module map (src/drivers/qcow2/):
 *   driver.c        the device ops table, the registry entry (probe, open,
 *                   create, measure) and the whole-image calls' adapters
 *   header.c        parse / validate / write the header and extensions
 *   cache.c         cluster-sized metadata cache (L2 tables, refblocks)
 *   refcount.c      refcounts, cluster allocation, refcount table growth,
 *                   deferred frees, ordered metadata write-back (flush)
 *   overlap.c       does a range touch live metadata (sorted indexes)
 *   map.c           L1/L2 lookup, extent classification, L2 allocation
 *   rw.c            request state machines (read, write, zero, discard)
 *   open.c          open / close / info / map
 *   create.c        creating images
 *   crypt.c         LUKS encryption: unlock, new headers, data en/decryption
 *   check.c         consistency check: counting (check.h)
 *   check_compare.c the check's comparison of refcounts and COPIED flags
 *   check_state.c   the check's per-cluster state and messages
 *   check_repair.c  the repairs the check makes
 *   scan.c          many tables read at once for whole-image walks (scan.h)
 *   compress.c      compressed cluster writes (ops.h)
 *   bitmap*.c       persistent dirty bitmaps (bitmap.h)
 *   snapshot.c      internal snapshots: table, create/apply/delete
 *   resize.c        resize, rebase, emptying (ops.h)
 *   amend.c         amend: compat level, lazy refcounts, refcount width
 *   txn.c           metadata transactions: built in free space, switched
 *                   in by one header write (txn.h)
 *   defrag*.c       in-place defragmentation (defrag.h)
 *   datafile.c      external data files: the name, the data child,
 *                   placing data clusters there
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_QCOW2_H
#define FQ_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "driver.h"
#include "taskpool.h"
#include "util.h"

/* ---- on-disk format ---------------------------------------------------- */

#define QCOW2_MAGIC 0x514649fbu          /* "QFI\xfb" */

/* Header field offsets (big-endian). */
#define QH_MAGIC              0
#define QH_VERSION            4
#define QH_BACKING_OFFSET     8
#define QH_BACKING_SIZE       16
#define QH_CLUSTER_BITS       20
#define QH_SIZE               24
#define QH_CRYPT_METHOD       32
#define QH_L1_SIZE            36
#define QH_L1_OFFSET          40
#define QH_RT_OFFSET          48
#define QH_RT_CLUSTERS        56
#define QH_NB_SNAPSHOTS       60
#define QH_SNAPSHOTS_OFFSET   64
#define QH_V2_LENGTH          72          /* version 2 header ends here */
#define QH_INCOMPAT           72
#define QH_COMPAT             80
#define QH_AUTOCLEAR          88
#define QH_REFCOUNT_ORDER     96
#define QH_HEADER_LENGTH      100
#define QH_V3_MIN_LENGTH      104
#define QH_COMPRESSION_TYPE   104
#define QH_V3_LENGTH          112         /* what we write: + type + padding */

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY        (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT      (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE    (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION  (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2        (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN        0x1full
/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS     (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_RAW    (1ull << 1)

/* Header extension types. */
#define QEXT_END            0x00000000u
#define QEXT_BACKING_FORMAT 0xe2792acau
#define QEXT_FEATURE_TABLE  0x6803f857u
#define QEXT_BITMAPS        0x23852875u
#define QEXT_CRYPTO         0x0537be77u
#define QEXT_DATA_FILE      0x44415441u

/* crypt_method: none, the legacy AES method, LUKS (its header in clusters
 * that the QEXT_CRYPTO extension points at: be64 offset, be64 length). */
#define QCOW2_CRYPT_NONE 0u
#define QCOW2_CRYPT_AES  1u
#define QCOW2_CRYPT_LUKS 2u
#define QEXT_CRYPTO_LEN  16u

/* Limits (ours; the spec's and common practice's floor). */
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES     (32u << 20)
#define QCOW2_MAX_RT_BYTES     (8u << 20)
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_MAX_SNAPSHOTS    65536
#define QCOW2_MAX_DATA_FILE_NAME 4095

/* L1 entry. */
#define L1E_OFFSET_MASK   0x00fffffffffffe00ull   /* bits 9-55 */
#define L1E_RESERVED_MASK 0x7f000000000001ffull
/* L2 entry. */
#define L2E_COPIED        (1ull << 63)
#define L2E_COMPRESSED    (1ull << 62)
#define L2E_OFFSET_MASK   0x00fffffffffffe00ull   /* standard: bits 9-55 */
#define L2E_ZERO          (1ull << 0)             /* v3 standard, no extl2 */
#define L2E_STD_RESERVED  0x3f000000000001feull   /* bits 1-8, 56-61 */
/* Refcount table entry. */
#define RTE_OFFSET_MASK   0xfffffffffffffe00ull
#define RTE_RESERVED_MASK 0x00000000000001ffull

/* Extended L2 bitmap: bit i = subcluster i allocated, bit 32+i = zero. */
#define QCOW2_SUBCLUSTERS 32

/* ---- metadata cache ----------------------------------------------------- */

struct qcow2;
struct qcache;

/* A request parked until a table arrives or a write-back ends; `wake`
 * runs from the loop with 0 or the error that stopped it. */
struct qcache_waiter {
    struct qcache_waiter *next;
    void (*wake)(struct qcache_waiter *w, int err);
};

/* Waiters woken in the order they came (so that requests parked together
 * go on in their order: allocations follow submissions). */
struct qwait_list {
    struct qcache_waiter *head, **tail;
};
static inline void qwait_add(struct qwait_list *l, struct qcache_waiter *w)
{
    w->next = NULL;
    if (!l->head)
        l->tail = &l->head;
    *l->tail = w;
    l->tail = &w->next;
}
/* Wake every waiter of l (emptied first: a woken one may wait again). */
static inline void qwait_wake_all(struct qwait_list *l, int err)
{
    struct qcache_waiter *w = l->head;

    l->head = NULL;
    while (w) {
        struct qcache_waiter *next = w->next;
        w->next = NULL;
        w->wake(w, err);
        w = next;
    }
}

/* The asynchronous context of one request's planning step (s->aw): a miss
 * parks the request instead of blocking, and the entries the step touched
 * stay pinned ("held") until the step completes, so that a step that
 * parked finds them again when it is planned anew. */
#define QCOW2_HELD_MAX 16
/* A step that parked this often runs synchronously (blocking reads): a
 * scan over more tables than a tiny cache holds must still end. */
#define QCOW2_PARK_MAX 8
struct qmeta_wait {
    struct qcache_waiter w;
    unsigned parks;           /* times the current step parked */
    unsigned nheld;
    struct qcache_entry *held[QCOW2_HELD_MAX];
    struct qcache *held_c[QCOW2_HELD_MAX];
};

/* Returned (internally, never past the request planner) by a call that
 * parked its request on s->aw's waiter. */
#define QCOW2_PARKED (-EINPROGRESS)

enum { QCE_FREE, QCE_READY, QCE_LOADING };

struct qcache_load;

struct qcache_entry {
    uint64_t offset;          /* host offset of the first byte cached */
    uint8_t *data;            /* `len` bytes, aligned */
    uint32_t len;             /* a cluster, or an L2 slice */
    uint8_t state;            /* QCE_* */
    bool dirty;               /* changed since its content was last written */
    unsigned pin;             /* users holding a pointer */
    unsigned writing;         /* write-back copies of it in flight */
    uint64_t lru;             /* last use stamp */
    struct qcache_load *load; /* QCE_LOADING: the read in flight */
    struct qcache_entry *hnext;
    struct qcache_entry *prev, *next;   /* clean or dirty list while evictable */
    size_t slot;              /* index in qcache.all */
};

/* What a cache's owner decides for it. */
struct qcache_hooks {
    const char *what;         /* "L2 table" / "refcount block" for messages */
    unsigned tag;             /* FQ_TAG_L2 or FQ_TAG_REFBLOCK */
    /* before any write of an entry: 0, or -errno to refuse it */
    int (*check_write)(struct qcow2 *s, uint64_t off, uint64_t len, unsigned tag);
    /* only dirty entries could make room: write back whatever they depend
     * on and them, synchronously (NULL: an entry alone may be written) */
    int (*evict_dirty)(struct qcow2 *s);
    /* the same without blocking: start (or join) an asynchronous
     * write-back and park `w` on it (QCOW2_PARKED), or return 0 when it
     * could only be done synchronously and was, or -errno */
    int (*evict_dirty_async)(struct qcow2 *s, struct qcache_waiter *w);
};

struct qcache {
    struct qcow2 *s;
    const struct qcache_hooks *hooks;
    const char *what;
    bool is_l2;
    uint32_t cs;              /* whole table: the cluster size */
    uint32_t slice;           /* entry size of qcache_get_part (L2 slices) */
    size_t target;            /* slices the configured size holds */
    size_t count;             /* entries in use */
    size_t units;             /* slices their data holds (a whole table:
                                 cs / slice); more than target only while
                                 pinned, loading or dirty entries need it */
    struct qcache_entry **all;
    size_t cap;
    struct qcache_entry **hash;
    size_t hsize;
    struct qcache_entry clean, dirty;   /* evictable entries, oldest first */
    unsigned loads;           /* reads in flight */
    uint64_t stamp;
    uint64_t clean_stamp;     /* stamp at the last clean-interval pass */
    uint8_t *spare;           /* one free data buffer of `slice` bytes */
    uint8_t *pool;            /* free slices (slice < cs), linked */
    uint8_t **chunks;         /* what the slices are carved from */
    size_t nchunks;
};

/* An entry's write-back copy in flight (qcache_snapshot_dirty). */
struct qcache_wio {
    struct fq_req req;        /* first */
    struct iovec iov;
    struct qcache *c;
    struct qcache_entry *e;
    uint8_t *buf;
    struct qcache_wio *next;
};

/* ---- driver state -------------------------------------------------------- */

struct qext {                 /* an extension we keep as is */
    uint32_t type;
    uint32_t len;
    uint8_t *data;
};
FQ_VECTOR(qext_vec, struct qext)

struct qfree {                /* a deferred refcount decrement */
    uint64_t offset;
    uint64_t nb_clusters;
};
FQ_VECTOR(qfree_vec, struct qfree)

/* A refcount table entry naming no usable block (damage.c): its index and
 * the value on disk. */
struct qrt_bad {
    uint64_t ri, raw;
};
FQ_VECTOR(qrt_bad_vec, struct qrt_bad)

/* Sorted host offsets of one kind of table, and those added since. */
struct qmeta_set {
    uint64_t *v, *add;
    size_t n, nadd, cap_add;
};

struct qreq;
struct qwb;

/* An allocating write in flight over guest clusters [first, first + n). */
struct qalloc {
    uint64_t first, n;
    struct qreq *waiters;     /* requests parked until this one links */
    bool bypassed;            /* a synchronous request went ahead of it */
    struct qalloc *next;
};

struct qcow2 {
    struct fq_bdev *bs;       /* this device */
    struct fq_bdev *file;     /* where the image lives */
    struct fq_bdev *data;     /* where guest data lives: `file`, or the
                                 external data file (NULL until the core
                                 attached it: data I/O fails) */
    char *data_file_opt;      /* the caller's data-file option */
    char *data_file_hdr;      /* the name the image records (a copy) */

    /* header */
    uint32_t version;
    uint32_t cluster_bits;
    uint64_t cluster_size;
    uint32_t header_length;
    uint64_t incompat, compat, autoclear;
    uint32_t refcount_order;
    uint8_t compression_type;
    uint32_t crypt_method;    /* QCOW2_CRYPT_* */
    uint64_t crypt_hdr_off;   /* LUKS: the encryption header's clusters */
    uint64_t crypt_hdr_len;   /* (its extension; 0: none) */
    struct fq_cipher *crypt;  /* LUKS: the unlocked data cipher (crypt.c) */
    struct fq_encrypt_info *crypt_info; /* LUKS: its header, for info */
    char *backing_file;
    char *backing_format;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    struct qext_vec exts;     /* unknown extensions, preserved */
    uint8_t *feature_table;   /* raw feature-name table (for messages) */
    uint32_t feature_table_len;

    /* L1 */
    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t *l1;             /* host byte order */
    uint8_t *l1_dirty;        /* one flag per 512-byte sector of the L1 */

    /* L2 geometry */
    bool extl2;
    uint32_t l2_entry_size;   /* 8 or 16 bytes */
    uint32_t l2_bits;         /* log2(entries per L2 table) */
    uint64_t l2_entries;
    uint64_t subcluster_size;

    /* refcounts */
    uint64_t rt_offset;
    uint32_t rt_clusters;
    uint64_t rt_entries;
    uint64_t *rt;             /* host byte order */
    uint64_t rt_hi;           /* entries past this one are all 0 */
    struct qrt_bad_vec rt_bad;/* entries set aside as damaged (damage.c);
                                 0 in rt, counted in rt_hi */
    /* sorted offsets of the L2 tables [0] and refcount blocks [1] for the
     * overlap checks (overlap.c), valid while meta_gen and the tables they
     * were built from are unchanged */
    uint64_t meta_gen, meta_idx_gen;
    struct qmeta_set meta_idx[2];
    const uint64_t *meta_idx_l1, *meta_idx_rt;
    uint32_t meta_idx_l1_size;
    bool rt_dirty;
    uint32_t refcount_bits;
    uint64_t refcount_max;
    uint32_t rb_bits;         /* log2(entries per refcount block) */
    uint64_t free_hint;       /* lowest cluster index that may be free */
    bool flush_owed;          /* refcount blocks, a header or the data of
                                 clusters about to be linked were written and
                                 no flush has succeeded since: one must
                                 precede the tables that depend on them */

    struct qcache l2_cache;
    struct qcache rb_cache;
    struct qmeta_wait *aw;    /* the planning step running in an
                                 asynchronous context, or NULL */
    struct qwb *wb;           /* the asynchronous write-back in flight */
    uint64_t wb_seq;          /* write-backs started (each one's number) */
    uint64_t wb_full_done;    /* number of the last whole one that ended well */
    struct {                  /* counts, for tests and benchmarks */
        uint64_t loads;       /* asynchronous table reads started */
        uint64_t joined;      /* misses that joined a read in flight */
        uint64_t sync_fills;  /* synchronous callers that read a table
                                 being loaded themselves */
        uint64_t wbs;         /* asynchronous write-backs */
        uint64_t evict_parks; /* steps parked on a write-back to make room */
        uint64_t narrow_grows;/* table growths beside a write-back */
    } stats;
    unsigned alloc_parked;    /* allocating steps parked: later ones queue */
    struct qwait_list alloc_queue;   /* ... here, in order */
    uint64_t clean_interval_ns, next_clean;   /* cache-clean-interval */

    struct qfree_vec pending_frees;
    struct qalloc *allocs;    /* allocating writes in flight */
    unsigned data_inflight;   /* reads and writes of host clusters in flight */
    struct fq_freelist req_fl, task_fl;   /* the planner's requests and tasks */

    struct fq_depth *depth;   /* extents in flight per request (measured,
                                 or forced by max_workers) */
    bool readonly;
    bool corrupt;             /* set corrupt bit on disk; refuse writes */
    bool dirty_set;           /* lazy refcounts: dirty bit is on disk */
    bool header_dirty;
    bool check_mode;
    uint64_t comp_next;       /* host byte offset where the next compressed
                                 cluster may go, inside a cluster that
                                 compressed data already holds a reference
                                 to; 0 = none. Reset when that cluster's
                                 refcount drops to 0 (refcount.c). */
    int sparse_prealloc;      /* -1 unknown; 1: many allocated clusters are
                                 holes in the file (metadata preallocation) */
    /* the file extended ahead of allocating writes (qcow2_extend_ahead):
     * blocks up to ahead_end are allocated; ahead_base is the file length
     * before the first extension (0 = none yet) */
    uint64_t ahead_end, ahead_base;
    bool ahead_off;           /* the file cannot, or an extension failed */
    struct qbitmaps *bm;      /* persistent bitmaps (bitmap.h), loaded on
                                 first use; NULL before */
};

/* ---- header.c ---- */
int qcow2_read_header(struct qcow2 *s, char *err);
/* Rewrite the header cluster (fields, extensions, backing name). */
int qcow2_write_header(struct qcow2 *s);
/* Describe an incompatible feature bit by name (feature table or ours). */
const char *qcow2_feature_name(struct qcow2 *s, int type, int bit, char *buf, size_t len);
/* The feature-name table this library writes into new images. */
int qcow2_default_feature_table(uint8_t **out, uint32_t *len);
int qcow2_load_l1(struct qcow2 *s, char *err);
/* Mark the image corrupt on disk and in memory; `why` is logged. */
void qcow2_signal_corruption(struct qcow2 *s, const char *fmt, ...) FQ_PRINTF(2, 3);

/* ---- damage.c: refcount table entries naming no usable block ---- */
/* Set entry ri (value `raw` on disk) aside; entries come in table order. */
int qcow2_rt_damage_note(struct qcow2 *s, uint64_t ri, uint64_t raw);
/* Whether entry ri was set aside (its value on disk in *raw). */
bool qcow2_rt_bad(const struct qcow2 *s, uint64_t ri, uint64_t *raw);
/* Whether entry ri was set aside as not aligned to a cluster (one past
 * the addressable range reads as zeros where qemu reads it). */
bool qcow2_rt_unaligned(const struct qcow2 *s, uint64_t ri);
/* The corruption message for entry ri of value raw. */
void qcow2_rt_bad_describe(const struct qcow2 *s, uint64_t ri, uint64_t raw, char *buf,
                           size_t len);
/* A refcount counted by damaged entry ri was needed: mark the image
 * corrupt (qemu's message), return -EIO. */
int qcow2_rt_bad_fail(struct qcow2 *s, uint64_t ri);
/* -EIO (image marked corrupt) if any entry is damaged, else 0: for the
 * operations that rebuild refcount structures from the old ones. */
int qcow2_rt_damage_guard(struct qcow2 *s);
/* The value to write for table entry ri (the damaged one as found). */
uint64_t qcow2_rt_disk_entry(const struct qcow2 *s, uint64_t ri);
/* The refcount table as it is on disk (host order), in *out (malloc'd). */
int qcow2_rt_read_raw(struct qcow2 *s, uint64_t **out);
/* New refcount structures replaced the damaged ones. */
void qcow2_rt_damage_clear(struct qcow2 *s);

/* ---- bitmap.c, bitmap_ops.c: persistent dirty bitmaps ---- */
struct qbitmaps;
/* Read-write open: track the enabled bitmaps (tables loaded, flagged in
 * use on disk). -EINVAL (message in err) for a damaged directory, which
 * is then never written; or an I/O error. */
int qcow2_bitmaps_track(struct qcow2 *s, char *err);
/* Bytes [off, off + len) of the disk changed: set the tracked bits. */
void qcow2_bitmaps_dirty(struct qcow2 *s, uint64_t off, uint64_t len);
/* Store what changed (all tracked bitmaps consistent on disk), always if
 * `force`; flag the tracked ones in use again if `reopen`. */
int qcow2_bitmaps_store(struct qcow2 *s, bool force, bool reopen, char *err);
void qcow2_bitmaps_free(struct qcow2 *s);
/* The disk changed size: the bitmaps follow it (stored with the rest). */
int qcow2_bitmaps_resized(struct qcow2 *s);
/* Bytes the persistent bitmaps need in a copy with clusters of `cs`
 * bytes (each wholly allocated, with its table and the directory, as
 * `measure` reports them); 0 without bitmaps. */
int qcow2_bitmaps_size(struct qcow2 *s, uint64_t cs, uint64_t *out, char *err);
/* The bitmaps of the directory (fq_bitmap_list). */
int qcow2_bitmap_list(struct qcow2 *s, struct fq_bitmap **out, int *count, char *err);
/* fq_bitmap_change, the bits of a merge, fq_bitmap_status. */
int qcow2_bitmap_change(struct qcow2 *s, const char *name, int op, uint64_t gran, char *err);
int qcow2_bitmap_set(struct qcow2 *s, const char *name, uint64_t off, uint64_t len, char *err);
int qcow2_bitmap_status(struct qcow2 *s, const char *name, uint64_t off, uint64_t len,
                        uint64_t *run, bool *dirty, char *err);

/* ---- datafile.c ---- */
/* The image keeps its guest data in an external data file. */
static inline bool qcow2_has_data_file(const struct qcow2 *s)
{
    return (s->incompat & QCOW2_INCOMPAT_DATA_FILE) != 0;
}
/* ... which is a raw image of the disk (data_file_raw). */
static inline bool qcow2_data_raw(const struct qcow2 *s)
{
    return qcow2_has_data_file(s) && (s->autoclear & QCOW2_AUTOCLEAR_DATA_RAW);
}
/* ... and is attached (guest data goes elsewhere than the image file). */
static inline bool qcow2_separate_data(const struct qcow2 *s)
{
    return s->data && s->data != s->file;
}
/* The name the header extension records into buf: 0, -ENOENT (none),
 * -ENAMETOOLONG. */
int qcow2_data_file_name(struct qcow2 *s, char *buf, size_t len);
/* Record `name` in the header extension (NULL: drop it); in memory, the
 * next header write stores it. */
int qcow2_set_data_file_name(struct qcow2 *s, const char *name);
/* At open, after the header: the data-file option against the image's
 * bits (qemu's messages); s->data is the image file without a data file. */
int qcow2_data_file_open_check(struct qcow2 *s, const struct fq_open_opts *o, char *err);
/* The device ops data_file and set_data_file (driver.h). */
int qcow2_data_file_op(struct fq_bdev *bs, const char **name, bool *from_image);
int qcow2_set_data_file(struct fq_bdev *bs, struct fq_bdev *data, char *err);
/* Host clusters for guest clusters [gc, gc + n): allocated in the image
 * file, or with a data file the guest offset itself (nothing counted). */
int qcow2_alloc_data(struct qcow2 *s, uint64_t gc, uint64_t n, uint64_t *host);
/* Give back data clusters that were never linked (nothing with a data
 * file). */
void qcow2_unref_data(struct qcow2 *s, uint64_t host, uint64_t n);
/* -ENOTSUP and "WHAT is not supported with an external data file" for
 * an image that has one; else 0. */
int qcow2_data_refuse(struct qcow2 *s, const char *what, char *err);
/* Flush the data file if it is not the image file. */
int qcow2_data_flush(struct qcow2 *s);
/* Map every guest cluster from guest offset `from` on at its own offset
 * in the data file (what data_file_raw and preallocation make): the L2
 * tables only; entries already mapped stay. */
int qcow2_data_prealloc(struct qcow2 *s, uint64_t from);
/* amend: the data file name and raw flag (checked before anything
 * changes, written with one header write); a downgrade to version 2
 * refused. */
int qcow2_data_amend(struct qcow2 *s, const struct fq_amend_opts *o, char *err);
/* After a resize from `old_size`: the data file sized to the disk, and
 * with data_file_raw the new clusters mapped. */
int qcow2_data_resize(struct qcow2 *s, uint64_t old_size, char *err);

/* ---- cache.c ---- */
/* A cache of `entries` entries; L2 caches get entries of `slice` bytes
 * from qcache_get_part (slice = cluster size: whole tables). */
int qcache_init(struct qcache *c, struct qcow2 *s, size_t entries, uint32_t slice,
                const struct qcache_hooks *h);
void qcache_destroy(struct qcache *c);
/* Get the whole table at `offset` (loaded from disk unless `fresh`, which
 * gives a zeroed, dirty entry), synchronously: a miss blocks. Pinned
 * until qcache_put. With L2 slices cached, they are merged into the whole
 * table first (-EBUSY if one of them is in use: whole-table callers run
 * with the image idle). In a request's asynchronous context (s->aw) a
 * miss parks it instead (QCOW2_PARKED). */
int qcache_get(struct qcache *c, uint64_t offset, bool fresh, struct qcache_entry **out);
/* The request path's get: the entry covering `offset`: an L2 slice (or
 * the whole table where it is cached whole), a refcount block. A fresh
 * entry never parks: it takes a clean entry's place or the cache grows
 * past its size until write-backs clean enough entries. */
int qcache_get_part(struct qcache *c, uint64_t offset, bool fresh, struct qcache_entry **out);
void qcache_put(struct qcache *c, struct qcache_entry *e);
static inline void qcache_mark_dirty(struct qcache_entry *e) { e->dirty = true; }
/* Write every dirty entry (synchronously). */
int qcache_write_dirty(struct qcache *c);
bool qcache_has_dirty(struct qcache *c);
/* Write the whole-cluster entry at `offset` if it is dirty. */
int qcache_write_one(struct qcache *c, uint64_t offset);
/* Has the whole-cluster entry at `offset` a write-back copy in flight? */
bool qcache_writing(struct qcache *c, uint64_t offset);
/* Drop the entries of the table at `offset` without writing them (its
 * cluster was freed). */
void qcache_discard(struct qcache *c, uint64_t offset);
/* In an asynchronous context: park unless `n` entries can be had without
 * writing anything back (clean or free ones), starting a write-back to
 * make room. 0 or QCOW2_PARKED or -errno. */
int qcache_reserve(struct qcache *c, size_t n);
/* Drop the pins a planning step held (its step completed or failed). */
void qcache_release_held(struct qmeta_wait *mw);
/* Snapshot dirty entries into write copies (the entries become clean
 * and stay resident, unevictable, until their copy is written): every
 * one, or with max_units the oldest evictable ones holding up to that
 * many slices (*partial, if given, tells whether dirty ones were left).
 * *list gets them. -errno (nothing taken) if the owner refuses a write. */
int qcache_snapshot_dirty(struct qcache *c, size_t max_units, struct qcache_wio **list, unsigned *n,
                          bool *partial);
/* Submit a copy's write to the image file; `cb` gets the fq_req (whose
 * opaque is `opaque`). */
void qcache_wio_submit(struct qcache_wio *w, fq_req_cb *cb, void *opaque);
/* A copy was written (ret 0) or not (the entry is dirty again); frees it. */
void qcache_wio_finish(struct qcache_wio *w, int ret);
/* Drop every entry nobody uses, dirty ones unwritten (what they cache was
 * replaced on disk). */
void qcache_drop_all(struct qcache *c);
/* Drop clean, unused entries not used since the last call. */
void qcache_clean_unused(struct qcache *c);
/* Reads in flight. */
bool qcache_busy(const struct qcache *c);
/* cache-clean-interval: drop the entries of both caches not used since
 * the last pass, once an interval passed (checked as requests come). */
void qcow2_cache_tick(struct qcow2 *s);

/* ---- wb.c ---- */
/* Write back asynchronously (the order of qcow2_writeback) and park `w`
 * until it ended (QCOW2_PARKED; it may have joined one in flight).
 * Returns 0 when there was nothing to write or it could only be done
 * synchronously and was, or -errno. */
int qcow2_wb_start(struct qcow2 *s, struct qcache_waiter *w);
/* Park `w` on the write-back in flight; if it is a partial one, a whole
 * one starts as soon as it ends (before its waiters run), so a flush
 * waiting for a whole one is never overtaken by evictions. */
void qcow2_wb_join_whole(struct qcow2 *s, struct qcache_waiter *w);
/* The caches' evict_dirty_async hook: the same, with only the oldest
 * part of the dirty L2 entries when they are many (see wb.c). */
int qcow2_wb_evict(struct qcow2 *s, struct qcache_waiter *w);

/* ---- refcount.c ---- */
int qcow2_load_refcount_table(struct qcow2 *s, char *err);
/* Entry i of a refcount block of `bits`-bit entries; set it to v (which
 * fits the width). */
uint64_t qcow2_rc_entry(const uint8_t *blk, unsigned bits, uint64_t i);
void qcow2_rc_set_entry(uint8_t *blk, unsigned bits, uint64_t i, uint64_t v);
/* Refcount of host cluster number `cluster`. */
int qcow2_get_refcount(struct qcow2 *s, uint64_t cluster, uint64_t *out);
/* Add `delta` to the refcount of n clusters starting at host offset `off`. */
int qcow2_update_refcount(struct qcow2 *s, uint64_t off, uint64_t n, int64_t delta);
/* Allocate n contiguous clusters (refcount 1). Returns host offset. */
int qcow2_alloc_clusters(struct qcow2 *s, uint64_t n, uint64_t *out);
/* Release clusters after the metadata that references them is on disk. */
int qcow2_free_deferred(struct qcow2 *s, uint64_t off, uint64_t n);
/* Ordered write-back: refblocks, flush, L2 tables, flush, L1 + header,
 * flush; then apply deferred frees. */
int qcow2_writeback(struct qcow2 *s);
/* Fresh data clusters [start, end) (host offsets) are about to be
 * written: make sure the file's blocks there and past them are allocated
 * (extending the file ahead in steps), so that data writes are not
 * extending writes, which the kernel performs one at a time. Best effort:
 * nothing is reported. */
void qcow2_extend_ahead(struct qcow2 *s, uint64_t start, uint64_t end);
/* At close: cut what the extensions left past the last cluster in use. */
void qcow2_trim_ahead(struct qcow2 *s);
/* Flush the file; a success pays any flush owed. */
int qcow2_flush_file(struct qcow2 *s);
/* Write back every dirty table and refcount block, then flush. */
int qcow2_sync_meta(struct qcow2 *s);
/* Write the L1 sectors marked dirty. */
int qcow2_write_l1_dirty(struct qcow2 *s);
void qcow2_mark_l1_dirty(struct qcow2 *s, uint64_t index);

/* ---- overlap.c ---- */
/* The L1 or refcount table changed other than through the calls below. */
void qcow2_meta_changed(struct qcow2 *s);
/* An L2 table (or a refcount block) now lives at `off` (0: none). */
void qcow2_meta_added(struct qcow2 *s, uint64_t off, bool refblock);
void qcow2_meta_index_free(struct qcow2 *s);
/* Overlap check: true if [off, off+len) touches live metadata. */
bool qcow2_overlaps_metadata(struct qcow2 *s, uint64_t off, uint64_t len);
/* Before writing a table of kind `tag` (enum fq_tag) at [off, off+len):
 * -EIO (and the image marked corrupt) if the range holds live metadata of
 * another kind, as the tables of a damaged image may point into each other. */
int qcow2_check_meta_write(struct qcow2 *s, uint64_t off, uint64_t len, unsigned tag);

/* ---- map.c ---- */
enum qkind {
    QK_UNALLOC,      /* not allocated here: backing file or zeros */
    QK_ZERO,         /* reads as zeros */
    QK_DATA,         /* host data at `host` */
    QK_COMPRESSED,   /* compressed cluster */
};
struct qextent {
    enum qkind kind;
    uint64_t guest;           /* guest offset */
    uint64_t len;             /* bytes */
    uint64_t host;            /* host offset of `guest` if has_host */
    bool copied;              /* QK_DATA: every cluster writable in place */
    uint64_t l2e;             /* QK_COMPRESSED: the raw L2 entry */
    bool has_host;            /* `host` valid (also for zero and, with
                                 extended L2, unallocated subclusters of an
                                 allocated cluster) */
};
/* Describe the longest uniform run at `off`, at most `len` bytes, not
 * crossing an L2 table. */
int qcow2_lookup(struct qcow2 *s, uint64_t off, uint64_t len, struct qextent *out);
/* Get the L2 table covering guest cluster index `gc`, allocating it (or
 * copying it when shared) if `alloc`. *l2 is NULL if unallocated and not
 * `alloc`. Caller puts it. */
int qcow2_get_l2(struct qcow2 *s, uint64_t gc, bool alloc, struct qcache_entry **l2, uint64_t *idx);
/* The same on the request path: the entry holding gc's L2 entry (an L2
 * slice, or the whole table where it is cached whole) and *idx in it; in
 * an asynchronous context a miss parks (QCOW2_PARKED). */
int qcow2_get_l2_slice(struct qcow2 *s, uint64_t gc, bool alloc, struct qcache_entry **l2,
                       uint64_t *idx);
/* L2 entries an entry of the L2 cache holds. */
static inline uint64_t qcow2_l2_count(const struct qcow2 *s, const struct qcache_entry *e)
{
    return e->len / s->l2_entry_size;
}
uint64_t qcow2_l2e_get(struct qcow2 *s, const uint8_t *l2, uint64_t idx);
uint64_t qcow2_l2e_bitmap(struct qcow2 *s, const uint8_t *l2, uint64_t idx);
void qcow2_l2e_set(struct qcow2 *s, uint8_t *l2, uint64_t idx, uint64_t e, uint64_t bitmap);
/* Decode a compressed L2 entry. */
void qcow2_compressed_loc(struct qcow2 *s, uint64_t l2e, uint64_t *host, uint64_t *nbytes);
/* Call fn on each L2 table the L1 table `l1` (n entries, host byte order)
 * points at, loaded and pinned for the call; stops at the first error. */
typedef int qcow2_l2_fn(struct qcow2 *s, struct qcache_entry *t, void *opaque);
int qcow2_for_each_l2(struct qcow2 *s, const uint64_t *l1, uint32_t n, qcow2_l2_fn *fn,
                      void *opaque);
/* Release (deferred) whatever host clusters the L2 entry `e` references. */
int qcow2_release_entry(struct qcow2 *s, uint64_t e);
/* Guest clusters [gc, gc+n) zeroed (write-zeroes; `unmap`: host clusters
 * may go) or discarded, as qemu records it (map.c, zeroed_entry); every L2
 * table of the range is made writable. Returns 0, -ENOTSUP where nothing
 * can express a zero-write (v2 over a backing file: write zeros instead),
 * or another negative errno. */
int qcow2_zero_clusters(struct qcow2 *s, uint64_t gc, uint64_t n, bool unmap, bool discard);
/* Link freshly written clusters: gc..gc+n-1 -> host..; frees what they
 * replace. */
int qcow2_link_clusters(struct qcow2 *s, uint64_t gc, uint64_t n, uint64_t host);
/* Extended L2: mark subclusters `mask` of guest cluster gc allocated in
 * host cluster `host` (which becomes, or already is, the cluster's). */
int qcow2_link_subclusters(struct qcow2 *s, uint64_t gc, uint64_t host, uint32_t mask);
/* Extended L2: subclusters `mask` of guest cluster gc (not all of them)
 * become zero subclusters; the cluster keeps its host cluster. The L2
 * table is made writable even when no bit changes.
 * Returns 0, -ENOTSUP for a compressed cluster (write zeros instead), or
 * another negative errno. */
int qcow2_zero_subclusters(struct qcow2 *s, uint64_t gc, uint32_t mask);
int qcow2_decompress(struct qcow2 *s, const uint8_t *src, size_t srclen, uint8_t *dst);

/* ---- open.c: the device's calls (the table is in driver.c) ---- */
extern const struct fq_bdev_ops qcow2_dev_ops;
/* crypt.c: LUKS encrypted images. Unlock the image's key at open (the
 * secret from opts; none needed for check); make the header of a new
 * image; encrypt / decrypt data in a bounce buffer at a host offset;
 * unaligned writes as read-modify-write of whole sectors. */
int qcow2_crypt_open(struct qcow2 *s, const struct fq_open_opts *opts, char *err);
int qcow2_crypt_validate(const struct fq_create_opts *o, char *err);
int qcow2_crypt_create(const struct fq_create_opts *o, uint8_t **hdr, size_t *len, char *err);
void qcow2_crypt_buf(const struct qcow2 *s, uint64_t host, uint8_t *buf, size_t len, bool enc);
bool qcow2_crypt_unaligned(const struct qcow2 *s, const struct fq_req *req);
int qcow2_crypt_rmw(struct fq_bdev *bs, struct fq_req *req);

int qcow2_open(struct fq_bdev *child, const struct fq_open_opts *opts,
               struct fq_bdev **out, char *err);
void qcow2_close(struct fq_bdev *bs);
int qcow2_get_info(struct fq_bdev *bs, struct fq_info *out);
int qcow2_map(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out);
int64_t qcow2_file_length(struct fq_bdev *bs);
int qcow2_truncate(struct fq_bdev *bs, uint64_t size);

/* ---- create.c ---- */
/* Write a new, empty image on an opened, empty, writable device. */
int qcow2_create(struct fq_bdev *child, const struct fq_create_opts *o, char *err);

/* ---- rw.c ---- */
/* The planner's free lists (at open; at close). */
void qcow2_rw_init(struct qcow2 *s);
void qcow2_rw_fini(struct qcow2 *s);
void qcow2_submit(struct fq_bdev *bs, struct fq_req *req);
int qcow2_io_sync(struct fq_bdev *bs, struct fq_req *req);

/* ---- check.c ---- */
int qcow2_check(struct fq_bdev *bs, unsigned repair, struct fq_check_result *res,
                fq_msg_fn *msg, void *opaque);

/* Guest cluster index helpers. */
static inline uint64_t qcow2_offset_in_cluster(const struct qcow2 *s, uint64_t off)
{
    return off & (s->cluster_size - 1);
}

#endif
