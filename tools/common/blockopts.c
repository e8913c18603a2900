/* common/blockopts.c: qemu's block option lists (blockopts.h).
 *
 * One table holds every key the tool knows: those of the generic block
 * layer (driver, read-only, cache.*, discard, detect-zeroes, node-name...),
 * of the file protocol (file.filename, file.driver, file.locking,
 * file.aio; with driver=file the same keys without "file.") and qcow2's
 * runtime options (lazy-refcounts, overlap checks, discard passing and
 * the metadata cache keys, the external data file: data-file.filename or
 * data-file). Each value is checked as qemu checks it, with
 * its message: the generic ones as the list is parsed, the format's once
 * the format is known. The metadata cache keys are the library's: it
 * parses them (fq_open_opts_set) and refuses combinations that contradict
 * each other or the image when it opens it. The qcow2 policies without a
 * counterpart (overlap-check: every metadata write is always checked;
 * pass-discard-*) and node-name, file.locking are accepted for
 * compatibility and change nothing.
 *
 * Below the parser, the --image-opts of the qemu-img compatible
 * subcommands: an image name that is a list, opened and checked.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockopts.h"
#include "object.h"

bool tool_image_opts;
bool tool_target_image_opts;

/* KT_CACHE: a metadata cache key, parsed by fq_open_opts_set. */
enum ktype { KT_STR, KT_BOOL, KT_ENUM, KT_CACHE };

/* Every key known here: its type, the values of an enumeration (a
 * space-separated list), whether only qcow2 takes it (a raw image does
 * not know it), and whether reopen may change it. */
static const struct key {
    const char *name;
    enum ktype type;
    const char *values;
    bool qcow2, reopen;
} keys[] = {
    { "driver", KT_ENUM, "qcow2 raw luks file", false, false },
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
    { "overlap-check.template", KT_ENUM, "none constant cached all", true, true },
    { "l2-cache-size", KT_CACHE, NULL, true, true },
    { "refcount-cache-size", KT_CACHE, NULL, true, true },
    { "cache-size", KT_CACHE, NULL, true, true },
    { "l2-cache-entry-size", KT_CACHE, NULL, true, true },
    { "cache-clean-interval", KT_CACHE, NULL, true, true },
    { "data-file", KT_STR, NULL, true, false },
    { "data-file.filename", KT_STR, NULL, true, false },
    { "data-file.driver", KT_ENUM, "file", true, false },
    { "encrypt.key-secret", KT_STR, NULL, true, false },
    { "key-secret", KT_STR, NULL, false, false },      /* driver=luks */
};

/* overlap-check.main-header, overlap-check.active-l1...: one switch per
 * kind of metadata */
static const struct key overlap_switch = { "overlap-check.*", KT_BOOL, NULL, true, true };
static const char overlap_kinds[] = "main-header active-l1 active-l2 refcount-table "
                                    "refcount-block snapshot-table inactive-l1 inactive-l2 "
                                    "bitmap-directory";

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

/* The table's entry for `k`, or NULL. */
static const struct key *find_key(const char *k)
{
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (!strcmp(keys[i].name, k))
            return &keys[i];
    if (!strncmp(k, "overlap-check.", 14) && one_of(overlap_kinds, k + 14))
        return &overlap_switch;
    return NULL;
}

/* The entry for key `k` of list `o`: with driver=file the list is the
 * file protocol's, whose keys come without "file." (and none with it). */
static const struct key *lookup(const struct blockopts *o, const char *k)
{
    char fk[64];

    if (!o->protocol)
        return find_key(k);
    if (!strncmp(k, "file.", 5))
        return NULL;
    snprintf(fk, sizeof(fk), "file.%s", k);
    if (!strcmp(k, "filename") || !strcmp(k, "aio") || !strcmp(k, "locking"))
        return find_key(fk);
    return find_key(k);
}

