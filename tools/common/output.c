/* common/output.c: output in qemu-img's formats (output.h): sizes as qemu
 * prints them, its pretty JSON layout and the progress line. Every text
 * here is qemu-img 7.2's, so that a change here changes the output of
 * every subcommand alike.
 * SPDX-License-Identifier: MIT
 */
#include <inttypes.h>
#include <stdio.h>

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

void img_progress(struct progress *p, uint64_t done, uint64_t total, bool force)
{
    double pct = total ? (double)done * 100.0 / (double)total : 100.0;

    if (!p->on || (!force && pct - p->last < 1.0))
        return;
    p->last = pct;
    printf("    (%3.2f/100%%)\r", pct);
    fflush(stdout);
}
