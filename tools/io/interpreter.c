/* io/interpreter.c: `fastqcow io`, a qemu-io compatible exerciser: its
 * command line, the dispatch of one command and the two loops (-c strings
 * in order, or lines from stdin). The command table and help are
 * table.c's; the commands live in session.c, requests.c, query.c and
 * control.c (commands.h).
 *
 * Behaviour follows qemu-io 7.2 where a script can see it:
 *  - options anywhere on the command line (GNU argument permutation, "--"
 *    ends them); at most one image, which may be left out: `open` then
 *    opens one (from -c or stdin), `close` closes it;
 *  - a command line is split on spaces; before running a command the
 *    interpreter checks that an image is open (unless the command needs
 *    none), the argument count, and for commands that write that the
 *    image is writable, each with qemu-io's message;
 *  - a failing command prints its message and the run goes on; the exit
 *    status is 1 if any command failed;
 *  - stdout is written through stdio's buffer and flushed where qemu-io
 *    flushes it (before reading a line from stdin, before sigraise, at
 *    exit), stderr is unbuffered: with both on one pipe the lines
 *    interleave as qemu-io's do;
 *  - SIGUSR1, SIGIO, SIGALRM and SIGBUS are blocked and SIGPIPE ignored,
 *    as in qemu-io, so `sigraise` of those does not end the run.
 * While it waits for input or sleeps, the interpreter runs the context
 * loop, so aio completions print as they happen.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../common/object.h"
#include "../subcommands.h"
#include "commands.h"

#define MAX_ARGS 256

/* Split one command line on spaces (as qemu-io: tabs and newlines are
 * part of the words) and run it. Returns 0 or -errno. */
static int run_line(struct io *io, char *line)
{
    char *argv[MAX_ARGS + 1];
    int argc = 0;

    for (char *t = strtok(line, " "); t && argc < MAX_ARGS; t = strtok(NULL, " "))
        argv[argc++] = t;
    argv[argc] = NULL;
    if (argc == 0)
        return 0;
    const struct io_cmd *ct = io_find_cmd(argv[0]);
    if (!ct) {
        fprintf(stderr, "command \"%s\" not found\n", argv[0]);
        return -EINVAL;
    }
    if (!(ct->flags & IO_NOFILE) && !io->img) {
        fprintf(stderr, "no file open, try 'help open'\n");
        return -EINVAL;
    }
    int n = argc - 1;
    if (n < ct->argmin || (ct->argmax != -1 && n > ct->argmax)) {
        if (ct->argmax == -1)
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n", n, argv[0],
                    ct->argmin);
        else if (ct->argmin == ct->argmax)
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", n, argv[0], ct->argmin);
        else
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d arguments\n", n,
                    argv[0], ct->argmin, ct->argmax);
        return -EINVAL;
    }
    if ((ct->flags & IO_WRITES) && io->readonly) {
        tool_error("Block node is read-only");
        return -EACCES;
    }
    return ct->fn(io, ct, argc, argv);
}

/* ---- stdin loop ----------------------------------------------------------------- */

/* Read one line from fd 0 into *buf; while waiting, aio completions are
 * delivered (and printed). Returns the line length, or -1 at EOF. */
