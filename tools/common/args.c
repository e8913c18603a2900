/* common/args.c: the command line of the qemu-img compatible subcommands
 * (args.h): one option parser for all of them with qemu-img's messages,
 * and qemu's size syntax.
 *
 * Nothing here holds state; every text it prints is qemu-img 7.2's, so
 * that a change here changes the output of every subcommand alike.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "object.h"

const struct option img_help_only[] = { { "help", no_argument, NULL, 'h' },
                                       { "force-share", no_argument, NULL, 'U' },
                                       { "object", required_argument, NULL, LO_OBJECT },
                                       { 0 } };

int img_object_opt(const char *arg)
{
    int r = tool_object_add(arg);

    return r == 0 ? -1 : r > 0 ? 0 : 1;
}

int img_usage_err(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    tool_verror(fmt, ap);
    va_end(ap);
    fputs("Try 'fastqcow --help' for more information\n", stderr);
    return 1;
}

int img_getopt_err(int ch, char **argv)
{
    if (ch == ':')
        return img_usage_err("missing argument for option '%s'", argv[optind - 1]);
    return img_usage_err("unrecognized option '%s'", argv[optind - 1]);
}

/* qemu's size syntax (qemu_strtosz), as learnt from its tools: leading
 * white space, an optional '+', then a decimal integer with an optional
 * fraction (a non-zero one needs a suffix), or a 0x hex integer (no
 * fraction; a suffix is deprecated, with a warning), then at most one
 * suffix B K M G T P E in either case. The fraction adds its share of the
 * unit rounded to the nearest byte (half up); one that rounds to 1.0 in
 * double precision adds nothing, as in qemu. */
