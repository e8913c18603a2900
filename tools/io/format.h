/* io/format.h: qemu-io's number syntax and output formats for `fastqcow io`:
 * byte counts ("1.5k", "0x200"; qemu's size syntax of common/args.c),
 * pattern bytes, human sizes ("3.875 MiB"), the two report lines of every
 * request, and the -v hex dump.
 * The io subcommand's files (interpreter.c, requests.c, query.c) include
 * this; static inline, so that each uses what it needs.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_IO_FORMAT_H
#define FQ_TOOLS_IO_FORMAT_H

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../common/args.h"

/* Parse a byte count as qemu-io does: qemu's size syntax (img_qsize,
 * common/args.c), at most INT64_MAX. Returns 0, -EINVAL or -ERANGE. */
static inline int cvtnum(const char *s, int64_t *out)
{
    uint64_t v = 0;
    int r = img_qsize(s, &v);

    *out = r == 0 ? (int64_t)v : 0;
    return r;
}

/* cvtnum with qemu-io's error line on failure. */
static inline int getnum(const char *s, int64_t *out)
{
    int r = cvtnum(s, out);

    if (r == -ERANGE)
        printf("Parsing error: argument too large -- %s\n", s);
    else if (r < 0)
        printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- %s\n", s);
    return r;
}

/* A pattern byte (strtol base 0, 0..255); -1 after printing on error. */
static inline int parse_pattern(const char *s)
{
    char *end;
    long v = strtol(s, &end, 0);

    if (!*s || *end || v < 0 || v > 255) {
        printf("%s is not a valid pattern byte\n", s);
        return -1;
    }
    return (int)v;
}

/* Human size the way qemu-io prints it: "64 KiB", "3.875 MiB", "0 bytes". */
static inline void cvtstr(double v, char *buf, size_t len)
{
    static const char *const sfx[] = { " bytes", " KiB", " MiB", " GiB", " TiB", " PiB", " EiB" };
    char num[64];
    int u = 0;

    while (u < 6 && v >= 1024.0) {
        v /= 1024.0;
        u++;
    }
    snprintf(num, sizeof(num), "%.3f", v);
    char *z = strstr(num, ".000");
    if (z)
        *z = '\0';
    snprintf(buf, len, "%s%s", num, sfx[u]);
}

static inline struct timespec now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

static inline double secs_since(struct timespec t0)
{
    struct timespec t1 = now();

    return (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
}

/* "00.12 sec" below a second, else (or with `fixed`) "H:MM:SS.ss". */
static inline void timestr(double t, bool fixed, char *buf, size_t len)
{
    unsigned s = (unsigned)t;

    if (fixed || s)
        snprintf(buf, len, "%u:%02u:%05.2f", s / 3600, s / 60 % 60, (double)(s % 60) + (t - s));
    else
        snprintf(buf, len, "%05.2f sec", t);
}

/* qemu-io's two report lines, or its -C "bytes,ops,time,bytes/s,ops/s". */
static inline void print_report(const char *op, double t, int64_t off, int64_t count, bool C)
{
    char s1[64], s2[64], ts[64];

    if (t <= 0)
        t = 1e-9;
    timestr(t, C, ts, sizeof(ts));
    if (C) {
        printf("%" PRId64 ",1,%s,%.3f,%.3f\n", count, ts, (double)count / t, 1 / t);
        return;
    }
    cvtstr((double)count, s1, sizeof(s1));
    cvtstr((double)count / t, s2, sizeof(s2));
    printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op, count, count, off);
    printf("%s, 1 ops; %s (%s/sec and %.4f ops/sec)\n", s1, ts, s2, 1 / t);
}

/* Hex dump, 16 bytes a line, as `read -v`. */
static inline void dump_buffer(const uint8_t *p, int64_t off, size_t len)
{
    for (size_t i = 0; i < len; i += 16) {
        size_t n = len - i < 16 ? len - i : 16;
        printf("%08" PRIx64 ":  ", (uint64_t)off + i);
        for (size_t j = 0; j < n; j++)
            printf("%02x ", p[i + j]);
        putchar(' ');
        for (size_t j = 0; j < n; j++)
            putchar(isalnum(p[i + j]) ? p[i + j] : '.');
        putchar('\n');
    }
}

#endif