/* The value of the file protocol's key `k` ("filename", "aio"), or NULL. */
static const char *file_opt(const struct blockopts *o, const char *k)
{
    char fk[64];

    if (o->protocol)
        return blockopts_get(o, k);
    snprintf(fk, sizeof(fk), "file.%s", k);
    return blockopts_get(o, fk);
}

bool blockopts_reopenable(const char *key, const char *format)
{
    const struct key *k = find_key(key);

    return k && k->reopen && (!k->qcow2 || !strcmp(format, "qcow2"));
}

const char *blockopts_get(const struct blockopts *o, const char *key)
{
    const char *v = NULL;

    for (int i = 0; i < o->n; i++)   /* the last one given wins */
        if (!strcmp(o->key[i], key))
            v = o->val[i];
    return v;
}

void blockopts_init(struct blockopts *o)
{
    memset(o, 0, sizeof(*o));
    o->readonly = o->direct = o->no_flush = o->force_share = o->discard_unmap = -1;
    o->detect_zeroes = o->engine = -1;
    fq_open_opts_init(&o->caches);
}

void blockopts_free(struct blockopts *o)
{
    free(o->buf);
    blockopts_init(o);
}

enum fq_cache_mode blockopts_cache(const struct blockopts *o, enum fq_cache_mode base)
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

void blockopts_set_caches(const struct blockopts *o, struct fq_open_opts *oo)
{
    const struct fq_open_opts *c = &o->caches;

    if (c->cache_given & FQ_CACHE_GIVEN_SIZE)
        oo->cache_size = c->cache_size;
    if (c->cache_given & FQ_CACHE_GIVEN_L2_SIZE)
        oo->l2_cache_size = c->l2_cache_size;
    if (c->cache_given & FQ_CACHE_GIVEN_REFCOUNT_SIZE)
        oo->refcount_cache_size = c->refcount_cache_size;
    if (c->cache_given & FQ_CACHE_GIVEN_ENTRY_SIZE)
        oo->l2_cache_entry_size = c->l2_cache_entry_size;
    if (c->cache_given & FQ_CACHE_GIVEN_CLEAN)
        oo->cache_clean_interval = c->cache_clean_interval;
    oo->cache_given |= c->cache_given;
    /* the external data file: a file name (qemu's data-file.filename) */
    if (blockopts_get(o, "data-file.filename"))
        oo->data_file = blockopts_get(o, "data-file.filename");
    else if (blockopts_get(o, "data-file"))
        oo->data_file = blockopts_get(o, "data-file");
    if (c->key_secret) {
        oo->key_secret = c->key_secret;
        oo->key_secret_len = c->key_secret_len;
    }
}

/* qemu's booleans: 1 (on, yes, true, y), 0 (off, no, false, n) or -1. */
static int parse_bool(const char *v)
{
    if (one_of("on yes true y", v))
        return 1;
    return one_of("off no false n", v) ? 0 : -1;
}

/* Check the value `v` of key `name` (entry k). Returns 0 or -1 with err. */
static int check_value(const struct key *k, const char *name, const char *v, char *err)
{
    struct fq_open_opts scratch;

    switch (k->type) {
    case KT_BOOL:
        if (parse_bool(v) < 0) {
            snprintf(err, FQ_ERR_MAX, "Parameter '%s' expects 'on' or 'off'", name);
            return -1;
        }
        return 0;
    case KT_ENUM:
        if (one_of(k->values, v))
            return 0;
        if (!strcmp(k->name, "discard"))
            snprintf(err, FQ_ERR_MAX, "Invalid discard option");
        else if (!strncmp(k->name, "overlap-check", 13))
            snprintf(err, FQ_ERR_MAX, "Unsupported value '%s' for qcow2 option 'overlap-check'. "
                     "Allowed are any of the following: none, constant, cached, all", v);
        else if (!strcmp(k->name, "driver") || !strcmp(k->name, "file.driver"))
            snprintf(err, FQ_ERR_MAX, "Unknown driver '%s'", v);
        else
            snprintf(err, FQ_ERR_MAX, "invalid parameter value: %s", v);
        return -1;
    case KT_CACHE:
        fq_open_opts_init(&scratch);
        return fq_open_opts_set(&scratch, name, v, err) < 0 ? -1 : 0;
    case KT_STR:
        if (!strcmp(k->name, "node-name") && !tool_is_ident(v)) {
            snprintf(err, FQ_ERR_MAX, "Invalid node-name: '%s'", v);
            return -1;
        }
        if ((!strcmp(k->name, "file.filename") || !strncmp(k->name, "data-file", 9)) && !*v) {
            snprintf(err, FQ_ERR_MAX, "The 'file' block driver requires a file name");
            return -1;
        }
        return 0;
    }
    return 0;
}

