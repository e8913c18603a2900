/* io/interpreter.c: `fastqcow io`, a qemu-io compatible exerciser: its
 * options, the command table with each command's help, dispatch and the
 * stdin loop. The commands themselves live in requests.c and query.c
 * (commands.h).
 *
 * Commands come from -c (in order) or, without -c, from stdin one per line
 * with qemu-io's "qemu-io> " prompt. Output lines, error texts and the exit
 * status follow qemu-io 7.2: a failing command prints its message and the
 * run goes on; the exit status is 1 if any command failed (a failed pattern
 * verification counts; aio_* count as successful once submitted). While it
 * waits for input or sleeps, the interpreter runs the context loop, so aio
 * completions print as they happen.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../subcommands.h"
#include "commands.h"
#include "format.h"

/* ---- interpreter commands ------------------------------------------------------ */

static int sleep_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    char *end;
    long ms = strtol(argv[1], &end, 0);

    if (ms < 0 || *end || !*argv[1]) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    struct timespec t0 = now();
    for (double left; (left = (double)ms / 1000 - secs_since(t0)) > 0;) {
        if (fq_ctx_inflight(io->ctx) > 0) {
            fq_ctx_run(io->ctx, 0, (int)(left * 1000) + 1);
        } else {
            struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };
            nanosleep(&ts, NULL);
        }
    }
    return 0;
}

static int quit_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    io->quit = true;
    return 0;
}

static io_cmd_fn help_f;

#define RW_HELP_VERIFY " -R, -- seeded content: check every byte against SEED and its guest offset\n"
#define RW_HELP_FILL " -R, -- seeded content: fill every byte from SEED and its guest offset\n"

static const struct io_cmd cmds[] = {
    { "aio_flush", NULL, aio_flush_f, 0, 0, NULL, "completes all outstanding aio requests", NULL },
    { "aio_read", NULL, aio_read_f, 2, -1, "[-Ciqv] [-P pattern] off len [len..]",
      "asynchronously reads a number of bytes",
      " Reads asynchronously; completions are printed when they happen and aio_flush\n"
      " waits for all of them. A submitted request counts as successful.\n"
      " -C, -- report statistics in a machine parsable format\n"
      " -P, -- use a pattern to verify read data\n" RW_HELP_VERIFY
      " -i, -- treat request as invalid, for exercising stats\n"
      " -v, -- dump buffer to standard output\n"
      " -q, -- quiet mode, do not show I/O statistics\n" },
    { "aio_write", NULL, aio_write_f, 2, -1, "[-Cfiquz] [-P pattern] off len [len..]",
      "asynchronously writes a number of bytes",
      " Writes asynchronously; completions are printed when they happen and aio_flush\n"
      " waits for all of them. A submitted request counts as successful.\n"
      " -P, -- use different pattern to fill file\n" RW_HELP_FILL
      " -C, -- report statistics in a machine parsable format\n"
      " -f, -- use Force Unit Access semantics\n"
      " -i, -- treat request as invalid, for exercising stats\n"
      " -q, -- quiet mode, do not show I/O statistics\n"
      " -u, -- with -z, allow unmapping\n"
      " -z, -- write zeroes\n" },
    { "alloc", NULL, alloc_f, 1, 2, "offset [count]", "checks if offset is allocated in the file", NULL },
    { "discard", "d", discard_f, 2, -1, "[-Cq] off len", "discards a number of bytes at a specified offset",
      " -C, -- report statistics in a machine parsable format\n"
      " -q, -- quiet mode, do not show I/O statistics\n" },
    { "flush", "f", flush_f, 0, 0, NULL, "flush all in-core file state to disk", NULL },
    { "help", "?", help_f, 0, 1, "[command]", "help for one or all commands", NULL },
    { "info", "i", info_f, 0, 0, NULL, "prints information about the current file", NULL },
    { "length", "l", length_f, 0, 0, NULL, "gets the length of the current file", NULL },
    { "map", NULL, map_f, 0, 0, "", "prints the allocated areas of a file", NULL },
    { "quit", "q", quit_f, 0, -1, NULL, "exit the program", NULL },
    { "read", "r", read_f, 2, -1, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
      "reads a number of bytes at a specified offset",
      " -C, -- report statistics in a machine parsable format\n"
      " -l, -- length for pattern verification (only with -P)\n"
      " -p, -- ignored for backwards compatibility\n"
      " -P, -- use a pattern to verify read data\n" RW_HELP_VERIFY
      " -q, -- quiet mode, do not show I/O statistics\n"
      " -s, -- start offset for pattern verification (only with -P)\n"
      " -v, -- dump buffer to standard output\n" },
    { "readv", NULL, readv_f, 2, -1, "[-Cqv] [-P pattern] off len [len..]",
      "reads a number of bytes at a specified offset",
      " Uses one buffer per length; with -R, odd-sized iovecs and a non-zero iov_off.\n"
      " -C, -- report statistics in a machine parsable format\n"
      " -P, -- use a pattern to verify read data\n" RW_HELP_VERIFY
      " -v, -- dump buffer to standard output\n"
      " -q, -- quiet mode, do not show I/O statistics\n" },
    { "sleep", NULL, sleep_f, 1, 1, NULL, "waits for the given value in milliseconds", NULL },
    { "write", "w", write_f, 2, -1, "[-bcCfnquz] [-P pattern | -s source_file] off len",
      "writes a number of bytes at a specified offset",
      " -c, -- write compressed data (whole clusters; qcow2)\n"
      " -f, -- use Force Unit Access semantics (write, then flush)\n"
      " -n, -- with -z, don't allow slow fallback\n"
      " -p, -- ignored for backwards compatibility\n"
      " -P, -- use different pattern to fill file\n" RW_HELP_FILL
      " -s, -- use a pattern file to fill the write buffer\n"
      " -C, -- report statistics in a machine parsable format\n"
      " -q, -- quiet mode, do not show I/O statistics\n"
      " -u, -- with -z, allow unmapping\n"
      " -z, -- write zeroes\n" },
    { "writev", NULL, writev_f, 2, -1, "[-Cfq] [-P pattern] off len [len..]",
      "writes a number of bytes at a specified offset",
      " Uses one buffer per length; with -R, odd-sized iovecs and a non-zero iov_off.\n"
      " -P, -- use different pattern to fill file\n" RW_HELP_FILL
      " -C, -- report statistics in a machine parsable format\n"
      " -f, -- use Force Unit Access semantics\n"
      " -q, -- quiet mode, do not show I/O statistics\n" },
};

