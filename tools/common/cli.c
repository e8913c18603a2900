/* common/cli.c: helpers every subcommand shares (cli.h): the "fastqcow: "
 * error messages, size, cache and engine option values, the global
 * --backing-format and --allow-backing-protocol options, the warning about
 * probed raw images, qemu's identifiers and human-readable sizes.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "object.h"

const char *tool_backing_format;
const char *tool_backing_protocols;
bool tool_force_share;

void tool_open_opts_init(struct fq_open_opts *o)
{
    fq_open_opts_init(o);
    o->backing_format = tool_backing_format;
    o->backing_protocols = tool_backing_protocols;
    o->force_share = tool_force_share;
    o->key_secret = tool_default_secret(&o->key_secret_len);
}

void tool_verror(const char *fmt, va_list ap)
{
    fputs("fastqcow: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void tool_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    tool_verror(fmt, ap);
    va_end(ap);
}

int tool_parse_size(const char *s, uint64_t *out, const char *what)
{
    if (fq_parse_size(s, out) < 0) {
        tool_error("Invalid %s specified: '%s'. You may use k, M, G, T suffixes.", what, s);
        return -1;
    }
    return 0;
}

int tool_parse_cache(const char *s, enum fq_cache_mode *out, const char *what)
{
    if (fq_cache_parse(s, out) == 0)
        return 0;
    tool_error("Invalid %s option: %s", what, s);
    return -1;
}

int tool_parse_engine(const char *s, enum fq_engine_kind *out)
{
    if (fq_engine_parse(s, out) == 0)
        return 0;
    tool_error("Invalid aio option: %s", s);
    return -1;
}

void tool_warn_probed_raw(const char *name, const char *given, struct fq_image *img, bool rw)
{
    if (given || !rw || strcmp(fq_format(img), "raw"))
        return;
    fprintf(stderr, "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
            "         Automatically detecting the format is dangerous for raw images, write "
            "operations on block 0 will be restricted.\n"
            "         Specify the 'raw' format explicitly to remove the restrictions.\n", name);
}

void tool_human_size(uint64_t v, char *buf, size_t len)
{
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    int u = 0;
    double d = (double)v;

    while (d >= 1024 && u < 6) {
        d /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)v);
    else if (d == (double)(uint64_t)d)
        snprintf(buf, len, "%llu %s", (unsigned long long)d, units[u]);
    else
        snprintf(buf, len, "%.3g %s", d, units[u]);
}

bool tool_is_ident(const char *s)
{
    if (!isalpha((unsigned char)*s))
        return false;
    for (s++; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-._", *s))
            return false;
    return true;
}
