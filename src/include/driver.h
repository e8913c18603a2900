/* driver.h: the driver interface: what a driver (format: qcow2, raw;
 * protocol: file; the test devices) implements and what it may use. A
 * driver includes this header (and aio.h, util.h, taskpool.h, offload.h
 * beside it), never a core-private one; the core finds drivers through the
 * registry (fq_drivers, drivers/registry.c) and never names one.
 *
 * A request (fq_req) is owned by the caller until its callback runs. The
 * callback always runs from the context loop, never inside submit(). A
 * request reads or writes `len` bytes at `off`, taken from the iovec array
 * starting `iov_off` bytes in (the seed's qiov_offset).
 *
 * io_sync() is the blocking path used for metadata: it performs the request
 * before returning and never runs the context loop, so it is safe to call
 * from inside completion callbacks and planners.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_DRIVER_H
#define FQ_DRIVER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "aio.h"
#include "fastqcow.h"

struct fq_bdev;
struct fq_req;

typedef void fq_req_cb(struct fq_req *req, int ret);

/* fq_req.flags: the request addresses the VM state area a format keeps
 * past the end of the disk (qcow2), not the disk. */
#define FQ_REQ_VMSTATE 0x100u

struct fq_req {
    enum fq_op op;
    uint64_t off;
    uint64_t len;
    const struct iovec *iov;
    int iovcnt;
    size_t iov_off;
    unsigned flags;          /* FQ_ZERO_MAY_UNMAP for write-zeroes,
                                FQ_REQ_VMSTATE */
    unsigned tag;            /* what is written: FQ_TAG_* (for fault
                                injection and recording devices) */
    fq_req_cb *cb;
    void *opaque;
};

/* What a write carries; set by format drivers on requests to their child. */
enum fq_tag {
    FQ_TAG_DATA = 0,
    FQ_TAG_HEADER,
    FQ_TAG_L1,
    FQ_TAG_L2,
    FQ_TAG_REFBLOCK,
    FQ_TAG_REFTABLE,
    FQ_TAG_OTHER_META,
};

/* How a driver's long whole-image operation waits for asynchronous I/O it
 * submitted to its child: `run` drives the caller's context loop until at
 * least one operation completed; 0 or -errno. */
struct fq_waiter {
    int (*run)(void *opaque);
    void *opaque;
};

struct fq_bdev_ops {
    const char *name;
    bool identity_map;       /* guest offset == offset in the child (raw) */
    void (*submit)(struct fq_bdev *bs, struct fq_req *req);
    /* Returns 0 or -errno. */
    int (*io_sync)(struct fq_bdev *bs, struct fq_req *req);
    void (*close)(struct fq_bdev *bs);
    /* Optional. */
    int (*get_info)(struct fq_bdev *bs, struct fq_info *out);
    int (*map)(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out);
    int (*truncate)(struct fq_bdev *bs, uint64_t size);
    int (*check)(struct fq_bdev *bs, unsigned repair, struct fq_check_result *res,
                 fq_msg_fn *msg, void *opaque);
    /* Length of the host file (file device) for allocation decisions. */
    int64_t (*file_length)(struct fq_bdev *bs);

