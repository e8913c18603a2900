/* common/imgopts.c: qemu's block options as a key=value list (imgopts.h).
 *
 * The keys known here are those of the generic block layer (driver,
 * read-only, cache.*, discard, detect-zeroes, node-name...), of the file
 * protocol (file.filename, file.driver, file.locking, file.aio) and the
 * qcow2 runtime options (lazy-refcounts, the cache sizes, overlap checks,
 * discard passing). Each value is checked as qemu checks it, with its
 * message. The image's options the library has (cache mode, metadata cache
 * size) are taken from here by the caller; the qcow2 policies without a
 * counterpart (overlap-check: every metadata write is always checked;
 * pass-discard-*; cache-clean-interval) are accepted for compatibility.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "imgopts.h"

enum ktype { KT_STR, KT_BOOL, KT_SIZE, KT_NUM, KT_ENUM };

/* Every key known here: its type, the values of an enumeration (a
 * space-separated list), whether only qcow2 takes it (a raw image does
 * not know it), and whether reopen may change it. */
static const struct key {
    const char *name;
    enum ktype type;
    const char *values;
    bool qcow2, reopen;
} keys[] = {
    { "driver", KT_STR, NULL, false, false },
    { "file.filename", KT_STR, NULL, false, false },
    { "file.driver", KT_ENUM, "file", false, true },
    { "file.locking", KT_ENUM, "on off auto", false, false },
    { "file.aio", KT_ENUM, "threads native io_uring", false, false },
    { "read-only", KT_BOOL, NULL, false, true },
    { "auto-read-only", KT_BOOL, NULL, false, true },
    { "force-share", KT_BOOL, NULL, false, false },
    { "cache.direct", KT_BOOL, NULL, false, true },
    { "cache.no-flush", KT_BOOL, NULL, false, true },
    { "discard", KT_ENUM, "ignore off unmap on", false, true },
    { "detect-zeroes", KT_ENUM, "off on unmap", false, true },
    { "node-name", KT_STR, NULL, false, false },
    { "lazy-refcounts", KT_BOOL, NULL, true, true },
    { "pass-discard-request", KT_BOOL, NULL, true, true },
    { "pass-discard-snapshot", KT_BOOL, NULL, true, true },
    { "pass-discard-other", KT_BOOL, NULL, true, true },
    { "overlap-check", KT_ENUM, "none constant cached all", true, true },
    { "l2-cache-size", KT_SIZE, NULL, true, true },
    { "refcount-cache-size", KT_SIZE, NULL, true, true },
    { "cache-size", KT_SIZE, NULL, true, true },
    { "l2-cache-entry-size", KT_SIZE, NULL, true, true },
    { "cache-clean-interval", KT_NUM, NULL, true, true },
};

/* overlap-check.template, overlap-check.main-header...: one switch per
 * kind of metadata */
static const struct key overlap_switch = { "overlap-check.*", KT_BOOL, NULL, true, true };

static const struct key *find_key(const char *k)
{
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!strcmp(keys[i].name, k))
            return &keys[i];
    if (!strncmp(k, "overlap-check.", 14) && k[14])
        return &overlap_switch;
    return NULL;
}

bool imgopts_reopenable(const char *key, const char *format)
{
    const struct key *k = find_key(key);

    return k && k->reopen && (!k->qcow2 || !strcmp(format, "qcow2"));
}

const char *imgopts_get(const struct imgopts *o, const char *key)
{
    const char *v = NULL;

    for (int i = 0; i < o->n; i++)   /* the last one given wins */
        if (!strcmp(o->key[i], key))
            v = o->val[i];
    return v;
}

void imgopts_free(struct imgopts *o)
{
    free(o->buf);
    memset(o, 0, sizeof(*o));
}

