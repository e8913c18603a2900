/* common/args.h: the command line of the qemu-img compatible subcommands
 * (args.c): one option parser for create, info, check, map, compare and
 * convert, the usage errors and long options of those that parse their
 * own, all with qemu-img's messages, and qemu's size syntax.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_ARGS_H
#define FQ_TOOLS_ARGS_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cli.h"

#define ALIGN_UP512(v) (((v) + 511) & ~(uint64_t)511)   /* qemu sizes images in sectors */

/* Every option of every subcommand; each takes the subset it names. */
struct args {
    const char *fmt, *fmt2, *out_fmt, *backing;
    char *olist[16];           /* -o lists, split in place by img_cspec_parse (create_opts.h) */
    int nolist, json, jobs;    /* jobs: -m, 0 = not given */
    unsigned repair;
    bool quiet, progress, strict, chain, unsafe, ooo, no_create, compress, frag;
    bool bitmaps, skip_broken;   /* convert --bitmaps, --skip-broken-bitmaps */
    uint64_t start, maxlen, sparse;
    enum fq_cache_mode cache, src_cache;
    bool cache_set;           /* -t given */
};

/* Codes of the long-only options, for parse_args' `longs`. */
enum { LO_OUTPUT = 'J', LO_CHAIN = 'K', LO_START = 'X', LO_MAXLEN = 'Y', LO_FRAG = 'G', LO_OBJECT = 'Q',
       LO_BITMAPS = 'Z', LO_SKIP_BROKEN = 'E' };

/* Parse a subcommand's options: `shorts` is its getopt string, `longs`
 * the LO_* codes it accepts. Returns 0, -1 after printing `usage` (exit
 * 0), or the exit code after printing an error. */
int img_parse_args(int argc, char **argv, const char *shorts, const char *longs,
                   const char *usage, struct args *a);
/* The long options of subcommands that parse their own: --help,
 * --force-share (-U: tool_force_share, for those that take it) and
 * --object (LO_OBJECT). */
extern const struct option img_help_only[];
/* --object ARG (common/object.h) in a subcommand's option loop. Returns
 * -1 to go on, else the exit code (0 after a help it printed). */
int img_object_opt(const char *arg);
/* A usage error as qemu-img reports it. Returns the exit code 1. */
int img_usage_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The usage error for what getopt returned as `ch` (':' a missing
 * argument, anything else an unknown option) with opterr = 0 and a
 * leading ':' in the option string. Returns the exit code 1. */
int img_getopt_err(int ch, char **argv);
/* Parse a size as qemu does (qemu_strtosz: white space, '+', decimal with
 * fraction or 0x hex, one suffix of B K M G T P E). Returns 0, -EINVAL, or
 * -ERANGE past UINT64_MAX. */
int tool_strtosz(const char *s, uint64_t *out);
/* tool_strtosz limited to INT64_MAX (-ERANGE beyond), as qemu's tools
 * take sizes and offsets. */
int img_qsize(const char *s, uint64_t *out);
/* img_qsize with qemu-img's messages about `what` ("image size").
 * Returns 0 or -1. */
int img_cvtnum(const char *what, const char *s, uint64_t *out);

#endif