/* Split the list in place: "k=v" pairs separated by ',', ",," a comma;
 * warn of short-form booleans if `warn`. Returns 0 or -1 with err. */
static int split(struct blockopts *o, bool warn, char *err)
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
            if (warn) {
                tool_error("warning: short-form boolean option '%s' deprecated", k);
                fprintf(stderr, "Please use %s=%s instead\n", no ? k + 2 : k, no ? "off" : "on");
            }
            v = no ? "off" : "on";
            if (no)
                k += 2;
        }
        if (o->n == BLOCKOPTS_MAX) {
            snprintf(err, FQ_ERR_MAX, "too many options");
            return -1;
        }
        o->key[o->n] = k;
        o->val[o->n++] = v;
    }
    return 0;
}

/* blockopts_parse, warning of short-form booleans if `warn`. */
static int parse(const char *list, struct blockopts *o, bool warn, char *err)
{
    const char *v;

    blockopts_init(o);
    if (!(o->buf = strdup(list))) {
        snprintf(err, FQ_ERR_MAX, "%s", strerror(ENOMEM));
        return -1;
    }
    if (split(o, warn, err) < 0)
        return -1;
    o->driver = blockopts_get(o, "driver");
    if (o->driver && !strcmp(o->driver, "file")) {
        /* the file protocol alone: the image reads as raw */
        o->protocol = true;
        o->driver = "raw";
    }
    for (int i = 0; i < o->n; i++) {
        const struct key *kd = lookup(o, o->key[i]);
        if (kd && !kd->qcow2 && check_value(kd, o->key[i], o->val[i], err) < 0)
            return -1;
        /* refused values are said once the format is known */
        if (kd && kd->type == KT_CACHE)
            fq_open_opts_set(&o->caches, o->key[i], o->val[i], NULL);
    }
    o->filename = file_opt(o, "filename");
    /* the secret named (--object secret,id=...), as qemu looks it up */
    if (((v = blockopts_get(o, "encrypt.key-secret")) || (v = blockopts_get(o, "key-secret"))) &&
        !(o->caches.key_secret = tool_secret_or_err(v, &o->caches.key_secret_len, err, FQ_ERR_MAX)))
        return -1;
    if ((v = blockopts_get(o, "read-only")))
        o->readonly = parse_bool(v);
    if ((v = blockopts_get(o, "force-share")))
        o->force_share = parse_bool(v);
    if ((v = blockopts_get(o, "cache.direct")))
        o->direct = parse_bool(v);
    if ((v = blockopts_get(o, "cache.no-flush")))
        o->no_flush = parse_bool(v);
    if ((v = blockopts_get(o, "discard")))
        o->discard_unmap = !strcmp(v, "unmap") || !strcmp(v, "on");
    if ((v = blockopts_get(o, "detect-zeroes")))
        o->detect_zeroes = !strcmp(v, "off") ? 0 : !strcmp(v, "on") ? 1 : 2;
    if ((v = file_opt(o, "aio"))) {
        enum fq_engine_kind e;
        if (fq_engine_parse(v, &e) == 0)
            o->engine = (int)e;
        o->aio_native = !strcmp(v, "native");
    }
    return 0;
}

int blockopts_parse(const char *list, struct blockopts *o, char *err)
{
    return parse(list, o, true, err);
}