static const struct io_cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(name, cmds[i].name) || (cmds[i].alt && !strcmp(name, cmds[i].alt)))
            return &cmds[i];
    return NULL;
}

static void help_oneline(const char *name, const struct io_cmd *ct)
{
    printf("%s ", name);
    if (ct->args)
        printf("%s ", ct->args);
    printf("-- %s\n", ct->oneline);
}

static int help_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    if (argc == 1) {
        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
            help_oneline(cmds[i].name, &cmds[i]);
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    const struct io_cmd *c = find_cmd(argv[1]);
    if (!c) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], c);
    if (c->help)
        printf("\n%s\n", c->help);
    return 0;
}

/* Split one command line on blanks and run it. Returns 0 or -errno. */
static int run_line(struct io *io, char *line)
{
    char *argv[256];
    int argc = 0;

    for (char *t = strtok(line, " \n"); t && argc < 255; t = strtok(NULL, " \n"))
        argv[argc++] = t;
    argv[argc] = NULL;
    if (argc == 0)
        return 0;
    const struct io_cmd *ct = find_cmd(argv[0]);
    if (!ct) {
        fprintf(stderr, "command \"%s\" not found\n", argv[0]);
        return -EINVAL;
    }
    int n = argc - 1;
    if (n < ct->argmin || (ct->argmax != -1 && n > ct->argmax)) {
        if (ct->argmax == -1)
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n", n, argv[0], ct->argmin);
        else if (ct->argmin == ct->argmax)
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", n, argv[0], ct->argmin);
        else
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n", n, argv[0],
                    ct->argmin, ct->argmax);
        return -EINVAL;
    }
    int r = ct->fn(io, ct, argc, argv);
    fflush(stdout);
    return r;
}

/* ---- stdin loop ----------------------------------------------------------------- */

/* Read one line from fd 0 into *buf; while waiting, aio completions are
 * delivered (and printed). Returns the line length, or -1 at EOF. */
static ssize_t next_line(struct io *io, char **buf, size_t *cap, size_t *have)
{
    for (;;) {
        char *nl = *have ? memchr(*buf, '\n', *have) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - *buf);
            return (ssize_t)n;
        }
        if (*have + 4096 > *cap) {
            char *nb = realloc(*buf, *cap * 2 + 4096);
            if (!nb)
                return -1;
            *buf = nb;
            *cap = *cap * 2 + 4096;
        }
        int cfd = fq_ctx_inflight(io->ctx) > 0 ? fq_ctx_fd(io->ctx) : -1;
        if (fq_ctx_inflight(io->ctx) > 0) {
            struct pollfd p[2] = { { 0, POLLIN, 0 }, { cfd, POLLIN, 0 } };
            int pr = poll(p, cfd >= 0 ? 2 : 1, cfd >= 0 ? -1 : 10);
            if (pr >= 0 && !(p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
                fq_ctx_run(io->ctx, 0, 0);
                fflush(stdout);
                continue;
            }
        }
        ssize_t r = read(0, *buf + *have, *cap - *have);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            if (*have == 0)
                return -1;
            (*buf)[*have] = '\n'; /* last line without newline */
            (*have)++;
            continue;
        }
        *have += (size_t)r;
    }
}

static int stdin_loop(struct io *io)
{
    size_t cap = 0, have = 0;
    char *buf = NULL;
    int failed = 0;
    ssize_t n;

    for (;;) {
        fputs("qemu-io> ", stdout);
        fflush(stdout);
        if ((n = next_line(io, &buf, &cap, &have)) < 0)
            break;
        char *line = strndup(buf, (size_t)n);
        memmove(buf, buf + n + 1, have - (size_t)n - 1);
        have -= (size_t)n + 1;
        if (!line || run_line(io, line) < 0)
            failed = 1;
        free(line);
        if (io->quit)
            break;
    }
    free(buf);
    return failed;
}