static ssize_t next_line(struct io *io, char **buf, size_t *cap, size_t *have)
{
    for (;;) {
        char *nl = *have ? memchr(*buf, '\n', *have) : NULL;
        if (nl)
            return (ssize_t)(nl - *buf);
        if (*have + 4096 > *cap) {
            char *nb = realloc(*buf, *cap * 2 + 4096);
            if (!nb)
                return -1;
            *buf = nb;
            *cap = *cap * 2 + 4096;
        }
        if (io->ctx && fq_ctx_inflight(io->ctx) > 0) {
            /* what the requests owe the loop (queued steps, submissions
             * not yet handed to the engine) goes out before the wait */
            fq_ctx_run(io->ctx, 0, 0);
        }
        if (io->ctx && fq_ctx_inflight(io->ctx) > 0) {
            struct pollfd p[2] = { { 0, POLLIN, 0 }, { fq_ctx_fd(io->ctx), POLLIN, 0 } };
            int pr = poll(p, p[1].fd >= 0 ? 2 : 1, p[1].fd >= 0 ? -1 : 10);
            if (pr >= 0 && !(p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
                fq_ctx_run(io->ctx, 0, 0);
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

/* Prompt, read, run, until EOF or quit. Returns 1 if a command failed. */
static int stdin_loop(struct io *io)
{
    size_t cap = 0, have = 0;
    char *buf = NULL;
    int failed = 0;
    ssize_t n;

    while (!io->quit) {
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
    }
    free(buf);
    return failed;
}

/* ---- entry point -------------------------------------------------------------- */

static void usage(void)
{
    printf("Usage: fastqcow io [OPTIONS]... [-c STRING]... [file]\n"
           "qemu-io compatible disk exerciser. Without -c, commands are read from stdin.\n"
           "\n"
           "  --object OBJECTDEF   define an object such as 'secret' for\n"
           "                       passwords and/or encryption keys\n"
           "  --image-opts         treat file as option string\n"
           "  -c, --cmd STRING     execute command with its arguments\n"
           "                       from the given string\n"
           "  -f, --format FMT     specifies the block driver to use\n"
           "  -r, --read-only      export read-only\n"
           "  -s, --snapshot       use snapshot file\n"
           "  -n, --nocache        disable host cache, short for -t none\n"
           "  -C, --copy-on-read   enable copy-on-read\n"
           "  -m, --misalign       misalign allocations for O_DIRECT\n"
           "  -k, --native-aio     native AIO, short for -i native\n"
           "  -i, --aio=MODE       use AIO mode (threads, native, io_uring or sync)\n"
           "  -t, --cache=MODE     use the given cache mode for the image\n"
           "  -d, --discard=MODE   use the given discard mode for the image\n"
           "  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]\n"
           "                       specify tracing options (there are no trace events)\n"
           "  -U, --force-share    force shared permissions\n"
           "  -W, --workers=N      extents in flight per request (0 = measured: the default)\n"
           "  -h, --help           display this help and exit\n"
           "  -V, --version        output version information and exit\n"
           "\n"
           "See 'fastqcow io -c help' for information on available commands.\n"
           "Beyond qemu-io, read, write, readv, writev, aio_read and aio_write take a\n"
           "seed (fastqcow-io(1)): content depending on it and on each byte's guest\n"
           "offset, so that data at a wrong place is caught.\n");
}

/* -T: every pattern is accepted; a name without a wildcard is warned
 * about, as no trace event has it. */
static void trace_opt(const char *arg)
{
    char *s = strdup(arg), *save = NULL;

    for (char *t = s ? strtok_r(s, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
        if (!strncmp(t, "enable=", 7))
            t += 7;
        else if (strchr(t, '='))
            continue;
        if (!strpbrk(t, "*?"))
            tool_error("warning: trace event '%s' does not exist", t);
    }
    free(s);
}

enum { OPT_OBJECT = 256, OPT_IMAGE_OPTS };

/* Parse the command line into `sp` and the run's settings. Returns -1 to
 * go on, else the exit status. */
static int parse_cmdline(int argc, char **argv, struct io *io, struct io_spec *sp, char ***cmdv,
                         int *ncmd)
{
    static const struct option lopts[] = {
        { "help", no_argument, NULL, 'h' },         { "version", no_argument, NULL, 'V' },
        { "cmd", required_argument, NULL, 'c' },     { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },     { "snapshot", no_argument, NULL, 's' },
        { "nocache", no_argument, NULL, 'n' },       { "copy-on-read", no_argument, NULL, 'C' },
        { "misalign", no_argument, NULL, 'm' },      { "native-aio", no_argument, NULL, 'k' },
        { "aio", required_argument, NULL, 'i' },     { "discard", required_argument, NULL, 'd' },
        { "cache", required_argument, NULL, 't' },   { "trace", required_argument, NULL, 'T' },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "force-share", no_argument, NULL, 'U' },   { "workers", required_argument, NULL, 'W' },
        { NULL, 0, NULL, 0 },
    };
    static char tool_name[] = "fastqcow";
    char *prog = argv[0];
    uint64_t w;
    int c, r;

    argv[0] = tool_name;   /* getopt's messages name the tool */
    optind = 0;
    while ((c = getopt_long(argc, argv, "hVc:d:f:rsnCmki:t:T:UW:", lopts, NULL)) != -1) {
        switch (c) {
        case 'c': (*cmdv)[(*ncmd)++] = optarg; break;
        case 'f': sp->format = optarg; break;
        case 'r': sp->readonly = true; break;
        case 's': sp->snapshot = true; break;
        case 'C': sp->cor = true; break;
        case 'n': sp->cache = FQ_CACHE_NONE; break;
        case 'm': io->misalign = true; break;
        case 'k':
            sp->engine = FQ_ENGINE_DEFAULT;     /* as -i native */
            sp->native = true;
            break;
        case 'U': sp->force_share = true; break;
        case 'T': trace_opt(optarg); break;
        case OPT_IMAGE_OPTS: sp->image_opts = io->image_opts = true; break;
        case 'i':
            if (tool_parse_engine(optarg, &sp->engine) < 0)
                return 1;
            sp->native = !strcmp(optarg, "native");
            break;
        case 't':
            if (tool_parse_cache(optarg, &sp->cache, "cache") < 0)
                return 1;
            break;
        case 'd':
            if (strcmp(optarg, "ignore") && strcmp(optarg, "off") && strcmp(optarg, "unmap") &&
                strcmp(optarg, "on")) {
                tool_error("Invalid discard option: %s", optarg);
                return 1;
            }
            sp->unmap = !strcmp(optarg, "unmap") || !strcmp(optarg, "on");
            break;
        case 'W':
            if (tool_parse_size(optarg, &w, "worker count") < 0 || w > 65536)
                return 1;
            io->max_workers = (unsigned)w;
            break;
        case OPT_OBJECT:
            if ((r = tool_object_add(optarg)) != 0)
                return r > 0 ? 0 : 1;
            break;
        case 'V':
            printf("fastqcow io version %s\n", fq_version());
            return 0;
        case 'h':
            usage();
            return 0;
        default:
            usage();
            return 1;
        }
    }
    argv[0] = prog;
    if (argc - optind > 1) {
        usage();
        return 1;
    }
    if (sp->format && sp->image_opts) {
        tool_error("--image-opts and -f are mutually exclusive");
        return 1;
    }
    sp->name = optind < argc ? argv[optind] : NULL;
    return -1;
}

int cmd_io(int argc, char **argv)
{
    struct io_spec sp = { .cache = FQ_CACHE_WRITETHROUGH, .unmap = true };   /* qemu-io's defaults */
    struct io io = { .unmap = true };
    char **cmdv = calloc((size_t)argc + 1, sizeof(char *));
    int ncmd = 0, failed = 0, r;
    sigset_t set;

    if (!cmdv)
        return 1;
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGIO);
    sigaddset(&set, SIGALRM);
    sigaddset(&set, SIGBUS);
    sigprocmask(SIG_BLOCK, &set, NULL);
    if ((r = parse_cmdline(argc, argv, &io, &sp, &cmdv, &ncmd)) >= 0) {
        free(cmdv);
        return r;
    }
    if (sp.name && io_open(&io, &sp) < 0) {
        free(cmdv);
        return 1;
    }
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
    io_close(&io);
    free(cmdv);
    return failed;
}