int blockopts_check_format(const struct blockopts *o, const char *format, char *err)
{
    bool qcow2 = !strcmp(format, "qcow2");
    const char *unknown = NULL;

    /* the file's options first: the file is opened before its format
     * (with driver=file, every key is the file's) */
    for (int i = 0; i < o->n; i++) {
        const struct key *kd = lookup(o, o->key[i]);
        if (o->protocol ? !kd || kd->qcow2 : !kd && !strncmp(o->key[i], "file.", 5)) {
            snprintf(err, FQ_ERR_MAX, "Block protocol 'file' doesn't support the option '%s'",
                     o->key[i] + (o->protocol ? 0 : 5));
            return -1;
        }
    }
    for (int i = 0; i < o->n; i++) {
        const struct key *kd = lookup(o, o->key[i]);
        if (!kd || (kd->qcow2 && !qcow2)) {
            if (!unknown)
                unknown = o->key[i];
            continue;
        }
        if (kd->qcow2 && check_value(kd, o->key[i], o->val[i], err) < 0)
            return -1;
    }
    if (unknown) {
        snprintf(err, FQ_ERR_MAX, "Block format '%s' does not support the option '%s'", format,
                 unknown);
        return -1;
    }
    return 0;
}

int blockopts_no_file(const struct blockopts *o, char *err)
{
    snprintf(err, FQ_ERR_MAX, "%s", o->protocol ? "The 'file' block driver requires a file name"
                                    : o->driver ? "A block device must be specified for \"file\""
                                                : "Must specify either driver or file");
    return -1;
}

int blockopts_apply(const struct blockopts *o, struct fq_open_opts *oo, char *err)
{
    if (!o->filename)
        return blockopts_no_file(o, err);
    if (o->driver)
        oo->format = o->driver;
    if (o->readonly == 1)
        oo->readonly = 1;
    if (o->force_share == 1)
        oo->force_share = 1;
    oo->cache = blockopts_cache(o, oo->cache);
    if (o->engine >= 0)
        oo->engine = (enum fq_engine_kind)o->engine;
    if (o->aio_native && oo->cache != FQ_CACHE_NONE && oo->cache != FQ_CACHE_DIRECTSYNC) {
        snprintf(err, FQ_ERR_MAX, "aio=native was specified, but it requires cache.direct=on, "
                 "which was not specified.");
        return -1;
    }
    blockopts_set_caches(o, oo);
    return 0;
}

/* ---- --image-opts of the qemu-img compatible subcommands ------------------ */

/* Parse an image name given under --image-opts. A subcommand may parse
 * one name twice (for its file, then to open it): its warnings are said
 * once. */
static int parse_name(const char *name, struct blockopts *o, char *err)
{
    static const char *warned;   /* the last name warned of (an argv string) */
    bool warn = name != warned;

    warned = name;
    return parse(name, o, warn, err);
}

int tool_open_image(const char *name, const struct fq_open_opts *o, struct fq_image **out,
                    char *err)
{
    struct fq_open_opts oo = *o;
    struct blockopts spec;
    int r;

    err[0] = '\0';
    if (!tool_image_opts)
        return fq_open(name, o, out, err);
    if (parse_name(name, &spec, err) < 0 || blockopts_apply(&spec, &oo, err) < 0) {
        blockopts_free(&spec);
        return -EINVAL;
    }
    r = fq_open(spec.filename, &oo, out, err);
    if (r == 0 && blockopts_check_format(&spec, fq_format(*out), err) < 0) {
        fq_close(*out);
        *out = NULL;
        r = -EINVAL;
    }
    blockopts_free(&spec);
    return r;
}

int tool_image_name(const char *name, struct blockopts *spec, const char **file, const char **fmt,
                    char *err)
{
    blockopts_init(spec);
    *file = name;
    if (!tool_image_opts)
        return 0;
    if (parse_name(name, spec, err) < 0)
        return -1;
    if (!spec->filename)
        return blockopts_no_file(spec, err);
    *file = spec->filename;
    if (fmt && spec->driver)
        *fmt = spec->driver;
    return 0;
}