    /* ---- whole-image operations of format drivers (each optional: the
     * public call fails with -ENOTSUP where the driver has none) ---- */
    /* Backing file name and format the image records (NULL: none). */
    int (*backing)(struct fq_bdev *bs, const char **name, const char **fmt);
    /* Record another backing file (NULL name: none); the header only. */
    int (*set_backing)(struct fq_bdev *bs, const char *name, const char *fmt, char *err);
    /* True while requests have I/O or allocations in flight. */
    bool (*busy)(struct fq_bdev *bs);
    /* Compressed writes of whole clusters (bs->cluster bytes) at `off`:
     * in one call, or in two halves: compress (on any thread, touching
     * nothing but its arguments) then store (on the context's thread). */
    int (*write_compressed)(struct fq_bdev *bs, const uint8_t *data, uint64_t off);
    int64_t (*compress)(struct fq_bdev *bs, const uint8_t *src, uint8_t *dst);
    int (*store_compressed)(struct fq_bdev *bs, uint64_t off, const uint8_t *data,
                            uint8_t *blob, int64_t clen);
    /* Internal snapshots (fastqcow.h has the contracts). */
    int (*snapshot_list)(struct fq_bdev *bs, struct fq_snapshot **out, int *count);
    int (*snapshot_create)(struct fq_bdev *bs, const char *name, char *err);
    int (*snapshot_apply)(struct fq_bdev *bs, const char *which, char *err);
    int (*snapshot_delete)(struct fq_bdev *bs, const char *which, char *err);
    /* fq_resize, fq_amend (the backing file excepted: set_backing). */
    int (*resize)(struct fq_bdev *bs, uint64_t size, unsigned flags, char *err);
    int (*amend)(struct fq_bdev *bs, const struct fq_amend_opts *o, char *err);
    /* Drop every cluster of the active state (reads go to the backing file). */
    int (*make_empty)(struct fq_bdev *bs);
    /* Persistent bitmaps: the list, and the bytes a copy with clusters of
     * `cs` bytes needs for them. */
    int (*bitmap_list)(struct fq_bdev *bs, struct fq_bitmap **out, int *count, char *err);
    int (*bitmaps_size)(struct fq_bdev *bs, uint64_t cs, uint64_t *out, char *err);
    /* fq_bitmap_change; the bits of fq_bitmap_merge; fq_bitmap_status */
    int (*bitmap_change)(struct fq_bdev *bs, const char *name, int op, uint64_t gran, char *err);
    int (*bitmap_set)(struct fq_bdev *bs, const char *name, uint64_t off, uint64_t len, char *err);
    int (*bitmap_status)(struct fq_bdev *bs, const char *name, uint64_t off, uint64_t len,
                         uint64_t *run, bool *dirty, char *err);
    /* fq_defrag: rewrite the image in place; the copies go to the child
     * asynchronously and are waited for through `w`. `st` is filled. */
    int (*defrag)(struct fq_bdev *bs, const struct fq_defrag_opts *o, struct fq_defrag_stats *st,
                  const struct fq_waiter *w, char *err);
    /* Read or write `len` bytes at `pos` of the VM state area (positions
     * and lengths are the caller's to check; fq_vmstate_pread). */
    int (*vmstate_rw)(struct fq_bdev *bs, void *buf, uint64_t len, uint64_t pos, bool write);
    /* The external data file the image needs (NULL name: none): the
     * caller's data-file option, else the name the image records
     * (*from_image: untrusted input, held to plain file names). */
    int (*data_file)(struct fq_bdev *bs, const char **name, bool *from_image);
    /* Take the opened data file (bs->data owns it from then on). */
    int (*set_data_file)(struct fq_bdev *bs, struct fq_bdev *data, char *err);
    /* A filter's break points (fq_debug: blkdebug). */
    int (*debug)(struct fq_bdev *bs, enum fq_debug_op op, const char *event, const char *tag);
};

struct fq_bdev {
    const struct fq_bdev_ops *ops;
    struct fq_ctx *ctx;
    uint64_t size;           /* bytes visible to users of this device */
    bool readonly;
    bool sync_parent;        /* a format above calls its io_sync while its
                                requests are in flight (nesting): it keeps
                                its own metadata work synchronous */
    bool growable;           /* a regular file: may be extended ahead with
                                allocated blocks (qcow2 allocating writes) */
    unsigned align;          /* offsets and lengths must be multiples */
    uint64_t cluster;        /* allocation unit of a format (0: none) */
    struct fq_bdev *child;   /* the device this one stores its data on */
    struct fq_bdev *backing; /* backing device (qcow2), or NULL */
    struct fq_bdev *data;    /* a second child: the external data file
                                (qcow2 data_file), or NULL */
    char *filename;
    void *priv;
};

/* Plain whole-buffer blocking helpers over io_sync. */
int fq_bdev_pread_sync(struct fq_bdev *bs, void *buf, size_t len, uint64_t off);
int fq_bdev_pwrite_sync(struct fq_bdev *bs, const void *buf, size_t len, uint64_t off);
/* The same, tagged with what is written (enum fq_tag). */
int fq_bdev_pwrite_tagged(struct fq_bdev *bs, const void *buf, size_t len, uint64_t off,
                          unsigned tag);
int fq_bdev_flush_sync(struct fq_bdev *bs);
/* Close a device and its children. */
void fq_bdev_close(struct fq_bdev *bs);
/* A request within the device and allowed on it: 0, -EROFS for a write
 * to a read-only device, -EINVAL past its end (flushes always pass). */
int fq_req_check(const struct fq_bdev *bs, const struct fq_req *req);
/* Complete a request from the loop (for results known at submit time). */
void fq_req_complete_later(struct fq_bdev *bs, struct fq_req *req, int ret);
/* A pass-through device's request sent on to `child` unchanged; when it
 * completes, bs->size follows the child's and req completes. */
