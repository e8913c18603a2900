/* common/output.c: output in qemu-img's formats (output.h): sizes as qemu
 * prints them, its pretty JSON layout, the progress line and the snapshot
 * table. Every text
 * here is qemu-img 7.2's, so that a change here changes the output of
 * every subcommand alike.
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "output.h"

void img_size_str(uint64_t v, char *buf, size_t n)
{
    static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    double div = 1;
    int i = 0;

    for (; i < 6 && (double)v >= 1000.0 * div; i++)
        div *= 1024;
    snprintf(buf, n, "%0.3g %s", (double)v / div, unit[i]);
}

/* Begin a member (an array element when key is NULL). */
static void jw_key(struct jw *w, const char *key)
{
    if (w->depth)
        printf("%s%*s", w->first[w->depth] ? "\n" : ",\n", 4 * w->depth, "");
    w->first[w->depth] = false;
    if (key)
        printf("\"%s\": ", key);
}

void jw_open(struct jw *w, const char *key, char c)
{
    jw_key(w, key);
    putchar(c);
    w->first[++w->depth] = true;
}

void jw_close(struct jw *w, char c)
{
    w->depth--;
    printf("\n%*s%c%s", 4 * w->depth, "", c, w->depth ? "" : "\n");
}

void jw_int(struct jw *w, const char *key, int64_t v)
{
    jw_key(w, key);
    printf("%" PRId64, v);
}

void jw_bool(struct jw *w, const char *key, bool v)
{
    jw_key(w, key);
    fputs(v ? "true" : "false", stdout);
}

void jw_str(struct jw *w, const char *key, const char *s)
{
    jw_key(w, key);
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/* Print the current percentage. */
static void progress_print(struct progress *p)
{
    p->last = p->cur;
    printf("    (%3.2f/100%%)\r", (double)p->cur);
    fflush(stdout);
}

void img_progress_set(struct progress *p, float pct)
{
    float skip = p->min_skip > 0 ? p->min_skip : 1.0f;

    if (!p->on)
        return;
    p->cur = pct;
    if (pct > p->last + skip || pct < p->last - skip || pct == 100 || pct == 0)
        progress_print(p);
}

void img_progress(struct progress *p, uint64_t done, uint64_t total, bool force)
{
    if (!p->on)
        return;
    img_progress_set(p, total ? (float)(100.0 * (double)done / (double)total) : 100.0f);
    if (force && p->last != p->cur)
        progress_print(p);
}

void img_progress_cb(void *opaque, uint64_t done, uint64_t total)
{
    img_progress(opaque, done, total, false);
}

void img_frag_str(const struct fq_check_result *res, char *buf, size_t n)
{
    double alloc = (double)res->allocated_clusters;

    snprintf(buf, n, "%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% "
             "compressed clusters", res->allocated_clusters, res->total_clusters,
             res->total_clusters ? alloc * 100 / (double)res->total_clusters : 0.0,
             alloc ? (double)res->fragmented_clusters * 100 / alloc : 0.0,
             alloc ? (double)res->compressed_clusters * 100 / alloc : 0.0);
}

void img_snapshot_dump(const struct fq_snapshot *v, int n)
{
    printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
           "VM CLOCK", "ICOUNT");
    for (int i = 0; i < n; i++) {
        char size[32], date[32] = "", clock[48], icount[32] = "";
        time_t t = (time_t)v[i].date_sec;
        struct tm tm;
        uint64_t ms = v[i].vm_clock_nsec / 1000000;

        img_size_str(v[i].vm_state_size, size, sizeof(size));
        if (localtime_r(&t, &tm))
            strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(clock, sizeof(clock), "%02" PRIu64 ":%02u:%02u.%03u", ms / 3600000,
                 (unsigned)(ms / 60000 % 60), (unsigned)(ms / 1000 % 60), (unsigned)(ms % 1000));
        if (v[i].icount != UINT64_MAX)
            snprintf(icount, sizeof(icount), "%" PRIu64, v[i].icount);
        printf("%-9s %-16s %8s%20s%13s%11s\n", v[i].id, v[i].name, size, date, clock, icount);
    }
}
