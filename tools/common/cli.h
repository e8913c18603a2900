/* common/cli.h: what every subcommand shares: the "fastqcow: " error
 * messages, the parsing of sizes, cache modes and I/O engines, the global
 * --backing-format option and human-readable sizes (cli.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_CLI_H
#define FQ_TOOLS_CLI_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "fastqcow.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

/* Print "fastqcow: <message>" to stderr. */
void tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* tool_error for callers that have a va_list (their own printf-like
 * wrappers, which add lines of their own after the message). */
void tool_verror(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));
/* Parse a size with suffix (k, M, G, T); prints an error and returns -1
 * on failure. */
int tool_parse_size(const char *s, uint64_t *out, const char *what);
/* Parse a cache mode (fq_cache_parse); on failure print "Invalid <what>
 * option: <s>" as qemu-img does and return -1. */
int tool_parse_cache(const char *s, enum fq_cache_mode *out, const char *what);
/* Parse an I/O engine (fq_engine_parse); on failure print "Invalid aio
 * option: <s>" as qemu-img and qemu-io do and return -1. */
int tool_parse_engine(const char *s, enum fq_engine_kind *out);
/* The global --backing-format option (or FASTQCOW_BACKING_FORMAT): the
 * format of the image's backing file (over what the image records), or
 * "probe" to guess the format of backing files that record none; NULL
 * (the default) refuses to open those. */
extern const char *tool_backing_format;
/* The global --allow-backing-protocol option (or
 * FASTQCOW_ALLOW_BACKING_PROTOCOL): the protocols ("nbd", a comma-
 * separated list, or "all") a backing file name read from an image may
 * use; NULL (the default): plain files only (fq_open_opts.backing_protocols). */
extern const char *tool_backing_protocols;
/* -U / --force-share of the subcommands that take it (as qemu-img:
 * info, check, map, compare, convert's source, measure, snapshot -l,
 * bench's reads, io -r): every image they open read-only lets other
 * programs write it meanwhile; a read-write open with it is refused. */
extern bool tool_force_share;
/* fq_open_opts_init plus the tool's global options. */
void tool_open_opts_init(struct fq_open_opts *o);
/* The warning qemu's tools print when they open an image read-write whose
 * format nobody named and probing took for raw (`given` is the format
 * named, or NULL). */
void tool_warn_probed_raw(const char *name, const char *given, struct fq_image *img, bool rw);
/* True if `s` is one of qemu's identifiers (object ids, node names): a
 * letter, then letters, digits, '-', '.', '_'. */
bool tool_is_ident(const char *s);
/* Human-readable size as qemu prints it ("1 GiB", "64 KiB", "1.5 MiB"). */
void tool_human_size(uint64_t v, char *buf, size_t len);

#endif
