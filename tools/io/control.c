/* io/control.c: the commands of `fastqcow io` that act on the image as a
 * whole or on the run: truncate, sleep, sigraise, abort, quit and the blkdebug
 * break points (break, remove_break, resume, wait_break), with
 * qemu-io 7.2's messages.
 *
 * sigraise and abort end the process as a crash would: nothing is flushed
 * or closed, so the image is left as a killed process leaves it (what was
 * written and flushed is there; metadata still in the cache is not, and
 * `check` reports and repairs what that left behind). sigraise flushes
 * stdout and stderr first, as qemu-io does; abort does not.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "format.h"

#define IO_NSIG 65             /* the largest signal number qemu-io takes */

int truncate_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    const char *prealloc = "off";
    char err[FQ_ERR_MAX] = "";
    int64_t size;
    int c, r;

    optind = 0;
    while ((c = getopt(argc, argv, "m:")) != -1) {
        if (c != 'm')
            return io_usage(ct);
        prealloc = optarg;
        if (strcmp(prealloc, "off") && strcmp(prealloc, "metadata") && strcmp(prealloc, "falloc") &&
            strcmp(prealloc, "full")) {
            tool_error("Invalid preallocation mode '%s'", prealloc);
            return -EINVAL;
        }
    }
    if (optind >= argc)   /* arguments after the size are ignored, as in qemu-io */
        return io_usage(ct);
    if (getnum(argv[optind], &size) < 0)
        return -EINVAL;
    bool raw = !strcmp(fq_format(io->img), "raw");
    if (strcmp(prealloc, "off") && (uint64_t)size < fq_size(io->img)) {
        tool_error("Preallocation can't be used for shrinking an image");
        return -EINVAL;
    }
    if (raw && !strcmp(prealloc, "metadata")) {
        tool_error("Unsupported preallocation mode: %s", prealloc);
        return -ENOTSUP;
    }
    if (strcmp(prealloc, "off")) {
        tool_error("Preallocation mode '%s' is not supported when resizing", prealloc);
        return -ENOTSUP;
    }
    if (!raw && size % 512) {
        tool_error("The new size must be a multiple of 512");
        return -EINVAL;
    }
    if ((r = io_drain(io)) < 0)
        return r;
    /* qemu-io's truncate shrinks as well, dropping what lies past the end */
    r = fq_resize(io->img, (uint64_t)size, FQ_RESIZE_SHRINK | FQ_RESIZE_DISCARD_DATA, err);
    if (r < 0) {
        tool_error("%s", err[0] ? err : strerror(-r));
        return r;
    }
    return 0;
}

int sleep_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    char *end;
    long ms = strtol(argv[1], &end, 0);

    if (ms < 0 || *end || !*argv[1]) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    struct timespec t0 = now();
    for (double left; (left = (double)ms / 1000 - secs_since(t0)) > 0;) {
        if (io->ctx && fq_ctx_inflight(io->ctx) > 0) {
            fq_ctx_run(io->ctx, 0, (int)(left * 1000) + 1);
        } else {
            struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

int sigraise_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int64_t sig;

    if (getnum(argv[1], &sig) < 0)
        return -EINVAL;
    if (sig > IO_NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n", argv[1]);
        return -EINVAL;
    }
    fflush(stdout);
    fflush(stderr);
    raise((int)sig);   /* an invalid number changes nothing, as in qemu-io */
    return 0;
}

int abort_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    abort();
}

int quit_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    io->quit = true;
    return 0;
}

/* ---- break points of the blkdebug filter ------------------------------- */

int break_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int r = fq_debug(io->img, FQ_DEBUG_BREAK, argv[1], argv[2]);

    if (r < 0)
        printf("Could not set breakpoint: %s\n", strerror(-r));
    return r;
}

int remove_break_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int r = fq_debug(io->img, FQ_DEBUG_REMOVE_BREAK, NULL, argv[1]);

    if (r < 0)
        printf("Could not remove breakpoint %s: %s\n", argv[1], strerror(-r));
    return r;
}

int resume_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int r = fq_debug(io->img, FQ_DEBUG_SUSPENDED, NULL, argv[1]);

    if (r == 1) {
        printf("blkdebug: Resuming request '%s'\n", argv[1]);
        r = fq_debug(io->img, FQ_DEBUG_RESUME, NULL, argv[1]);
    } else if (r == 0) {
        r = -ENOENT;
    }
    if (r < 0)
        printf("Could not resume request: %s\n", strerror(-r));
    return r;
}

/* Run the loop until a request is held at the tag (as qemu-io, for as
 * long as it takes), and say so as the filter does. */
int wait_break_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int r;

    while ((r = fq_debug(io->img, FQ_DEBUG_SUSPENDED, NULL, argv[1])) == 0)
        fq_ctx_run(io->ctx, 0, 100);
    if (r == 1)
        printf("blkdebug: Suspended request '%s'\n", argv[1]);
    return r < 0 ? r : 0;
}