enum fq_cache_mode imgopts_cache(const struct imgopts *o, enum fq_cache_mode base)
{
    bool wt = base == FQ_CACHE_WRITETHROUGH || base == FQ_CACHE_DIRECTSYNC;
    bool direct = base == FQ_CACHE_NONE || base == FQ_CACHE_DIRECTSYNC;
    bool noflush = base == FQ_CACHE_UNSAFE;

    if (o->direct >= 0)
        direct = o->direct;
    if (o->no_flush >= 0)
        noflush = o->no_flush;
    if (noflush)
        return FQ_CACHE_UNSAFE;
    if (direct)
        return wt ? FQ_CACHE_DIRECTSYNC : FQ_CACHE_NONE;
    return wt ? FQ_CACHE_WRITETHROUGH : FQ_CACHE_WRITEBACK;
}

/* Is `v` one of the space-separated words of `list`? */
static bool one_of(const char *list, const char *v)
{
    size_t n = strlen(v);

    for (const char *p = list; *p;) {
        const char *e = strchr(p, ' ');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == n && !strncmp(p, v, n))
            return true;
        p += len + (e != NULL);
    }
    return false;
}

/* qemu's identifiers: a letter, then letters, digits, '-', '.', '_'. */
static bool is_ident(const char *s)
{
    if (!isalpha((unsigned char)*s))
        return false;
    for (s++; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-._", *s))
            return false;
    return true;
}

/* Check one value. Returns 0 or -1 after printing. */
static int check_value(struct imgopts *o, const struct key *k, const char *name, const char *v,
                       const char *prefix)
{
    uint64_t n;
    char *end;

    switch (k->type) {
    case KT_BOOL:
        if (strcmp(v, "on") && strcmp(v, "off")) {
            tool_error("%sParameter '%s' expects 'on' or 'off'", prefix, name);
            return -1;
        }
        return 0;
    case KT_ENUM:
        if (one_of(k->values, v))
            return 0;
        if (!strcmp(name, "discard"))
            tool_error("%sInvalid discard option", prefix);
        else if (!strcmp(name, "overlap-check"))
            tool_error("%sUnsupported value '%s' for qcow2 option 'overlap-check'. Allowed are any "
                       "of the following: none, constant, cached, all", prefix, v);
        else if (!strcmp(name, "file.driver"))
            tool_error("%sUnknown driver '%s'", prefix, v);
        else
            tool_error("%sinvalid parameter value: %s", prefix, v);
        return -1;
    case KT_SIZE:
        if (tool_strtosz(v, &n) < 0) {
            tool_error("%sParameter '%s' expects a non-negative number below 2^64", prefix, name);
            fputs("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                  "and exabytes, respectively.\n", stderr);
            return -1;
        }
        return 0;
    case KT_NUM:
        errno = 0;
        n = strtoull(v, &end, 0);
        if (!*v || *end || errno) {
            tool_error("%sParameter '%s' expects a number", prefix, name);
            return -1;
        }
        if (n > 0xffffffffu) {
            tool_error("%sCache clean interval too big", prefix);
            return -1;
        }
        return 0;
    case KT_STR:
        if (!strcmp(name, "node-name") && !is_ident(v)) {
            tool_error("%sInvalid node-name: '%s'", prefix, v);
            return -1;
        }
        return 0;
    }
    return 0;
}

/* Split the list in place: "k=v" pairs separated by ',', ",," a comma. */
static int split(struct imgopts *o, const char *prefix)
{
    char *p = o->buf;

    while (*p) {
        char *k = p, *v = NULL, *w = p;
        for (; *p && *p != ','; p++) {
            if (*p == '=' && !v) {
                *w++ = '\0';
                v = w;
                continue;
            }
            *w++ = *p;
        }
        /* values keep ",," as a comma */
        while (v && p[0] == ',' && p[1] == ',') {
            *w++ = ',';
            p += 2;
            for (; *p && *p != ','; p++)
                *w++ = *p;
        }
        if (*p == ',')
            p++;
        *w = '\0';
        if (!v) {
            bool no = !strncmp(k, "no", 2) && k[2];
            tool_error("warning: short-form boolean option '%s' deprecated", k);
            fprintf(stderr, "Please use %s=%s instead\n", no ? k + 2 : k, no ? "off" : "on");
            v = no ? "off" : "on";
            if (no)
                k += 2;
        }
        if (o->n == IMGOPTS_MAX) {
            tool_error("%stoo many options", prefix);
            return -1;
        }
        o->key[o->n] = k;
        o->val[o->n++] = v;
    }
    return 0;
}

int imgopts_parse(const char *list, struct imgopts *o, const char *prefix)
{
    const char *v;

    memset(o, 0, sizeof(*o));
    o->readonly = o->direct = o->no_flush = o->discard_unmap = o->lazy_refcounts = -1;
    if (!(o->buf = strdup(list)))
        return -1;
    if (split(o, prefix) < 0)
        return -1;
    for (int i = 0; i < o->n; i++) {
        const struct key *kd = find_key(o->key[i]);
        uint64_t n;
        if (kd && !kd->qcow2 && check_value(o, kd, o->key[i], o->val[i], prefix) < 0)
            return -1;
        /* the metadata cache asked for, for the open (checked after it) */
        if (kd && kd->type == KT_SIZE && strcmp(kd->name, "l2-cache-entry-size") &&
            tool_strtosz(o->val[i], &n) == 0)
            o->cache_size = !strcmp(kd->name, "cache-size") ? n : o->cache_size + n;
    }
    o->driver = imgopts_get(o, "driver");
    if (o->driver && !strcmp(o->driver, "file"))
        o->driver = "raw";
    o->filename = imgopts_get(o, "file.filename");
    if ((v = imgopts_get(o, "read-only")))
        o->readonly = !strcmp(v, "on");
    if ((v = imgopts_get(o, "cache.direct")))
        o->direct = !strcmp(v, "on");
    if ((v = imgopts_get(o, "cache.no-flush")))
        o->no_flush = !strcmp(v, "on");
    if ((v = imgopts_get(o, "discard")))
        o->discard_unmap = !strcmp(v, "unmap") || !strcmp(v, "on");
    return 0;
}

int imgopts_check_format(struct imgopts *o, const char *format, const char *prefix)
{
    bool qcow2 = !strcmp(format, "qcow2");
    const char *v;

    o->unknown = NULL;
    for (int i = 0; i < o->n; i++) {
        const struct key *kd = find_key(o->key[i]);
        if (!kd || (kd->qcow2 && !qcow2)) {
            if (!o->unknown)
                o->unknown = o->key[i];
            continue;
        }
        if (kd->qcow2 && check_value(o, kd, o->key[i], o->val[i], prefix) < 0)
            return -1;
    }
    if (!qcow2)
        return 0;
    if ((v = imgopts_get(o, "lazy-refcounts")))
        o->lazy_refcounts = !strcmp(v, "on");
    const char *l2 = imgopts_get(o, "l2-cache-size"), *rc = imgopts_get(o, "refcount-cache-size");
    const char *all = imgopts_get(o, "cache-size");
    if (all && (v = imgopts_get(o, "cache-size")))
        tool_strtosz(v, &o->cache_size);   /* the total, not a sum */
    if (l2 && rc && all) {
        tool_error("%scache-size, l2-cache-size and refcount-cache-size may not be set at the same "
                   "time", prefix);
        return -1;
    }
    uint64_t a, b;
    if (all && l2 && tool_strtosz(all, &a) == 0 && tool_strtosz(l2, &b) == 0 && b > a) {
        tool_error("%sl2-cache-size may not exceed cache-size", prefix);
        return -1;
    }
    if (all && rc && tool_strtosz(all, &a) == 0 && tool_strtosz(rc, &b) == 0 && b > a) {
        tool_error("%srefcount-cache-size may not exceed cache-size", prefix);
        return -1;
    }
    return 0;
}