/* ---- entry point -------------------------------------------------------------- */

static void io_usage(FILE *f)
{
    fprintf(f,
            "usage: fastqcow io [OPTIONS]... [-c STRING]... FILE\n"
            "qemu-io compatible disk exerciser. Without -c, commands are read from stdin.\n\n"
            "  -c, --cmd STRING     execute command with its arguments (repeatable)\n"
            "  -f, --format FMT     image format (qcow2, raw; probed by default)\n"
            "  -r, --read-only      open read-only\n"
            "  -n, --nocache        disable host cache, short for -t none (as qemu-io)\n"
            "  -k, --native-aio     use io_uring, short for -i io_uring\n"
            "  -i, --aio=MODE       I/O engine: io_uring (native), threads, sync\n"
            "  -t, --cache=MODE     none, writeback, writethrough (default), directsync, unsafe\n"
            "  -W, --workers=N      extents in flight per request (0 = measured: the default)\n"
            "  -U, --force-share    let other programs write the image meanwhile (with -r only)\n"
            "  -h, --help           display this help and exit\n\n"
            "Run 'fastqcow io -c help FILE' for the commands. Beyond qemu-io, read, write,\n"
            "readv, writev, aio_read and aio_write take -R SEED: content depending on SEED\n"
            "and on each byte's guest offset, so data at a wrong place is caught.\n");
}

int cmd_io(int argc, char **argv)
{
    static const struct option lopts[] = {
        { "cmd", required_argument, NULL, 'c' },      { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },      { "nocache", no_argument, NULL, 'n' },
        { "native-aio", no_argument, NULL, 'k' },     { "aio", required_argument, NULL, 'i' },
        { "cache", required_argument, NULL, 't' },    { "workers", required_argument, NULL, 'W' },
        { "force-share", no_argument, NULL, 'U' },    { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct fq_open_opts oo;
    struct io io = { 0 };
    char **cmdv = calloc((size_t)argc + 1, sizeof(char *));
    char err[FQ_ERR_MAX] = "";
    int ncmd = 0, c, failed = 0;
    uint64_t w;

    if (!cmdv)
        return 1;
    tool_open_opts_init(&oo);
    oo.cache = FQ_CACHE_WRITETHROUGH; /* qemu-io's default */
    optind = 0;
    while ((c = getopt_long(argc, argv, "+c:f:rnki:t:W:Uh", lopts, NULL)) != -1) {
        switch (c) {
        case 'c': cmdv[ncmd++] = optarg; break;
        case 'f': oo.format = optarg; break;
        case 'r': oo.readonly = 1; break;
        case 'n': oo.cache = FQ_CACHE_NONE; break;
        case 'k': oo.engine = FQ_ENGINE_IO_URING; break;
        case 'U': oo.force_share = 1; break;
        case 'i':
            if (tool_parse_engine(optarg, &oo.engine) < 0)
                goto fail;
            break;
        case 't':
            if (tool_parse_cache(optarg, &oo.cache, "cache") < 0)
                goto fail;
            break;
        case 'W':
            if (tool_parse_size(optarg, &w, "worker count") < 0 || w > 65536)
                goto fail;
            oo.max_workers = (unsigned)w;
            break;
        case 'h':
            io_usage(stdout);
            free(cmdv);
            return 0;
        default:
            io_usage(stderr);
            goto fail;
        }
    }
    if (optind != argc - 1) {
        tool_error(optind < argc ? "io: expecting one image file name" : "io: no image file given");
        goto fail;
    }
    int r = tool_open_image(argv[optind], &oo, &io.img, err);
    if (r < 0) {
        /* a refused lock or share is said as qemu-io says it: without
         * the "Could not open 'NAME': " the library puts first */
        const char *msg = err, *p = err;
        size_t nl = strlen(argv[optind]);
        if (!strncmp(p, "Could not open '", 16) && !strncmp(p + 16, argv[optind], nl) &&
            !strncmp(p + 16 + nl, "': ", 3) &&
            (!strncmp(p + 19 + nl, "Failed to ", 10) || !strncmp(p + 19 + nl, "force-share", 11)))
            msg = p + 19 + nl;
        tool_error("can't open device %s: %s", argv[optind], *err ? msg : strerror(-r));
        goto fail;
    }
    io.ctx = fq_image_ctx(io.img);
    io.readonly = oo.readonly;
    if (ncmd) {
        for (int i = 0; i < ncmd && !io.quit; i++) {
            char *line = strdup(cmdv[i]);
            if (!line || run_line(&io, line) < 0)
                failed = 1;
            free(line);
        }
    } else {
        failed = stdin_loop(&io);
    }
    io_drain(&io);
    fflush(stdout);
    r = fq_close(io.img);
    if (r < 0) {
        tool_error("closing %s: %s", argv[optind], strerror(-r));
        failed = 1;
    }
    free(cmdv);
    return failed;
fail:
    free(cmdv);
    return 1;
}
