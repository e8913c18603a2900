/* dd.c: `fastqcow dd`, qemu-img dd: copy the guest data of an image, from
 * an offset and up to a length given in blocks, into a new image (raw, or
 * -O qcow2).
 *
 * Operands and their meaning follow qemu-img 7.2 (learnt by running it):
 * bs= (1 to INT_MAX bytes, default 512), count= and skip= in blocks,
 * if= and of= (both needed; a later one of a kind wins). count bounds the
 * input at count*bs bytes from its start (not from the skip), and a skip
 * past that bound is reported and leaves an empty output, as qemu-img's
 * does. The output, created without the "Formatting" line, is written
 * wholly (zeros included), so it maps and reads as qemu-img's. Beyond
 * qemu-img 7.2, osize= sets the size of the output image (at least what
 * is copied; the rest reads as zeros).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/args.h"
#include "common/blockopts.h"
#include "common/create_opts.h"
#include "common/image.h"
#include "subcommands.h"

#define DD_CHUNK (1u << 20)   /* bytes moved per read and write (whole blocks) */

/* The operands of one run. */
struct dd {
    const char *in, *out;
    uint64_t bs, count, skip, osize;
    bool has_count, has_skip, has_osize;
};

/* A number operand as qemu-img parses it (its size syntax), with its
 * messages. Returns 0 or -1. */
static int dd_num(const char *what, const char *v, uint64_t lo, uint64_t hi, uint64_t *out)
{
    int r = img_qsize(v, out);

    if (r == 0 && (*out < lo || *out > hi))
        r = -ERANGE;
    if (r == -ERANGE) {
        tool_error("Invalid %s specified. Must be between %" PRIu64 " and %" PRIu64 ".", what, lo, hi);
    } else if (r < 0) {
        tool_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
        tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    }
    return r < 0 ? -1 : 0;
}

/* Is operand `arg` KEY=...? */
static bool is_key(const char *arg, const char *eq, const char *key)
{
    return eq && (size_t)(eq - arg) == strlen(key) && !strncmp(arg, key, strlen(key));
}

/* Parse one KEY=VALUE operand (a later one of a kind wins). Returns 0 or
 * -1 after printing. */
static int dd_operand(const char *arg, struct dd *d)
{
    const char *eq = strchr(arg, '='), *v = eq ? eq + 1 : NULL;

    if (is_key(arg, eq, "bs"))
        return dd_num("bs", v, 1, INT_MAX, &d->bs);
    if (is_key(arg, eq, "count")) {
        d->has_count = true;
        return dd_num("count", v, 0, INT64_MAX, &d->count);
    }
    if (is_key(arg, eq, "skip")) {
        d->has_skip = true;
        return dd_num("skip", v, 0, INT64_MAX, &d->skip);
    }
    if (is_key(arg, eq, "osize")) {
        d->has_osize = true;
        return dd_num("osize", v, 0, INT64_MAX, &d->osize);
    }
    if (is_key(arg, eq, "if") || is_key(arg, eq, "of")) {
        *(arg[0] == 'i' ? &d->in : &d->out) = v;
        return 0;
    }
    tool_error("unrecognized operand %.*s", eq ? (int)(eq - arg) : (int)strlen(arg), arg);
    return -1;
}

/* Copy [pos, end) of `in` to `out` from offset 0, in whole blocks of bs
 * bytes (the last one shorter). Returns 0 or -1 after printing. */
static int dd_copy(struct fq_image *in, struct fq_image *out, uint64_t pos, uint64_t end, uint64_t bs)
{
    size_t chunk = bs >= DD_CHUNK ? (size_t)bs : DD_CHUNK / bs * bs;
    uint8_t *buf = malloc(chunk);
    uint64_t opos = 0;
    int r = 0;

    if (!buf) {
        tool_error("%s", strerror(ENOMEM));
        return -1;
    }
    while (pos < end) {
        size_t n = (size_t)MIN((uint64_t)chunk, end - pos);
        if ((r = fq_pread(in, buf, n, pos)) < 0) {
            tool_error("error while reading from input image file: %s", strerror(-r));
            break;
        }
        if ((r = fq_pwrite(out, buf, n, opos)) < 0) {
            tool_error("error while writing to output image file: %s", strerror(-r));
            break;
        }
        pos += n;
        opos += n;
    }
    free(buf);
    return r < 0 ? -1 : 0;
}

int cmd_dd(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow dd [--object objectdef] [-U] [-f fmt] [-O output_fmt] [bs=block_size]\n"
        "                   [count=blocks] [skip=blocks] [osize=size] if=input of=output\n"
        "\n"
        "Copy an image into a new one block by block (qemu-img dd): from skip blocks\n"
        "into the input up to count blocks from its start; osize sets the size of\n"
        "the output (at least what is copied).\n"
        "\n"
        "  -f fmt               format of the input (probed by default)\n"
        "  -O output_fmt        format of the output: raw (default) or qcow2\n"
        "  -U, --force-share    accepted; no effect (the input is opened as usual)\n"
        "  --object objectdef   define an object (secret)\n"
        "  --image-opts         the input (if=) is named by qemu's option list\n"
        "  -h, --help           this help\n";
    struct dd d = { .bs = 512 };
    struct cspec c = { .print = false };
    const char *fmt = NULL, *out_fmt = "raw";
    int ch, r = 1;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":hf:O:U", img_help_only, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'U': break;
        case LO_OBJECT:
            if ((ch = img_object_opt(optarg)) >= 0)
                return ch;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    for (int i = optind; i < argc; i++)
        if (dd_operand(argv[i], &d) < 0)
            return 1;
    if (!d.in || !d.out) {
        tool_error("Must specify both input and output files");
        return 1;
    }
    struct fq_image *in = img_open_file(d.in, fmt, false, true, FQ_CACHE_WRITEBACK), *out = NULL;
    if (!in)
        return 1;
    if (strcmp(out_fmt, "raw") && strcmp(out_fmt, "qcow2")) {
        tool_error("Unknown file format");
        goto done;
    }
    uint64_t size = fq_size(in), pos;
    if (d.has_count && d.count <= INT64_MAX / d.bs && d.count * d.bs < size)
        size = d.count * d.bs;   /* the end of the input, from its start */
    bool past = d.has_skip && (d.skip > INT64_MAX / d.bs || size < d.skip * d.bs);
    pos = past ? size : d.skip * d.bs;
    uint64_t osize = size - pos;
    if (d.has_osize) {
        if (d.osize < osize) {
            tool_error("osize=%" PRIu64 " is smaller than the %" PRIu64 " bytes to copy", d.osize, osize);
            goto done;
        }
        osize = d.osize;
    }
    c.file = d.out;
    c.fmt = out_fmt;
    c.quiet = true;
    img_cspec_num(&c, K_SIZE, osize);
    if (img_create(&c) < 0)
        goto done;
    /* --image-opts names the input only: the output is a plain file name */
    tool_image_opts = false;
    if (!(out = img_open_file(d.out, out_fmt, true, false, FQ_CACHE_WRITEBACK)))
        goto done;
    if (past)
        tool_error("%s: cannot skip to specified offset", d.in);
    r = dd_copy(in, out, pos, size, d.bs) < 0;
done:
    if (out && img_close(out, 0) < 0)
        r = 1;
    fq_close(in);
    return r;
}
