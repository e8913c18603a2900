/* mount.h: `fastqcow mount`, the guest view of an image as a regular file
 * through FUSE. Private to the mount export; a client of the public API
 * (fastqcow.h) only.
 *
 *   options.c   command line of mount and umount, the checks on FILE,
 *               going to the background once the file is served
 *   session.c   the FUSE session: mount, the loop (the FUSE device and a
 *               signalfd are watched from the context's loop), request
 *               slots, operations that must wait for an idle image,
 *               draining and unmounting
 *   ops.c       the file operations: each FUSE request becomes one aio
 *               call, answered from its completion callback
 *
 * Threading: everything runs on the context's thread. libfuse is used for
 * the protocol only (parsing requests, formatting replies); its loops and
 * threads are not.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_MOUNT_H
#define FQ_MOUNT_H

#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

#include "fastqcow.h"
#include "../common/blockopts.h"

/* The ioctl `fastqcow umount` asks the server's process id with (so that it
 * can wait until the image is flushed and closed). */
#define FQ_MOUNT_IOC_PID _IOR('Q', 0x51, uint64_t)

/* Requests held at once, at most (also the kernel's max_background); each
 * holds a buffer of the kernel's largest request (1 MiB of data plus
 * headers), allocated on first use: the export's memory is bounded by
 * about FQ_MOUNT_SLOTS MiB, plus FQ_MOUNT_RBUFS MiB of the buffers below. */
#define FQ_MOUNT_SLOTS 64
/* A read longer than FQ_MOUNT_RBUF_MIN is answered from a reply buffer of
 * its own, in physically contiguous memory (fq_buf_alloc's huge pages):
 * an O_DIRECT read into it is one segment for the block layer, where the
 * slot's 4 KiB pages would take one per page; a write that long to an
 * image opened O_DIRECT is copied into one. At most FQ_MOUNT_RBUFS of
 * them (FQ_MOUNT_RBUFS MiB), made on first use; past that a request uses
 * its slot's buffer. Small requests, the most of them, keep the slots'
 * pages, which they touch one or two of. */
#define FQ_MOUNT_RBUF_MIN (64u << 10)
#define FQ_MOUNT_RBUFS 32
/* Readahead of the mounted file's page cache (the kernel offers 128 KiB;
 * raised through sysfs when writable: buffered sequential reads become
 * one 1 MiB request after another, several in flight). */
#define FQ_MOUNT_READAHEAD_KB 4096

struct mount_opts {
    const char *image;
    const char *file;
    struct fq_open_opts open;
    bool image_opts;             /* image given by --image-opts */
    struct fq_blockopts spec;       /* its option list (image is its file) */
    bool readonly;
    bool growable;
    bool allow_other;
    bool foreground;
    bool direct_io;              /* every open bypasses the page cache */
    const char *pid_file;
    bool created;                /* FILE was created: removed at the end */
};

struct mnt;

/* One request read from the FUSE device: its buffer holds the request as
 * read (a write's data stays there until the write completed) and then a
 * read's data. */
struct mslot {
    struct mnt *m;
    fuse_req_t req;
    char *base;                  /* page-aligned, mount_max_io() + 2 pages */
    char *rbuf;                  /* a huge-page buffer lent to a long read
                                    (or an O_DIRECT write) */
    struct iovec iov;
    uint64_t off, len;           /* of a request that waits for an idle image */
    int op;                      /* MOP_*: what it waits to do */
    int mode;                    /* fallocate mode */
    struct mslot *next;          /* free list / waiting list */
};

enum {
    MOP_NONE,
    MOP_WRITE_GROW,              /* a write past the end (--growable) */
    MOP_TRUNCATE,                /* setattr size */
    MOP_FALLOCATE_GROW,          /* fallocate past the end (--growable) */
};

struct mnt {
    const struct mount_opts *o;
    struct fq_image *img;
    struct fq_ctx *ctx;
    struct fuse_session *se;
    char *mountpoint;
    struct fq_watch *dev_watch, *sig_watch;
    int sigfd;
    uint64_t size;               /* the image's virtual size (the file's size) */
    struct stat st;              /* mode, owner and times shown for the file */

    struct mslot slots[FQ_MOUNT_SLOTS];
    struct mslot *free;          /* slots not holding a request */
    struct mslot *cur;           /* the slot of the request being dispatched */
    bool cur_kept;               /* the dispatched request kept its slot */
    unsigned busy;               /* slots holding a request */
    unsigned io_inflight;        /* aio calls in flight */
    bool dev_paused;             /* the device watch is paused (no free slot,
                                    or a waiting request) */
    struct mslot *wait_head, **wait_tail; /* requests that need an idle image */
    struct bufpool *pool;        /* the huge-page buffers (bufpool.c) */
    unsigned rbuf_lent;          /* of them, lent to slots */

    bool stopping;               /* signal or unmount: read no more requests */
    bool unmounted;              /* the kernel ended the session */
    bool got_init;               /* the INIT request was answered */
    bool tuned;                  /* readahead set (or given up) */
    int exit_code;
};

/* options.c (cmd_mount and cmd_umount are in subcommands.h) */
/* Whether `path` is a mount point in /proc/self/mountinfo: 1 (the type
 * and major:minor of the top mount copied to type and dev, either may be
 * NULL), 0 if not, -errno. */
int mount_find(const char *path, char *type, size_t typelen, char *dev, size_t devlen);

/* session.c */
/* Open the image, mount, and serve until unmounted or signalled. `ready`
 * (may be NULL) is called once the file is served. Returns the exit code. */
int mount_serve(const struct mount_opts *o, void (*ready)(void *opaque, int code),
                void *opaque);
/* Largest read or write (libfuse 3's buffer: 256 pages of data). */
size_t mount_max_io(void);
/* A huge-page buffer of mount_max_io() bytes for a long read or O_DIRECT
 * write, or NULL when all are lent (or memory is short); given back by
 * mount_release_slot. */
char *mount_rbuf_get(struct mnt *m);
/* The ops table for fuse_session_new. */
extern const struct fuse_lowlevel_ops mount_ops;
/* Give the current request's slot to an operation that completes later. */
struct mslot *mount_keep_slot(struct mnt *m, fuse_req_t req);
/* Return a slot taken with mount_keep_slot (after its reply). */
void mount_release_slot(struct mslot *s);
/* Queue a kept slot until no image I/O is in flight; then it runs alone
 * (ops.c's mount_run_waiting). */
void mount_wait_idle(struct mslot *s);

/* ops.c */
/* Run one request that waited for an idle image. */
void mount_run_waiting(struct mslot *s);
/* The attributes of the file. */
void mount_fill_stat(struct mnt *m, struct stat *st);

#endif
