/* fastqcow: a qcow2 library with parallel fragmented I/O.
 *
 * Conventions
 *  - Every call that can fail returns 0 (or a count) on success and a
 *    negative errno on failure.
 *  - Calls that open, create or check an image also take `char *err`, a
 *    buffer of FQ_ERR_MAX bytes (may be NULL) that receives a human message
 *    naming the field / table / offset at fault.
 *  - Asynchronous calls return 0 once the request is queued; its callback
 *    runs later from fq_run() (never from inside the submitting call).
 *    Callbacks may submit new requests but must not call the synchronous
 *    functions of the same context.
 *  - A context (event loop + I/O engine) is single-threaded: all calls on
 *    images that share it must come from one thread at a time.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef FASTQCOW_H
#define FASTQCOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FQ_ERR_MAX 512

/* ---- context: event loop + I/O engine ---------------------------------- */

enum fq_engine_kind {
    FQ_ENGINE_DEFAULT = 0, /* io_uring where the kernel allows it, else threads */
    FQ_ENGINE_IO_URING,
    FQ_ENGINE_THREADS,
    FQ_ENGINE_SYNC,
};

struct fq_ctx;

/* Create a context. `kind` DEFAULT falls back from io_uring to threads and
 * notes it in `err` (the call still succeeds). */
int fq_ctx_new(enum fq_engine_kind kind, struct fq_ctx **out, char *err);
void fq_ctx_free(struct fq_ctx *ctx);
/* Name of the engine actually in use: "io_uring", "threads" or "sync". */
const char *fq_ctx_engine_name(const struct fq_ctx *ctx);
/* Why the default engine fell back (e.g. "io_uring unavailable (...),
 * using threads"), or "" if it did not. */
const char *fq_ctx_engine_note(const struct fq_ctx *ctx);
/* Run completions: wait until at least `min_complete` requests of this
 * context completed or `timeout_ms` passed (-1 = no limit, 0 = poll).
 * Returns the number of user callbacks run, or negative errno. */
int fq_ctx_run(struct fq_ctx *ctx, unsigned min_complete, int timeout_ms);
/* A file descriptor that becomes readable when fq_ctx_run has work to
 * complete. Requests submitted outside fq_ctx_run start their work in it:
 * call fq_ctx_run(ctx, 0, 0) after submitting and before sleeping on the
 * descriptor. */
int fq_ctx_fd(struct fq_ctx *ctx);
/* Number of user requests submitted and not yet completed. */
unsigned fq_ctx_inflight(const struct fq_ctx *ctx);
/* Parse "io_uring" (io_uring for every operation), "threads", "sync",
 * "native" and "default" (both FQ_ENGINE_DEFAULT: io_uring, with small
 * operations on memory-backed files run inline while one request is in
 * flight, as qemu's native AIO completes them in the submitting call). */
int fq_engine_parse(const char *name, enum fq_engine_kind *out);

/* ---- file descriptors in the loop --------------------------------------
 * A program that drives sockets, pipes or devices together with image I/O
 * (an NBD or FUSE server) watches their descriptors from the context's
 * loop instead of polling them on the side. io_uring polls them with its
 * other operations (no extra system call per wake-up); the thread and sync
 * engines poll() them together with their completion eventfd. */
struct fq_watch;
/* revents: POLLIN/POLLOUT/POLLERR/POLLHUP bits of <poll.h>, or a negative errno */
typedef void fq_watch_cb(void *opaque, int revents);
/* Watch fd for events (POLLIN and/or POLLOUT) from the context's loop; stays armed
   until fq_watch_stop; the callback runs from fq_ctx_run whenever fd is ready
   (level-triggered) and counts as a completion for fq_ctx_run's min_complete.
   POLLERR and POLLHUP are reported whatever `events` says. A negative errno
   (e.g. -EBADF) pauses the watch until fq_watch_modify. An armed watch keeps
   fq_ctx_run waiting (it does not count in fq_ctx_inflight). The callback may
   start, modify and stop watches (its own included) and submit requests. */
int fq_watch_start(struct fq_ctx *ctx, int fd, unsigned events, fq_watch_cb *cb,
                   void *opaque, struct fq_watch **out);
/* Change the events watched (0 pauses the watch). */
int fq_watch_modify(struct fq_watch *w, unsigned events);
/* Stop and free: the callback never runs after this returns, even from inside a
   callback of the same context; the fd may be closed afterwards. fq_ctx_free
   stops the watches left. */
void fq_watch_stop(struct fq_watch *w);
/* ---- depth chosen by measurement ---------------------------------------
 * How many operations to keep in flight: the depth where more stops buying
 * throughput on this device, found by measuring and followed as the
 * device changes (powers of two from 1 to `max`, or 128). Images use one
 * for the extents in flight per request (fq_open_opts.max_workers = 0);
 * programs that keep requests in flight (copies, exports) can use one too:
 * keep at most fq_depth_limit() in flight, call fq_depth_start() when one
 * starts and fq_depth_end() with the bytes it moved when it ends. A
 * controller belongs to one thread. */
struct fq_depth;
/* `fixed` != 0 forces that depth (no measuring); `max` 0 = 128. */
int fq_depth_new(unsigned fixed, unsigned max, struct fq_depth **out);
void fq_depth_free(struct fq_depth *d);
unsigned fq_depth_limit(const struct fq_depth *d);
void fq_depth_start(struct fq_depth *d);
void fq_depth_end(struct fq_depth *d, uint64_t bytes);