void fq_req_forward(struct fq_bdev *bs, struct fq_bdev *child, struct fq_req *req);
/* fq_map over a whole chain: the longest uniform run at `off` (at most
 * `len` bytes) as the layer that describes it reports it, with its depth;
 * ranges no layer allocates read as zeros. */
int fq_bdev_map_chain(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out);
/* The message and error (-ENOTEMPTY) of a shrink to `size` refused
 * (FQ_RESIZE_KEEP_DATA) because guest data lies at `used` or past it. */
int fq_shrink_refused(char *err, uint64_t size, uint64_t used);

/* ---- drivers and the registry ---- */

/* Flags of a protocol driver's open_file. The file driver locks what it
 * opens as the flags say (src/drivers/file/lock.c): read-write, read-only
 * (also every backing file), read-only sharing every permission, or
 * created; it refuses a file another open holds in a conflicting way. */
#define FQ_FILE_RDONLY 1u
#define FQ_FILE_DIRECT 2u
#define FQ_FILE_CREATE 4u    /* create, or empty once locked */
#define FQ_FILE_SHARE 8u     /* with RDONLY: let others write and resize
                                (fq_open_opts.force_share) */
#define FQ_FILE_NOFLUSH 16u  /* flushes complete at once (cache=unsafe: the
                                formats' own ordering flushes too) */
#define FQ_FILE_NORA 32u     /* no kernel readahead on this descriptor
                                (fq_open_opts.no_readahead) */

/* An option a protocol driver takes in a block option list (its keys
 * under "file.", or at the top with driver=NAME), checked by the core as
 * the list is parsed, with qemu's messages. */
enum fq_opt_type {
    FQ_OPT_STR,
    FQ_OPT_BOOL,     /* on/off, yes/no, true/false */
    FQ_OPT_ENUM,     /* one of `values` (space-separated) */
    FQ_OPT_SIZE,     /* qemu's size syntax */
    FQ_OPT_NUM,      /* a non-negative integer */
    FQ_OPT_TREE,     /* any key under "name." (the driver checks them) */
};
struct fq_optdesc {
    const char *name;
    enum fq_opt_type type;
    const char *values;
};

/* One driver: a format (sits on a child device) or a protocol (opens a
 * name). Every member but `name` is optional. */
struct fq_driver {
    const char *name;
    /* format: how sure it is that `file` holds this format: 0 not at all,
     * 1 any content (raw, the fallback), 100 a magic number; or -errno */
    int (*probe)(struct fq_bdev *file);
    /* format: open on `child` (owned by the result on success) */
    int (*open)(struct fq_bdev *child, const struct fq_open_opts *opts,
                struct fq_bdev **out, char *err);
    /* format: write a new, empty image on an opened, empty, writable device */
    int (*create)(struct fq_bdev *child, const struct fq_create_opts *o, char *err);
    /* format: the size a new image made with `t` needs to hold the guest
     * data of `src` (NULL: t->size bytes, all unallocated) */
    int (*measure)(const struct fq_create_opts *t, struct fq_bdev *src,
                   struct fq_measure_result *out, char *err);
    /* protocol: open `filename` (FQ_FILE_* flags) */
    int (*open_file)(struct fq_ctx *ctx, const char *filename, unsigned flags,
                     struct fq_bdev **out, char *err);
    /* protocol: true if `filename` is one of this protocol's names
     * ("nbd://..."); the file driver, which has none, opens every name
     * no other protocol claims */
    bool (*claims)(const char *filename);
    /* protocol: the options it takes (NULL-named end), and its open from
     * a block option list `o`, whose keys for it start with `prefix`
     * ("file." or ""); `filename` is o's file (NULL if it names none).
     * A filter (blkdebug) gets `child`, the device opened from its
     * image's name, which the result owns on success; else NULL. */
    const struct fq_optdesc *opts;
    const char *default_name;  /* the name of a device its options alone
                                  describe ("null-co://") */
    bool filter;
    int (*open_opts)(struct fq_ctx *ctx, const char *filename, unsigned flags,
                     const struct fq_blockopts *o, const char *prefix, struct fq_bdev *child,
                     struct fq_bdev **out, char *err);
};

/* The registry: every driver, NULL-terminated (drivers/registry.c). */
extern const struct fq_driver *const fq_drivers[];

#endif
