/* io/commands.h: the interface between the `fastqcow io` interpreter
 * (interpreter.c: options, the command table, help, dispatch, the stdin
 * loop) and the commands it runs: requests.c (read, write, their vectored
 * and asynchronous forms, flush, discard) and query.c (map, alloc,
 * length, info).
 *
 * A command gets the whole command line (argv[0] is its name) after the
 * interpreter checked the argument count against its table entry. It
 * prints its own output and messages as qemu-io 7.2 does and returns 0 or
 * a negative errno; any negative return makes the exit status 1.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_IO_COMMANDS_H
#define FQ_TOOLS_IO_COMMANDS_H

#include <stdbool.h>

#include "../common/cli.h"

/* The state of one run: the open image and its context. */
struct io {
    struct fq_image *img;
    struct fq_ctx *ctx;
    bool readonly;
    bool quit;
};

struct io_cmd;
typedef int io_cmd_fn(struct io *io, const struct io_cmd *ct, int argc, char **argv);

/* One entry of the command table (interpreter.c). */
struct io_cmd {
    const char *name, *alt;
    io_cmd_fn *fn;
    int argmin, argmax;       /* argmax -1 = no limit */
    const char *args;         /* NULL: none shown */
    const char *oneline;
    const char *help;         /* extended help text, or NULL */
};

/* requests.c */
io_cmd_fn read_f, readv_f, write_f, writev_f, aio_read_f, aio_write_f, aio_flush_f, flush_f,
    discard_f;
/* Wait for every aio request in flight (printing their completions).
 * Returns 0 or the context's -errno. */
int io_drain(struct io *io);

/* query.c */
io_cmd_fn map_f, alloc_f, length_f, info_f;

#endif