/* ---- opening ------------------------------------------------------------ */

enum fq_cache_mode {
    FQ_CACHE_WRITEBACK = 0, /* page cache, flush on fq_flush (default) */
    FQ_CACHE_NONE,          /* O_DIRECT, flush on fq_flush */
    FQ_CACHE_WRITETHROUGH,  /* page cache, every write flushed */
    FQ_CACHE_DIRECTSYNC,    /* O_DIRECT, every write flushed */
    FQ_CACHE_UNSAFE,        /* page cache, no flush ever reaches the disk,
                               the format's own ordering flushes neither
                               (a crash may leave any state) */
};
/* Parse qemu's -t names: none, writeback, writethrough, directsync, unsafe. */
int fq_cache_parse(const char *name, enum fq_cache_mode *out);

struct fq_blockopts;

struct fq_open_opts {
    const char *format;        /* "qcow2", "raw" or NULL to probe */
    int readonly;              /* open read-only */
    enum fq_cache_mode cache;
    enum fq_engine_kind engine;/* used only when ctx is NULL */
    struct fq_ctx *ctx;        /* share a context; NULL = the image owns one */
    unsigned max_workers;      /* extents in flight per request; 0 = chosen
                                  at run time by measurement (adaptive) */
    /* qcow2 metadata caches, with the meaning, defaults and limits of
     * qemu's options of the same names (0 = not given, unless the key's
     * FQ_CACHE_GIVEN_* bit is set in cache_given, as fq_open_opts_set
     * does for a value of 0): */
    uint64_t cache_size;       /* "cache-size": both caches together */
    uint64_t l2_cache_size;    /* "l2-cache-size" (default: enough to map
                                  the whole disk, at most 32 MiB) */
    uint64_t refcount_cache_size; /* "refcount-cache-size" (default and
                                  minimum: 4 clusters) */
    uint64_t l2_cache_entry_size; /* "l2-cache-entry-size": L2 tables are
                                  cached in slices of this size (a power of
                                  two from 512 to the cluster size; default:
                                  whole tables when the cache maps the whole
                                  disk, else 4 KiB) */
    uint64_t cache_clean_interval; /* "cache-clean-interval": seconds after
                                  which unused entries are dropped (checked
                                  as requests come); default 600, given 0 =
                                  never */
    unsigned cache_given;      /* FQ_CACHE_GIVEN_* */
    int no_backing;            /* do not open the backing file */
    int check_mode;            /* open a corrupt/dirty image as is, for check */
    const char *backing_format;/* override the backing format (NULL = header);
                                  "probe": guess the format of backing files
                                  that record none (never done unasked: a
                                  raw disk may start with qcow2's magic) */
    const char *file_format;   /* format of the layer below: NULL = the plain
                                  file; "qcow2" or "raw" stacks this image on
                                  the guest view of that image (nesting) */
    int force_share;           /* read-only opens only (else -EINVAL): let
                                  other programs write the image meanwhile
                                  (qemu-img -U); reads may then see it
                                  change or look inconsistent */
    const char *backing_protocols; /* protocols a backing file name read
                                  from an image may use ("nbd", a comma-
                                  separated list, or "all"); NULL: plain
                                  files only. An image is untrusted input:
                                  its backing name must not connect to a
                                  server unless the user allows it. Names
                                  given to fq_open may use any protocol. */
    int name_from_image;       /* the name given to fq_open is a backing
                                  file name read from an image (a program
                                  walking a chain itself): held to
                                  backing_protocols like one */
    const char *data_file;     /* qcow2 "data-file": the external data file
                                  to use instead of the name the image
                                  records (the caller's name, opened as
                                  given); only for images that have one */
    int no_data_file;          /* do not open the external data file
                                  (metadata only: info, check); guest
                                  data I/O then fails with -EIO */
    const void *key_secret;    /* encrypted (LUKS) images: the passphrase
                                  that unlocks them (qemu's encrypt.key-
                                  secret), key_secret_len bytes; NULL: such
                                  an image is refused, unless check_mode
                                  (which needs no key) */
    size_t key_secret_len;
    const struct fq_blockopts *spec; /* the block options the image is
                                  named with, read during fq_open only
                                  (fq_open_blockopts sets it; NULL: a
                                  plain name) */
    int no_readahead;          /* the caller reads the image's data once,
                                  in its own order, many requests in flight
                                  (a whole-image copy or comparison): the
                                  kernel's readahead is turned off on every
                                  file of the chain read through the page
                                  cache (POSIX_FADV_RANDOM on this open's
                                  descriptors; other opens keep theirs).
                                  Over a fragmented image readahead reads
                                  what was not asked for, and out of order.
                                  convert, compare, commit and rebase set
                                  it; an export (serve, mount) does not */
};

#define FQ_CACHE_GIVEN_SIZE          1u
#define FQ_CACHE_GIVEN_L2_SIZE       2u
#define FQ_CACHE_GIVEN_REFCOUNT_SIZE 4u
#define FQ_CACHE_GIVEN_ENTRY_SIZE    8u
#define FQ_CACHE_GIVEN_CLEAN         16u

struct fq_image;

/* Fill `o` with defaults. */
void fq_open_opts_init(struct fq_open_opts *o);
/* Set one open option by its qemu name from a string, as --image-opts
 * and -o lists give them: "cache-size", "l2-cache-size",
 * "refcount-cache-size", "l2-cache-entry-size" (sizes with qemu's
 * suffixes), "cache-clean-interval" (seconds). Returns 0; -ENOENT for a
 * key it does not know (the caller may know it: "driver",
 * "file.filename"...); -EINVAL with qemu's message in err for a value it
 * refuses. What depends on the image (an entry size above its cluster
 * size, sizes that contradict each other) is refused by fq_open. */
