/* io/commands.h: the interface between the parts of `fastqcow io`:
 * interpreter.c (the command line, dispatch, the -c and stdin loops),
 * table.c (the command table and help), session.c (opening and closing
 * images: open, close, reopen), requests.c (read, write, their vectored
 * and asynchronous forms, flush, discard), query.c (map, alloc, length,
 * info) and control.c (truncate, sleep, sigraise, abort, quit).
 *
 * A command gets the whole command line (argv[0] is its name) after the
 * interpreter checked, in qemu-io's order, that an image is open (unless
 * the command works without one), the argument count, and that the image
 * is writable for commands that write. It prints its own output and
 * messages as qemu-io 7.2 does and returns 0 or a negative errno; any
 * negative return makes the exit status 1.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_IO_COMMANDS_H
#define FQ_TOOLS_IO_COMMANDS_H

#include <stdbool.h>

#include "../common/cli.h"

/* How to open an image: the command line's options or an `open`'s. */
struct io_spec {
    const char *name;          /* the file, or with image_opts the list */
    const char *format;        /* -f */
    const char *opts;          /* -o key=value,... (several merged) */
    bool image_opts;           /* name is a key=value list */
    bool readonly, snapshot, cor;
    bool native;               /* -k or -i native: needs an uncached mode */
    enum fq_cache_mode cache;
    enum fq_engine_kind engine;
    bool unmap;                /* -d unmap (the default) or ignore */
    bool force_share;          /* -U */
};

/* The state of one run. */
struct io {
    struct fq_image *img;      /* NULL: no image open */
    struct fq_ctx *ctx;        /* the image's context */
    bool readonly, quit;
    bool cor;                  /* copy-on-read (-C) */
    bool unmap;                /* discards and -u are passed on (-d) */
    int detect_zeroes;         /* 0 off, 1 on, 2 unmap (detect-zeroes=) */
    bool misalign;             /* -m: buffers 16 bytes off alignment */
    bool image_opts;           /* --image-opts: `open -o` is refused */
    bool force_share;          /* -U: kept by reopen */
    unsigned max_workers;      /* -W */
    /* what is open, for reopen: */
    char *path;                /* the file opened (the overlay with -s) */
    char *format;              /* its format */
    char *overlay;             /* -s: the temporary overlay, removed at close */
    enum fq_cache_mode cache;
    enum fq_engine_kind engine;
};

struct io_cmd;
typedef int io_cmd_fn(struct io *io, const struct io_cmd *ct, int argc, char **argv);

#define IO_NOFILE 1u           /* runs without an open image */
#define IO_WRITES 2u           /* needs a writable image (checked first) */

/* One entry of the command table (table.c). */
struct io_cmd {
    const char *name, *alt;
    io_cmd_fn *fn;
    int argmin, argmax;        /* argmax -1 = no limit */
    unsigned flags;            /* IO_* */
    const char *args;          /* NULL: none shown */
    const char *oneline;
    const char *help;          /* extended help as printed, or NULL */
};

/* table.c */
const struct io_cmd *io_find_cmd(const char *name);
/* Print a command's usage line (its name, arguments and one-line
 * description). Returns -EINVAL, for the caller to return. */
int io_usage(const struct io_cmd *ct);
io_cmd_fn help_f;

/* session.c */
/* Open what `sp` names (no image is open). Prints qemu-io's message on
 * failure. Returns 0 or -1. */
int io_open(struct io *io, const struct io_spec *sp);
/* Wait for the requests in flight, close the image, remove an overlay. */
void io_close(struct io *io);
io_cmd_fn open_f, close_f, reopen_f;

/* requests.c */
io_cmd_fn read_f, readv_f, write_f, writev_f, aio_read_f, aio_write_f, aio_flush_f, flush_f,
    discard_f;
/* Wait for every aio request in flight (printing their completions).
 * Returns 0 or the context's -errno. */
int io_drain(struct io *io);

/* query.c */
io_cmd_fn map_f, alloc_f, length_f, info_f;
/* Length (*run, at most len) of the run at `off` whose allocation in the
 * top image is uniform; *alloc gets that status. Returns 0 or -errno. */
int io_top_alloc_run(struct io *io, uint64_t off, uint64_t len, bool *alloc, uint64_t *run);

/* control.c */
io_cmd_fn truncate_f, sleep_f, sigraise_f, abort_f, quit_f;
/* control.c: the blkdebug filter's break points (fq_debug) */
io_cmd_fn break_f, remove_break_f, resume_f, wait_break_f;

#endif