int tool_strtosz(const char *s, uint64_t *out)
{
    static const char sfx[] = "bkmgtpe";
    const char *p = s, *q;
    double frac = 0;
    uint64_t v, mult = 1, add = 0;
    char *end;

    while (isspace((unsigned char)*p))
        p++;
    q = *p == '+' ? p + 1 : p;
    if (!isdigit((unsigned char)*q))
        return -EINVAL;
    errno = 0;
    v = strtoull(q, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    bool hex = v == 0 && (*end == 'x' || *end == 'X');
    if (hex) {
        errno = 0;
        v = strtoull(q, &end, 16);
        if (errno == ERANGE)
            return -ERANGE;
        if (*end == '.')
            return -EINVAL;
    } else if (*end == '.') {
        const char *f = end;
        if (!isdigit((unsigned char)f[1])) {
            end++;           /* "1.k": no fractional digits */
        } else {
            errno = 0;
            frac = strtod(f, &end);
            if (memchr(f, 'e', (size_t)(end - f)) || memchr(f, 'E', (size_t)(end - f)))
                return -EINVAL;
        }
    }
    if (*end && (q = strchr(sfx, tolower((unsigned char)*end)))) {
        mult = 1ull << (10 * (q - sfx));
        if (hex && mult > 1)
            tool_error("warning: Using a multiplier suffix on hex numbers is deprecated: %s", s);
        end++;
    }
    if (*end || (mult == 1 && frac != 0))
        return -EINVAL;
    if (frac > 0 && frac < 1)
        add = (uint64_t)(frac * (double)mult + 0.5);
    if (v > (UINT64_MAX - add) / mult)
        return -ERANGE;
    *out = v * mult + add;
    return 0;
}

int img_qsize(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    int r = tool_strtosz(s, &v);

    if (r == 0 && v > INT64_MAX)
        r = -ERANGE;
    if (r == 0)
        *out = v;
    return r;
}

int img_cvtnum(const char *what, const char *s, uint64_t *out)
{
    int r = img_qsize(s, out);

    if (r == -ERANGE) {
        tool_error("Invalid %s specified. Must be between 0 and %" PRId64 ".", what, INT64_MAX);
    } else if (r < 0) {
        tool_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for", what);
        tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    }
    return r < 0 ? -1 : 0;
}

int img_parse_args(int argc, char **argv, const char *shorts, const char *longs,
                   const char *usage, struct args *a)
{
    static const struct option lo[] = {
        { "help", no_argument, NULL, 'h' }, { "force-share", no_argument, NULL, 'U' },
        { "output", required_argument, NULL, LO_OUTPUT },
        { "backing-chain", no_argument, NULL, LO_CHAIN },
        { "fragmentation", no_argument, NULL, LO_FRAG },
        { "start-offset", required_argument, NULL, LO_START },
        { "max-length", required_argument, NULL, LO_MAXLEN },
        { "repair", required_argument, NULL, 'r' },
        { "bitmaps", no_argument, NULL, LO_BITMAPS },
        { "skip-broken-bitmaps", no_argument, NULL, LO_SKIP_BROKEN },
        { "object", required_argument, NULL, LO_OBJECT }, { 0 } };
    uint64_t v = 0;
    int ch;

    *a = (struct args){ .jobs = 0, .maxlen = UINT64_MAX, .sparse = 4096 };
    opterr = 0;
    while ((ch = getopt_long(argc, argv, shorts, lo, NULL)) != -1) {
        if (ch == LO_OBJECT) {   /* every subcommand takes it */
            int r = img_object_opt(optarg);
            if (r >= 0)
                return r == 0 ? -1 : r;
            continue;
        }
        if (ch != '?' && ch != ':' && !strchr(shorts, ch) && !strchr(longs, ch))
            ch = '?';   /* a long option this subcommand does not take */
        switch (ch) {
        case 'f': a->fmt = optarg; break;
        case 'F': a->fmt2 = optarg; break;
        case 'O': a->out_fmt = optarg; break;
        case 'b': a->backing = optarg; break;
        case 'B': a->backing = optarg; break;   /* convert's -B */
        case 'q': a->quiet = true; break;
        case 'p': a->progress = true; break;
        case 's': a->strict = true; break;
        case 'u': a->unsafe = true; break;
        case 'W': a->ooo = true; break;
        case 'n': a->no_create = true; break;
        case 'c': a->compress = true; break;
        case 'U': tool_force_share = true; break;
        case LO_CHAIN: a->chain = true; break;
        case LO_FRAG: a->frag = true; break;
        case LO_BITMAPS: a->bitmaps = true; break;
        case LO_SKIP_BROKEN: a->skip_broken = true; break;
        case 'h': fputs(usage, stdout); return -1;
        case 'o':
            if (a->nolist < 16)
                a->olist[a->nolist++] = optarg;
            break;
        case LO_OUTPUT:
            if (strcmp(optarg, "human") && strcmp(optarg, "json")) {
                tool_error("--output must be used with human or json as argument.");
                return 1;
            }
            a->json = !strcmp(optarg, "json");
            break;
        case LO_START:
            if (img_cvtnum("start offset", optarg, &a->start) < 0)
                return 1;
            break;
        case LO_MAXLEN:
            if (img_cvtnum("max length", optarg, &a->maxlen) < 0)
                return 1;
            break;
        case 'S':
            if (img_cvtnum("buffer size for sparse output", optarg, &a->sparse) < 0)
                return 1;
            break;
        case 'r':
            if (strcmp(optarg, "leaks") && strcmp(optarg, "all"))
                return img_usage_err("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            a->repair = optarg[0] == 'l' ? FQ_CHECK_REPAIR_LEAKS : FQ_CHECK_REPAIR_ALL;
            break;
        case 'm':
            if (img_qsize(optarg, &v) < 0 || v < 1 || v > 16) {
                tool_error("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
                return 1;
            }
            a->jobs = (int)v;
            break;
        case 't':
            a->cache_set = true;
            if (tool_parse_cache(optarg, &a->cache, "cache") < 0)
                return 1;
            break;
        case 'T':
            if (tool_parse_cache(optarg, &a->src_cache, "source cache") < 0)
                return 1;
            break;
        default:   /* '?' and ':' */
            return img_getopt_err(ch, argv);
        }
    }
    return 0;
}