int fq_open_opts_set(struct fq_open_opts *o, const char *key, const char *value, char *err);

/* Open an image and its backing chain. The image files are locked while
 * they are open, in the byte-range locks QEMU takes (so that neither it
 * nor another fastqcow writes an image this one uses): a read-write open
 * may use and resize the image and lets no other open write or resize it;
 * a read-only open (and every backing file) reads it and lets no other
 * open write or resize it; force_share lets others do anything. An image
 * another process holds in a conflicting way is refused with -EAGAIN and
 * qemu-img's message ('Failed to get "write" lock' ... 'Is another
 * process using the image [NAME]?'). The locks go with fq_close (or the
 * process). Where the file system has no such locks, a warning is printed
 * once per process on stderr and images open without them. */
int fq_open(const char *filename, const struct fq_open_opts *opts,
            struct fq_image **out, char *err);
/* ---- images named by qemu's block options ------------------------------- */

/* An image named by options as qemu takes them: a list
 * "driver=qcow2,file.filename=disk.qcow2,l2-cache-size=1M" (--image-opts;
 * ",," is a comma in a value, a bare "key" is key=on, "nokey" key=off) or
 * a pseudo-file name json:{"driver": "qcow2", "file": {"filename": ...}}
 * (nested objects are dotted keys, array elements numbered keys: file.
 * filename, inject-error.0.event; true/false are on/off, null empty).
 * fq_open takes "json:{...}" names, "blkdebug:CONFIG:IMAGE", "null-co://"
 * and "file:NAME" (NAME is a plain file, colons and all) itself; a name
 * with a colon before any '/' names a protocol, and one no driver has is
 * refused ("Unknown protocol 'x'", as qemu refuses it).
 *
 * The keys: the generic ones (driver, read-only, force-share, cache.direct,
 * cache.no-flush, discard, detect-zeroes, node-name, backing (null: none)),
 * qcow2's runtime options (the metadata cache keys as fq_open_opts_set
 * takes them, lazy-refcounts, overlap-check*, pass-discard-*), and the
 * protocol driver's under "file." (file: filename, aio, locking; null-co:
 * size, read-zeroes, latency-ns; blkdebug: config, image, inject-error,
 * set-state, align), or at the top with driver=PROTOCOL. Values are
 * checked with qemu's messages: the generic and protocol keys when the
 * options are parsed, the format's once the image is open. */
#define FQ_BLOCKOPTS_MAX 128
struct fq_blockopts {
    char *buf;                 /* the strings below point into it */
    const char *key[FQ_BLOCKOPTS_MAX], *val[FQ_BLOCKOPTS_MAX];
    int n;
    char bare[FQ_BLOCKOPTS_MAX]; /* value i was a JSON number, true,
                                  false or null, not a string */
    uint64_t short_form;       /* bit i (i < 64): key i was a bare "key" or
                                  "nokey" (qemu warns of the short form) */
    bool json;                 /* parsed from a json:{...} name */
    char *name;                /* the name qemu shows for the image: its
                                  file when the options say no more of it
                                  than how to open it, else json:{...} */
    const char *driver;        /* the format ("qcow2", "raw"; a protocol at
                                  the top reads as raw), NULL: probe */
    const char *protocol;      /* the protocol driver ("file", "null-co",
                                  "blkdebug"...), NULL: by the file name */
    const char *proto_prefix;  /* its keys: "file." or "" (driver=PROTOCOL) */
    bool top_protocol;         /* driver=PROTOCOL: no format above it */
    const char *filename;      /* the file (the protocol's filename; a
                                  filter's image), NULL: none given */
    int readonly, direct, no_flush, force_share, discard_unmap; /* -1: not given */
    int detect_zeroes;         /* 0 off, 1 on, 2 unmap; -1 */
    int engine;                /* "file.aio": an enum fq_engine_kind, or -1 */
    bool aio_native;           /* "file.aio=native" (needs cache.direct=on) */
    int no_backing;            /* "backing": null (or empty) */
    struct fq_open_opts caches;/* the qcow2 metadata cache keys */
};

/* Options that say nothing (what fq_blockopts_parse starts from). */
void fq_blockopts_init(struct fq_blockopts *o);
/* Parse `text`, a list, a "json:{...}" name or "blkdebug:CONFIG:IMAGE",
 * into `o`, checking the generic and the protocol's keys. Returns 0, or
 * -EINVAL with qemu's message in err (without "Could not open 'NAME': ").
 * Free `o` with fq_blockopts_free either way. */
int fq_blockopts_parse(const char *text, struct fq_blockopts *o, char *err);
void fq_blockopts_free(struct fq_blockopts *o);
/* True if `name` is one fq_blockopts_parse takes as a name (json:, blkdebug:). */
bool fq_blockopts_is_name(const char *name);
/* The value given for `key` (the last one), or NULL. */
const char *fq_blockopts_get(const struct fq_blockopts *o, const char *key);
/* Once the image is open: -EINVAL with why in err if `o` gives an option
 * of the protocol it does not have, a value the format refuses or an
 * option the format (`format`: "qcow2", "raw") does not have; else 0. */
