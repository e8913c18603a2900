/* bdev.h: the block-device interface every driver implements (file, raw,
 * qcow2, and the test devices) and sits on.
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
#ifndef FQ_BDEV_H
#define FQ_BDEV_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "engine.h"
#include "fastqcow.h"

struct fq_bdev;
struct fq_req;

typedef void fq_req_cb(struct fq_req *req, int ret);

struct fq_req {
    enum fq_op op;
    uint64_t off;
    uint64_t len;
    const struct iovec *iov;
    int iovcnt;
    size_t iov_off;
    unsigned flags;          /* FQ_ZERO_MAY_UNMAP for write-zeroes */
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

struct fq_bdev_ops {
    const char *name;
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
};

struct fq_bdev {
    const struct fq_bdev_ops *ops;
    struct fq_ctx *ctx;
    uint64_t size;           /* bytes visible to users of this device */
    bool readonly;
    bool growable;           /* a regular file: may be extended ahead with
                                allocated blocks (qcow2 allocating writes) */
    unsigned align;          /* offsets and lengths must be multiples */
    struct fq_bdev *child;   /* the device this one stores its data on */
    struct fq_bdev *backing; /* backing device (qcow2), or NULL */
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
/* Complete a request from the loop (for results known at submit time). */
void fq_req_complete_later(struct fq_bdev *bs, struct fq_req *req, int ret);

/* File device. `flags`: FQ_FILE_* below. */
#define FQ_FILE_RDONLY 1u
#define FQ_FILE_DIRECT 2u
#define FQ_FILE_CREATE 4u
int fq_file_open(struct fq_ctx *ctx, const char *filename, unsigned flags,
                 struct fq_bdev **out, char *err);
/* raw format driver over any child. */
int fq_raw_open(struct fq_bdev *child, struct fq_bdev **out, char *err);
/* qcow2 driver over any child; `opts` may be NULL for defaults. */
int fq_qcow2_open(struct fq_bdev *child, const struct fq_open_opts *opts,
                  struct fq_bdev **out, char *err);
/* Backing file name and format recorded in a qcow2 device (NULL if none);
 * -EINVAL if `bs` is not qcow2. */
int fq_qcow2_backing(struct fq_bdev *bs, const char **name, const char **fmt);
/* True if the first bytes of the device carry the qcow2 magic. */
bool fq_qcow2_probe(struct fq_bdev *child);
/* Create a qcow2 image on an opened, empty, writable device. */
int fq_qcow2_create(struct fq_bdev *child, const struct fq_create_opts *o, char *err);

/* In-memory device (tests, fuzzing): starts with a copy of `data` (may be
 * NULL) of `size` bytes; writes may grow it up to `max_size`. */
int fq_mem_open(struct fq_ctx *ctx, const void *data, size_t size, size_t max_size,
                struct fq_bdev **out);
/* Wrap a device stack in a public image handle; the image owns `top`. */
int fq_image_from_bdev(struct fq_ctx *ctx, struct fq_bdev *top, enum fq_cache_mode cache,
                       struct fq_image **out);
struct fq_bdev *fq_image_bdev(struct fq_image *img);
/* The cache mode an image was opened with. */
enum fq_cache_mode fq_image_cache_mode(const struct fq_image *img);

/* Open a whole stack (file, format, backing chain) from a filename. */
int fq_bdev_open_chain(struct fq_ctx *ctx, const char *filename, const char *format,
                       const struct fq_open_opts *opts, int depth,
                       struct fq_bdev **out, char *err);

#endif
