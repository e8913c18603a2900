/* tool_util.c: helpers shared by the subcommands.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tool.h"

void tool_error(const char *fmt, ...)
{
    va_list ap;

    fputs("fastqcow: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int tool_parse_size(const char *s, uint64_t *out, const char *what)
{
    if (fq_parse_size(s, out) < 0) {
        tool_error("Invalid %s specified: '%s'. You may use k, M, G, T suffixes.", what, s);
        return -1;
    }
    return 0;
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