int fq_blockopts_check_format(const struct fq_blockopts *o, const char *format, char *err);
/* The cache mode the cache.direct / cache.no-flush keys make of `base`. */
enum fq_cache_mode fq_blockopts_cache(const struct fq_blockopts *o, enum fq_cache_mode base);
/* Put the metadata cache keys and the data file `o` gives into `oo` (the
 * others stay; the data file's name points into `o`). */
void fq_blockopts_set_caches(const struct fq_blockopts *o, struct fq_open_opts *oo);
/* Put all that `o` says into `oo`: the format, read-only (added to oo's),
 * the cache mode over oo's, the engine, force-share, no backing file, the
 * caches, and `o` itself (oo->spec). Returns 0, or -EINVAL with why in err
 * if `o` names no file or asks for aio=native without cache.direct=on. */
int fq_blockopts_apply(const struct fq_blockopts *o, struct fq_open_opts *oo, char *err);
/* qemu's message for options that name no file into err; returns -EINVAL. */
int fq_blockopts_no_file(const struct fq_blockopts *o, char *err);
/* True if `key` is an option reopen can change on an image of `format`:
 * read-only, cache.*, discard, detect-zeroes and, on qcow2, its caches and
 * policies. */
bool fq_blockopts_reopenable(const char *key, const char *format);
/* fq_open of the image `o` names, over the options `opts` (NULL: the
 * defaults), its options applied, then checked against its format. */
int fq_open_blockopts(const struct fq_blockopts *o, const struct fq_open_opts *opts,
                      struct fq_image **out, char *err);

/* Break points of the blkdebug filter (qemu-io's break, remove_break,
 * resume, wait_break), on the first blkdebug device below the image's
 * format: FQ_DEBUG_BREAK holds the next request that meets `event` under
 * `tag`; FQ_DEBUG_REMOVE_BREAK drops the break points of `tag` and lets
 * the requests held there go on; FQ_DEBUG_RESUME lets the first one held
 * at `tag` go on; FQ_DEBUG_SUSPENDED asks whether one is held there.
 * Returns 0 (SUSPENDED: 1 if one is held), -ENOTSUP if the image has no
 * blkdebug device, -ENOENT for an unknown event or tag. */
enum fq_debug_op { FQ_DEBUG_BREAK, FQ_DEBUG_REMOVE_BREAK, FQ_DEBUG_RESUME, FQ_DEBUG_SUSPENDED };
int fq_debug(struct fq_image *img, enum fq_debug_op op, const char *event, const char *tag);

/* Flush and close. Returns the flush result (the image is closed anyway). */
int fq_close(struct fq_image *img);
struct fq_ctx *fq_image_ctx(struct fq_image *img);
uint64_t fq_size(const struct fq_image *img);
/* "qcow2" or "raw". */
const char *fq_format(const struct fq_image *img);

/* ---- synchronous I/O (all or nothing) ---------------------------------- */

int fq_pread(struct fq_image *img, void *buf, size_t len, uint64_t off);
int fq_pwrite(struct fq_image *img, const void *buf, size_t len, uint64_t off);
/* Vectored: the request starts `iov_off` bytes into the iovec array. */
int fq_preadv(struct fq_image *img, const struct iovec *iov, int iovcnt,
              size_t iov_off, size_t len, uint64_t off);
int fq_pwritev(struct fq_image *img, const struct iovec *iov, int iovcnt,
               size_t iov_off, size_t len, uint64_t off);
int fq_flush(struct fq_image *img);
/* Discard: whole clusters in range read as zeros afterwards (zero clusters
 * on compat 1.1, unallocated on 0.10 without a backing file; on 0.10 with a
 * backing file nothing changes); partial clusters are kept. */
int fq_discard(struct fq_image *img, uint64_t off, uint64_t len);
#define FQ_ZERO_MAY_UNMAP 1u   /* free host clusters that become zero */
/* The range reads as zeros afterwards. */
int fq_write_zeroes(struct fq_image *img, uint64_t off, uint64_t len,
                    unsigned flags);

/* ---- I/O buffers ---------------------------------------------------------
 * Memory for the buffers of reads and writes, 4 KiB aligned (O_DIRECT
 * never bounces it). From 256 KiB up it is 2 MiB aligned and asks for
 * transparent huge pages (madvise), so that it is physically contiguous
 * in 2 MiB runs: a 64 KiB piece of a request then reaches the device as
 * one segment instead of sixteen pages, which O_DIRECT pins at a time and
 * a device with few descriptors per request (virtio-blk without indirect
 * descriptors) counts against how many requests it takes at once. From
 * 256 KiB up the size is rounded up to a multiple of 2 MiB: allocate the
 * buffers of many requests at once and carve them. Any buffer works with
 * the library; these make direct I/O cheaper. NULL on failure;
 * fq_buf_free(NULL) does nothing. */
void *fq_buf_alloc(size_t len);
void fq_buf_free(void *buf);

/* ---- asynchronous I/O --------------------------------------------------- */

typedef void fq_cb(void *opaque, int ret);

/* The iovec array must stay valid until the callback runs. */
int fq_aio_preadv(struct fq_image *img, const struct iovec *iov, int iovcnt,
                  size_t iov_off, size_t len, uint64_t off,
                  fq_cb *cb, void *opaque);
int fq_aio_pwritev(struct fq_image *img, const struct iovec *iov, int iovcnt,
                   size_t iov_off, size_t len, uint64_t off,
                   fq_cb *cb, void *opaque);
