/* common/output.h: output in qemu-img's formats, shared by the qemu-img
 * compatible subcommands (output.c): sizes, pretty JSON, the progress
 * line, the snapshot table.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_OUTPUT_H
#define FQ_TOOLS_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fastqcow.h"

/* A size as qemu prints it: three digits of the largest binary unit that
 * leaves at least 1000 of the unit below ("1.5 MiB"). */
void img_size_str(uint64_t v, char *buf, size_t n);

/* Pretty JSON in qemu's layout: four-space indent, a member per line.
 * Start from { 0 }; a NULL key is an array element. */
struct jw {
    int depth;
    bool first[8];
};
void jw_open(struct jw *w, const char *key, char c);   /* c: '{' or '[' */
void jw_close(struct jw *w, char c);                   /* c: '}' or ']' */
void jw_int(struct jw *w, const char *key, int64_t v);
void jw_bool(struct jw *w, const char *key, bool v);
void jw_str(struct jw *w, const char *key, const char *s);

/* qemu-img's progress line, "    (12.34/100%)\r": printed when the
 * percentage moved more than min_skip (1 unless set) from the last one
 * printed, or is 0 or 100; computed in single precision as qemu-img does. */
struct progress {
    bool on;
    float cur, last, min_skip;
};
/* The percentage is now `pct`. */
void img_progress_set(struct progress *p, float pct);
/* done of total (force: print even without a move). */
void img_progress(struct progress *p, uint64_t done, uint64_t total, bool force);
/* img_progress as a library progress callback; opaque: the progress. */
void img_progress_cb(void *opaque, uint64_t done, uint64_t total);

/* "A/T = x% allocated, y% fragmented, z% compressed clusters", the
 * figures of qemu-img check (check, info --fragmentation). */
void img_frag_str(const struct fq_check_result *res, char *buf, size_t n);

/* Print the "Snapshot list:" table as qemu-img does (info, snapshot -l). */
void img_snapshot_dump(const struct fq_snapshot *v, int n);

#endif