int fq_aio_flush(struct fq_image *img, fq_cb *cb, void *opaque);
int fq_aio_discard(struct fq_image *img, uint64_t off, uint64_t len,
                   fq_cb *cb, void *opaque);
int fq_aio_write_zeroes(struct fq_image *img, uint64_t off, uint64_t len,
                        unsigned flags, fq_cb *cb, void *opaque);

/* ---- creating ----------------------------------------------------------- */

enum fq_prealloc {
    FQ_PREALLOC_OFF = 0,
    FQ_PREALLOC_METADATA,
    FQ_PREALLOC_FALLOC,
    FQ_PREALLOC_FULL,
};

struct fq_create_opts {
    const char *format;        /* "qcow2" (default) or "raw" */
    uint64_t size;             /* virtual size in bytes */
    uint32_t cluster_size;     /* 0 = 65536 */
    int version;               /* 2 (compat=0.10) or 3 (compat=1.1, default) */
    int refcount_bits;         /* 1..64, power of two; 0 = 16 */
    int lazy_refcounts;
    int extended_l2;
    int compression_type;      /* 0 zlib, 1 zstd */
    enum fq_prealloc prealloc;
    const char *backing_file;  /* NULL = none */
    const char *backing_format;/* NULL = not recorded */
    const char *file_format;   /* create inside an existing image of this
                                  format (nesting); NULL = plain file */
    void *owned;               /* strings fq_create_opts_parse allocated */
    const char *data_file;     /* qcow2 "data_file": keep guest data in this
                                  file (created, sized to the disk; its
                                  name is recorded as given); NULL = none */
    int data_file_raw;         /* "data_file_raw": the data file stays a
                                  raw image of the disk (implies
                                  preallocation=metadata) */
    /* encryption (qcow2; qemu's encrypt.* options): format "luks" or NULL
     * (none); the passphrase; the algorithms (NULL: aes-256, xts, plain64,
     * sha256; ivgen_hash_alg sha256 for essiv) and the PBKDF2 time in ms
     * (0: 2000) */
    struct {
        const char *format;
        const void *key_secret;
        size_t key_secret_len;
        const char *cipher_alg, *cipher_mode, *ivgen_alg, *ivgen_hash_alg, *hash_alg;
        uint64_t iter_time;
    } encrypt;
};

void fq_create_opts_init(struct fq_create_opts *o);
/* Parse one qemu-img style "-o" list ("cluster_size=4k,compat=0.10,...")
 * into `o`. Unknown keys are an error named in `err`. Strings it stores
 * (backing_file, backing_format) live until fq_create_opts_release(). */
int fq_create_opts_parse(struct fq_create_opts *o, const char *list, char *err);
void fq_create_opts_release(struct fq_create_opts *o);
/* Create an image (an existing file is emptied, but only once it is
 * locked: a file another program holds open is refused, -EAGAIN, and left
 * as it is). */
int fq_create(const char *filename, const struct fq_create_opts *opts, char *err);

/* ---- information -------------------------------------------------------- */

/* An encrypted image's header (LUKS), as `info` shows it; format "" when
 * the image is not encrypted. */
struct fq_encrypt_info {
    char format[8];            /* "luks" */
    char cipher_alg[16];       /* "aes-256" */
    char cipher_mode[16];      /* "xts" */
    char ivgen_alg[16];        /* "plain64" */
    char ivgen_hash_alg[16];   /* essiv's hash; "" otherwise */
    char hash_alg[16];         /* PBKDF2 and the splitter: "sha256" */
    char uuid[40];
    uint64_t payload_offset;   /* bytes from the header's start */
    uint32_t master_key_iters;
    struct {
        int active;
        uint32_t iters, stripes;   /* active slots only */
        uint64_t key_offset;       /* bytes from the header's start */
    } slots[8];
};

struct fq_info {
    char format[16];           /* "qcow2" | "raw" */
    uint64_t virtual_size;
    uint64_t actual_size;      /* bytes allocated in the host file */
    uint64_t file_size;        /* host file length */
    uint32_t cluster_size;     /* 0 for raw */
    int version;               /* 2 or 3 (qcow2) */
    int refcount_bits;
    int lazy_refcounts;
    int corrupt;
    int dirty;
    int extended_l2;
    int compression_type;      /* 0 zlib, 1 zstd */
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    char backing_file[1024];   /* "" = none */
    char backing_format[32];   /* "" = not recorded */
    int nb_snapshots;
    int encrypted;
    char data_file[1024];      /* qcow2 external data file name as the image
                                  records it ("" = none) */
    int data_file_raw;         /* its raw flag */
    struct fq_encrypt_info encrypt;   /* qcow2 with LUKS: its header */
};
int fq_get_info(struct fq_image *img, struct fq_info *out);

/* Allocation status of a guest range, as `qemu-img map` reports it. */
#define FQ_MAP_DATA       1u  /* reads come from a host data cluster */
#define FQ_MAP_ZERO       2u  /* reads as zeros */
#define FQ_MAP_ALLOCATED  4u  /* described by this layer (present) */
#define FQ_MAP_OFFSET     8u  /* host_offset is valid */
#define FQ_MAP_COMPRESSED 16u
#define FQ_MAP_PAST_BACKING 32u /* zeros, not allocated: past the end of the
                                   backing file at depth + 1 (qemu counts the
                                   range as that backing file's) */
#define FQ_MAP_DATA_FILE  64u /* host_offset is an offset into the layer's
                                 external data file (qcow2 data_file) */

struct fq_map_entry {
    uint64_t start;
    uint64_t length;
    uint64_t host_offset;      /* valid with FQ_MAP_OFFSET */
    unsigned flags;
    int depth;                 /* 0 = this image, 1 = its backing, ... */
};
/* Describe the longest run starting at `off` (at most `len` bytes) whose
 * status and (for data) host contiguity are uniform. */
int fq_map(struct fq_image *img, uint64_t off, uint64_t len,
           struct fq_map_entry *out);

/* ---- consistency check -------------------------------------------------- */

#define FQ_CHECK_REPAIR_LEAKS  1u
#define FQ_CHECK_REPAIR_ERRORS 2u
#define FQ_CHECK_REPAIR_ALL    3u

struct fq_check_result {
    int64_t corruptions;
    int64_t leaks;
    int64_t check_errors;
    int64_t corruptions_fixed;
    int64_t leaks_fixed;
    uint64_t image_end_offset;
    uint64_t total_clusters;     /* guest clusters */
    uint64_t allocated_clusters;
    uint64_t fragmented_clusters;
    uint64_t compressed_clusters;
};
typedef void fq_msg_fn(void *opaque, const char *line);
/* Check (and with `repair` flags, repair) a qcow2 image opened with
 * check_mode (read-write for repair). Each finding is passed to `msg`
 * as one line, e.g. "Leaked cluster 5 refcount=1 reference=0". */
int fq_check(struct fq_image *img, unsigned repair,
             struct fq_check_result *res, fq_msg_fn *msg, void *opaque);

/* ---- misc --------------------------------------------------------------- */

/* Parse "64k", "1M", "2G", "512" (bytes), "1.5G". Returns 0 or -EINVAL. */
int fq_parse_size(const char *s, uint64_t *out);
const char *fq_version(void);

/* ---- image features: compression, snapshots, resize, amend, measure,
 *      rebase, commit ------------------------------------------------------
 * These run synchronously and, except for compressed writes, need the image
 * idle: no request of it in flight (-EBUSY otherwise). They are qcow2
 * operations (-ENOTSUP on raw) unless said otherwise. */

/* Write one guest cluster compressed (zlib or zstd, per the image's
 * compression_type). `off` is cluster aligned; `buf` holds a whole cluster,
 * or for the last, partial cluster of the disk the bytes up to the end of
 * the disk. Data that does not shrink by at least a sector is written as an
 * ordinary cluster. Never runs the context loop. */
int fq_pwrite_compressed(struct fq_image *img, const void *buf, uint64_t off);
/* The same for `len` bytes of whole clusters (`len` a multiple of the
 * cluster size, or reaching exactly the end of the disk), each compressed
 * on its own; -EINVAL if unaligned. */
int fq_pwritev_compressed(struct fq_image *img, const struct iovec *iov, int iovcnt,
                          size_t iov_off, size_t len, uint64_t off);
/* Asynchronous form, allowed from callbacks: the data is copied at
 * submission, each cluster is compressed on a worker thread (in parallel)
 * and stored from the loop; the callback runs from the loop. Overlapping
 * requests in flight are ordered as for any two overlapping writes: not at
 * all. */
int fq_aio_pwritev_compressed(struct fq_image *img, const struct iovec *iov, int iovcnt,
                              size_t iov_off, size_t len, uint64_t off,
                              fq_cb *cb, void *opaque);

/* Internal snapshots. */
struct fq_snapshot {
    char *id;                  /* unique ID ("1", "2", ...) */
    char *name;                /* tag, not necessarily unique */
    uint64_t vm_state_size;    /* bytes of saved VM state (0: disk only) */
    uint64_t disk_size;        /* virtual size when it was taken */
    uint32_t date_sec;         /* wall clock time it was taken */
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;    /* guest run time when it was taken */
    uint64_t icount;           /* instruction count; UINT64_MAX = none */
};
/* List the snapshots (*out = NULL when there are none); free the list with
 * fq_snapshot_list_free. Works on read-only images. */
int fq_snapshot_list(struct fq_image *img, struct fq_snapshot **out, int *count);
void fq_snapshot_list_free(struct fq_snapshot *list, int count);
/* The VM state area of a qcow2 image: the saved state of a virtual machine
 * that internal snapshots carry, kept in clusters past the end of the disk
 * (from the first L1 entry the disk does not use). Reading and writing it
 * does not change the disk. `pos` and `len` are multiples of 512
 * (-EINVAL otherwise); a range no L1 table could map fails with -EIO; a
 * write honours the cache mode as a disk write does; what was never
 * written reads as unallocated guest data does (the backing file's data
 * at that offset, else zeros). -ENOTSUP for formats without one (raw).
 * The image must be idle (-EBUSY). */
int fq_vmstate_pread(struct fq_image *img, void *buf, size_t len, uint64_t pos);
int fq_vmstate_pwrite(struct fq_image *img, const void *buf, size_t len, uint64_t pos);
/* Persistent dirty bitmaps the image records (qcow2 v3 with its bitmaps
 * bit set). A read-write open keeps every enabled one true: it is flagged
 * in use on disk while the image is open (so a crash leaves it
 * inconsistent), each write, write-zeroes and discard sets its bits, and
 * the close stores it consistent again. Disabled bitmaps are left as
 * they are. */
#define FQ_BITMAP_IN_USE 1u        /* inconsistent: not saved by its last writer */
#define FQ_BITMAP_AUTO   2u        /* enabled: tracks writes */
struct fq_bitmap {
    char name[1024];
    uint64_t granularity;      /* bytes covered by one bit */
    unsigned flags;            /* FQ_BITMAP_* */
};
/* List them into *out (free() it; NULL when there are none). Returns 0,
 * or -EINVAL with a message in err if the bitmap directory is damaged. */
int fq_bitmap_list(struct fq_image *img, struct fq_bitmap **out, int *count, char *err);
/* Change the bitmap `name` (stored before the call returns):
 * FQ_BITMAP_ADD a new, empty, enabled one of `granularity` bytes (a power
 * of two from 512 to 2 GiB; 0: the cluster size, between 4 and 64 KiB);
 * FQ_BITMAP_REMOVE it; FQ_BITMAP_CLEAR its bits; FQ_BITMAP_ENABLE or
 * FQ_BITMAP_DISABLE tracking; FQ_BITMAP_STORE: store every bitmap now
 * (name unused). Returns 0; -ENOENT (not found), -EEXIST (add: exists),
 * -EUCLEAN (in use: inconsistent, only removing it works), -EINVAL (bad
 * granularity or name, damaged), -ENOTSUP (a format or version without
 * bitmaps), -EROFS; or an I/O error. Messages in qemu-img's words. */
enum fq_bitmap_op {
    FQ_BITMAP_ADD = 1,
    FQ_BITMAP_REMOVE,
    FQ_BITMAP_CLEAR,
    FQ_BITMAP_ENABLE,
    FQ_BITMAP_DISABLE,
    FQ_BITMAP_STORE,
};
int fq_bitmap_change(struct fq_image *img, const char *name, enum fq_bitmap_op op,
                     uint64_t granularity, char *err);
/* Set in bitmap `name` of img every bit set in bitmap `src_name` of src
 * (img itself or another image; granularities may differ: a source bit
 * sets every bit its range touches), and store it. Errors as
 * fq_bitmap_change. */
int fq_bitmap_merge(struct fq_image *img, const char *name, struct fq_image *src,
                    const char *src_name, char *err);
/* The dirty status of bitmap `name` from `off`: *run bytes (at most len,
 * not past the disk's end; 0 at or past it) that are all dirty or all
 * clean (*dirty). Reflects the writes of this session. Errors as
 * fq_bitmap_change (-EUCLEAN: inconsistent). */
int fq_bitmap_status(struct fq_image *img, const char *name, uint64_t off, uint64_t len,
                     uint64_t *run, int *dirty, char *err);
/* Take a snapshot of the current state, named `name`; its ID is the next
 * free number. */
int fq_snapshot_create(struct fq_image *img, const char *name, char *err);
/* Revert to the snapshot whose ID, or failing that name, is `which` (the
 * virtual size becomes the snapshot's). -ENOENT if there is none. */
int fq_snapshot_apply(struct fq_image *img, const char *which, char *err);
/* Delete the snapshot whose ID, or failing that name, is `which`. */
int fq_snapshot_delete(struct fq_image *img, const char *which, char *err);

/* Change the virtual size (qcow2 and raw). Growing reads as zeros in the
 * new range (zeros are written where a backing file would show through).
 * Shrinking needs FQ_RESIZE_SHRINK (else -EINVAL, as `qemu-img resize`
 * without --shrink) and then drops what lies past the new end, as
 * `qemu-img resize --shrink` does: every cluster past it is released and
 * the file trimmed; growing again later reads zeros there. With
 * FQ_RESIZE_KEEP_DATA as well it drops only unused space instead: it fails
 * with -ENOTEMPTY, changing nothing, and `err` names the first guest
 * offset in use past the new end, when the image itself holds data there
 * (qcow2: data or compressed clusters of the active state; raw: anything
 * but holes); zero clusters, unallocated ranges (whatever a backing file
 * shows there) and clusters referenced only by snapshots do not count.
 * A snapshot keeps its data and its own size either way.
 * FQ_RESIZE_DISCARD_DATA is accepted and changes nothing (it asked for what
 * FQ_RESIZE_SHRINK now does alone). */
#define FQ_RESIZE_SHRINK 1u
#define FQ_RESIZE_DISCARD_DATA 2u
#define FQ_RESIZE_KEEP_DATA 4u
int fq_resize(struct fq_image *img, uint64_t size, unsigned flags, char *err);

/* Amend options of an existing qcow2 image; fields left at their
 * fq_amend_opts_init values are kept. */
struct fq_amend_opts {
    int version;               /* 2 (compat=0.10) or 3 (compat=1.1); 0 = keep */
    int lazy_refcounts;        /* 0 or 1; -1 = keep */
    uint64_t size;             /* new virtual size; 0 = keep. A smaller one
                                  drops what lies past the new end (as
                                  fq_resize with FQ_RESIZE_SHRINK, and as
                                  qemu-img amend -o size= does) */
    const char *backing_file;  /* NULL = keep; "" = none (header only: data
                                  is not copied, as rebase -u) */
    const char *backing_format;/* with backing_file; NULL = none recorded */
    int refcount_bits;         /* refcount width: 1, 2, 4, 8, 16, 32 or 64
                                  (compat=1.1; 0.10 has 16 only); 0 = keep */
    const char *data_file;     /* the external data file name the image
                                  records (images that have one); NULL =
                                  keep */
    int data_file_raw;         /* 0: drop the raw flag (1 only where it is
                                  set: it cannot be set on an existing
                                  image); -1 = keep */
};
void fq_amend_opts_init(struct fq_amend_opts *o);
/* Every change asked for is checked before any is made: a refusal leaves
 * the image as it was. Downgrading to version 2 turns zero clusters (also
 * those of snapshots) into unallocated ones, or written zeros where a
 * backing file shows through; it is refused for extended L2 entries,
 * zstd-compressed clusters, refcount widths other than 16 (unless
 * refcount_bits = 16 comes with it) and bitmaps. A new refcount width is
 * refused (-EINVAL, `err` names the cluster) while some refcount does not
 * fit it; a power loss during the change leaks clusters at worst. */
int fq_amend(struct fq_image *img, const struct fq_amend_opts *o, char *err);

/* Space an image would need (qemu-img measure). */
struct fq_measure_result {
    uint64_t required;         /* bytes for the data present and metadata */
    uint64_t fully_allocated;  /* bytes when every cluster is allocated */
    uint64_t bitmaps;          /* bytes of persistent bitmaps to copy */
    int has_bitmaps;           /* `bitmaps` applies (qcow2 v3 from qcow2) */
};
/* Measure a new image made with `target` (format, cluster size, refcount
 * width, extended L2, preallocation, backing file), holding the guest data
 * of `src` (may be NULL: then of target->size bytes, all unallocated). */
int fq_measure(const struct fq_create_opts *target, struct fq_image *src,
               struct fq_measure_result *out, char *err);

/* Progress of a long operation: `done` of `total` bytes. */
typedef void fq_progress_fn(void *opaque, uint64_t done, uint64_t total);

/* Change the backing file of a qcow2 image opened read-write with its
 * chain (qemu-img rebase). Safe mode first copies into the image every
 * range it does not allocate itself where the old and the new backing
 * chains differ; unsafe mode only rewrites the header (the new backing
 * file is used from the next open). A relative name is relative to the
 * image's directory. */
struct fq_rebase_opts {
    const char *backing_file;  /* NULL or "" = no backing file */
    const char *backing_format;/* required with a backing file */
    int unsafe;
    enum fq_cache_mode cache;  /* for opening the new backing chain */
    fq_progress_fn *progress;
    void *opaque;
};
int fq_rebase(struct fq_image *img, const struct fq_rebase_opts *o, char *err);

/* Merge an image into a backing file (qemu-img commit): every range
 * allocated in the image (and in images between it and the base) is
 * written into the base (grown to the image's size if smaller); then,
 * unless `keep` or a `base` is named (as qemu-img), the image is emptied so
 * that it reads through to its backing file. */
struct fq_commit_opts {
    const char *format;        /* of the image; NULL = probe */
    const char *base;          /* backing file to commit into, named as in
                                  the chain (or its path); NULL = the
                                  immediate backing file */
    int keep;                  /* do not empty the image (-d) */
    enum fq_cache_mode cache;
    fq_progress_fn *progress;
    void *opaque;
};
int fq_commit(const char *filename, const struct fq_commit_opts *o, char *err);

/* ---- defragmentation ----------------------------------------------------
 * Rewrite a qcow2 image in place so that it reads like one written
 * sequentially: the host order of data clusters follows the guest order,
 * each L2 table sits just before the data it maps (the refcount table,
 * the first refcount block and the active L1 table right after the
 * header), and the file ends at its last used cluster. Internal
 * snapshots, compressed clusters (kept compressed, repacked per L2
 * table), extended L2 entries, zero clusters, backing overlays (only the
 * image's own clusters move) and persistent bitmaps are kept as they are.
 *
 * Every move is crash-safe: a cluster is copied to free space, the copy is
 * made durable, the tables that point at it are switched and made durable,
 * and only then is the old place freed. A power loss at any point leaves a
 * consistent image that reads the same, at worst with leaked clusters; a
 * second run (which reclaims leaks first) finishes the job.
 *
 * Needs an image opened read-write with no request in flight on its
 * context (-EBUSY), qcow2 (-ENOTSUP otherwise). Refused before the first
 * write (-EINVAL, reason in `err`) when the image has corruptions or a
 * structure larger than half the budget must move. Runs the context loop
 * (not from a callback: -EDEADLK). */
#define FQ_DEFRAG_DEFAULT_BUDGET (32ull << 20)

struct fq_defrag_opts {
    uint64_t budget;           /* bytes the file may grow past its final
                                  size (or its size before, if larger)
                                  while clusters are moved out of the way;
                                  0 = FQ_DEFRAG_DEFAULT_BUDGET */
    int compact_only;          /* only move clusters from the end of the
                                  file into holes, then cut the file */
    fq_progress_fn *progress;  /* bytes placed of bytes to place */
    void *opaque;
};

struct fq_defrag_stats {
    uint64_t file_before;      /* file length before, after, and the most */
    uint64_t file_after;       /*   it reached meanwhile */
    uint64_t file_peak;
    uint64_t bytes_copied;     /* data and metadata copied, staging included */
    uint64_t clusters_moved;   /* clusters placed where they end up */
    uint64_t rounds;           /* copy-flush-switch-flush steps */
    uint64_t leaks_fixed;      /* leaked clusters reclaimed first */
};

void fq_defrag_opts_init(struct fq_defrag_opts *o);
/* `stats` may be NULL. */
int fq_defrag(struct fq_image *img, const struct fq_defrag_opts *o,
              struct fq_defrag_stats *stats, char *err);

#ifdef __cplusplus
}
#endif
#endif
