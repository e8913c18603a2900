/* blockopts.c: qemu's block options (fastqcow.h, struct fq_blockopts):
 * the one interpreter of an image named by options, whichever way they
 * were spelled (a "k=v,..." list under --image-opts, a json:{...} name
 * flattened by json.c, a blkdebug:CONFIG:IMAGE name).
 *
 * One table holds the keys of the generic block layer (driver, read-only,
 * cache.*, discard, detect-zeroes, node-name, backing) and qcow2's runtime
 * options (lazy-refcounts, overlap checks, discard passing, the metadata
 * cache keys, the external data file: data-file.filename or data-file);
 * each protocol driver lists its own (struct fq_optdesc:
 * file's filename, aio, locking; null-co's size...), which sit under
 * "file." or, with driver=PROTOCOL, at the top. Each value is checked as
 * qemu checks it, with its message: the generic and protocol ones as the
 * list is parsed, the format's once the format is known. The qcow2
 * policies without a counterpart (overlap-check: every metadata write is
 * always checked; pass-discard-*) and node-name, file.locking are
 * accepted for compatibility and change nothing.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <stdio.h>

#include "core/core.h"
#include "util.h"

/* KT_CACHE: a metadata cache key, parsed by fq_open_opts_set. */
enum ktype { KT_STR, KT_BOOL, KT_ENUM, KT_CACHE, KT_DRIVER };

/* Every generic and format key: its type, the values of an enumeration
 * (space-separated), whether only qcow2 takes it (a raw image does not
 * know it), and whether reopen may change it. */
static const struct key {
    const char *name;
    enum ktype type;
    const char *values;
    bool qcow2, reopen;
} keys[] = {
    { "driver", KT_DRIVER, NULL, false, false },
    { "file.driver", KT_DRIVER, NULL, false, true },
    { "read-only", KT_BOOL, NULL, false, true },
    { "auto-read-only", KT_BOOL, NULL, false, true },
    { "force-share", KT_BOOL, NULL, false, false },
    { "cache.direct", KT_BOOL, NULL, false, true },
    { "cache.no-flush", KT_BOOL, NULL, false, true },
    { "discard", KT_ENUM, "ignore off unmap on", false, true },
    { "detect-zeroes", KT_ENUM, "off on unmap", false, true },
    { "node-name", KT_STR, NULL, false, false },
    { "backing", KT_STR, NULL, true, false },
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

/* The table's entry for generic or format key `k`, or NULL. */
static const struct key *find_key(const char *k)
{
    for (size_t i = 0; i < FQ_ARRAY_SIZE(keys); i++)
        if (!strcmp(keys[i].name, k))
            return &keys[i];
    if (!strncmp(k, "overlap-check.", 14) && one_of(overlap_kinds, k + 14))
        return &overlap_switch;
    return NULL;
}

/* The protocol driver of `o` (its own, or the file driver's keys when it
 * names none). */
static const struct fq_driver *proto_driver(const struct fq_blockopts *o)
{
    return fq_driver_find(o->protocol ? o->protocol : "file");
}

/* The protocol's option `rel` (a key relative to its prefix), or NULL. */
static const struct fq_optdesc *find_proto(const struct fq_blockopts *o, const char *rel)
{
    const struct fq_driver *d = proto_driver(o);

    for (const struct fq_optdesc *od = d ? d->opts : NULL; od && od->name; od++) {
        size_t l = strlen(od->name);
        if (!strcmp(od->name, rel) ||
            (od->type == FQ_OPT_TREE && !strncmp(rel, od->name, l) && rel[l] == '.'))
            return od;
    }
    return NULL;
}

/* The key `k` relative to the protocol's prefix, or NULL if it is not
 * under it ("file.driver", which chooses the protocol, is not). */
static const char *proto_rel(const struct fq_blockopts *o, const char *k)
{
    size_t pl = strlen(o->proto_prefix);

    if (strncmp(k, o->proto_prefix, pl) || (pl && !strcmp(k + pl, "driver")))
        return NULL;
    return k + pl;
}

/* A protocol key's value ("filename", "aio"), or NULL. */
static const char *proto_get(const struct fq_blockopts *o, const char *rel)
{
    char k[128];

    snprintf(k, sizeof(k), "%s%s", o->proto_prefix, rel);
    return fq_blockopts_get(o, k);
}

bool fq_blockopts_reopenable(const char *key, const char *format)
{
    const struct key *k = find_key(key);

    if (!strcmp(key, "file.driver"))
        return true;
    return k && k->reopen && (!k->qcow2 || !strcmp(format, "qcow2"));
}

const char *fq_blockopts_get(const struct fq_blockopts *o, const char *key)
{
    const char *v = NULL;

    for (int i = 0; i < o->n; i++)   /* the last one given wins */
        if (!strcmp(o->key[i], key))
            v = o->val[i];
    return v;
}

void fq_blockopts_init(struct fq_blockopts *o)
{
    memset(o, 0, sizeof(*o));
    o->readonly = o->direct = o->no_flush = o->force_share = o->discard_unmap = -1;
    o->detect_zeroes = o->engine = -1;
    o->proto_prefix = "file.";
    fq_open_opts_init(&o->caches);
}

void fq_blockopts_free(struct fq_blockopts *o)
{
    free(o->buf);
    free(o->name);
    fq_blockopts_init(o);
}

enum fq_cache_mode fq_blockopts_cache(const struct fq_blockopts *o, enum fq_cache_mode base)
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

void fq_blockopts_set_caches(const struct fq_blockopts *o, struct fq_open_opts *oo)
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
    if (c->key_secret) {       /* the secret encrypt.key-secret named */
        oo->key_secret = c->key_secret;
        oo->key_secret_len = c->key_secret_len;
    }
    /* the external data file: a file name (qemu's data-file.filename) */
    if (fq_blockopts_get(o, "data-file.filename"))
        oo->data_file = fq_blockopts_get(o, "data-file.filename");
    else if (fq_blockopts_get(o, "data-file"))
        oo->data_file = fq_blockopts_get(o, "data-file");
}

int fq_bool_parse(const char *v)
{
    if (one_of("on yes true y", v))
        return 1;
    return one_of("off no false n", v) ? 0 : -1;
}

/* qemu's identifiers (node-name): a letter, then letters, digits, "-._". */
static bool is_ident(const char *s)
{
    if (!isalpha((unsigned char)*s))
        return false;
    for (s++; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("-._", *s))
            return false;
    return true;
}

/* Is `v` the name of a driver a list may choose (a format, or a protocol
 * if `proto_only`)? */
static bool driver_known(const char *v, bool proto_only)
{
    const struct fq_driver *d = fq_driver_find(v);

    return d && ((d->open && !proto_only) || d->open_file || d->open_opts);
}

/* Check the value `v` of generic or format key `name` (entry k). Returns
 * 0 or -EINVAL with err. */
static int check_value(const struct key *k, const char *name, const char *v, char *err)
{
    struct fq_open_opts scratch;

    switch (k->type) {
    case KT_BOOL:
        if (fq_bool_parse(v) < 0) {
            fq_seterr(err, "Parameter '%s' expects 'on' or 'off'", name);
            return -EINVAL;
        }
        return 0;
    case KT_DRIVER:
        if (driver_known(v, !strcmp(name, "file.driver")))
            return 0;
        fq_seterr(err, "Unknown driver '%s'", v);
        return -EINVAL;
    case KT_ENUM:
        if (one_of(k->values, v))
            return 0;
        if (!strcmp(k->name, "discard"))
            fq_seterr(err, "Invalid discard option");
        else if (!strncmp(k->name, "overlap-check", 13))
            fq_seterr(err, "Unsupported value '%s' for qcow2 option 'overlap-check'. "
                      "Allowed are any of the following: none, constant, cached, all", v);
        else
            fq_seterr(err, "invalid parameter value: %s", v);
        return -EINVAL;
    case KT_CACHE:
        fq_open_opts_init(&scratch);
        return fq_open_opts_set(&scratch, name, v, err) < 0 ? -EINVAL : 0;
    case KT_STR:
        if (!strcmp(k->name, "node-name") && !is_ident(v)) {
            fq_seterr(err, "Invalid node-name: '%s'", v);
            return -EINVAL;
        }
        if (!strncmp(k->name, "data-file", 9) && !*v) {
            fq_seterr(err, "The 'file' block driver requires a file name");
            return -EINVAL;
        }
        return 0;
    }
    return 0;
}

/* Check the value `v` of the protocol's option `od` (key `name`). */
static int check_proto_value(const struct fq_blockopts *o, const struct fq_optdesc *od,
                             const char *name, const char *v, char *err)
{
    uint64_t n;

    switch (od->type) {
    case FQ_OPT_BOOL:
        if (fq_bool_parse(v) < 0) {
            fq_seterr(err, "Parameter '%s' expects 'on' or 'off'", name);
            return -EINVAL;
        }
        return 0;
    case FQ_OPT_ENUM:
        if (one_of(od->values, v))
            return 0;
        fq_seterr(err, "invalid parameter value: %s", v);
        return -EINVAL;
    case FQ_OPT_SIZE:
        if (fq_qsize_parse(v, &n) == 0)
            return 0;
        fq_seterr(err, "Parameter '%s' expects a non-negative number below 2^64\n"
                  "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                  "and exabytes, respectively.", name);
        return -EINVAL;
    case FQ_OPT_NUM: {
        char *end;
        errno = 0;
        unsigned long long x = strtoull(v, &end, 0);
        (void)x;
        if (*v && !*end && !errno && *v != '-')
            return 0;
        fq_seterr(err, "Parameter '%s' expects a number", name);
        return -EINVAL;
    }
    case FQ_OPT_STR:
        if (!strcmp(od->name, "filename") && !*v &&
            (!o->protocol || !strcmp(o->protocol, "file"))) {
            fq_seterr(err, "The 'file' block driver requires a file name");
            return -EINVAL;
        }
        return 0;
    case FQ_OPT_TREE:
        return 0;
    }
    return 0;
}

/* Split a "k=v,..." list in place: ",," a comma inside a value; a bare
 * "key" is key=on, "nokey" key=off (marked in short_form). Returns 0 or
 * -EINVAL with err. */
static int split(struct fq_blockopts *o, char *err)
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
        if (o->n == FQ_BLOCKOPTS_MAX) {
            fq_seterr(err, "too many options");
            return -EINVAL;
        }
        if (!v) {
            bool no = !strncmp(k, "no", 2) && k[2];
            if (o->n < 64)
                o->short_form |= 1ull << o->n;
            v = no ? "off" : "on";
            if (no)
                k += 2;
        }
        o->key[o->n] = k;
        o->val[o->n++] = v;
    }
    return 0;
}

bool fq_blockopts_is_name(const char *name)
{
    return !strncmp(name, "json:", 5) || !strncmp(name, "blkdebug:", 9);
}

/* "blkdebug:CONFIG:IMAGE": the file layer is blkdebug with that config
 * file (none if empty) over IMAGE; the format is probed. */
static int blkdebug_name(const char *name, struct fq_blockopts *o, char *err)
{
    const char *cfg = strchr(name, ':') + 1;   /* past "blkdebug:" */
    const char *colon = strchr(cfg, ':');
    size_t cl;

    if (!colon) {
        fq_seterr(err, "Invalid filename format");
        return -EINVAL;
    }
    cl = (size_t)(colon - cfg);
    if (!(o->buf = malloc(strlen(name) + 64)))
        return -ENOMEM;
    char *w = o->buf;
    o->key[o->n] = "file.driver";
    o->val[o->n++] = "blkdebug";
    if (cl) {
        o->key[o->n] = "file.config";
        o->val[o->n++] = w;
        memcpy(w, cfg, cl);
        w += cl;
        *w++ = '\0';
    }
    o->key[o->n] = "file.image.filename";
    o->val[o->n++] = w;
    strcpy(w, colon + 1);
    return 0;
}

/* Take `text` apart into o's keys and values. */
static int take_apart(const char *text, struct fq_blockopts *o, char *err)
{
    if (!strncmp(text, "json:", 5)) {
        o->json = true;
        return fq_json_flatten(text + 5, &o->buf, o->key, o->val, o->bare, FQ_BLOCKOPTS_MAX, &o->n,
                               err);
    }
    if (!strncmp(text, "blkdebug:", 9))
        return blkdebug_name(text, o, err);
    if (!(o->buf = strdup(text))) {
        fq_seterr(err, "%s", strerror(ENOMEM));
        return -ENOMEM;
    }
    return split(o, err);
}

/* Which protocol the options choose, where its keys are, and its file. */
static int find_protocol(struct fq_blockopts *o, char *err)
{
    const struct fq_driver *d;
    const char *v;

    if (o->driver && (d = fq_driver_find(o->driver)) && !d->open && (d->open_file || d->open_opts)) {
        /* driver=PROTOCOL: its keys at the top, the image reads as raw */
        o->protocol = d->name;
        o->proto_prefix = "";
        o->top_protocol = true;
        o->driver = "raw";
    } else {
        o->protocol = fq_blockopts_get(o, "file.driver");
    }
    d = proto_driver(o);
    if (d && d->filter) {
        o->filename = proto_get(o, "image.filename");
        if (!o->filename && (v = proto_get(o, "image")) && *v)
            o->filename = v;
        if (!o->filename) {
            fq_seterr(err, "Could not open blkdebug image: no image given");
            return -EINVAL;
        }
    } else {
        o->filename = proto_get(o, "filename");
        if (!o->filename && d && d->default_name && o->protocol)
            o->filename = d->default_name;
    }
    return 0;
}

/* Does key i only say how to open the file (the protocol file and its
 * filename, the format, runtime options), not what the image is? */
static bool opens_only(const struct fq_blockopts *o, int i)
{
    const char *k = o->key[i], *rel = proto_rel(o, k);
    const struct key *kd = find_key(k);

    if (!strcmp(k, "file.driver"))
        return !strcmp(o->val[i], "file");
    if (kd)
        return strcmp(k, "backing") != 0 || !*o->val[i];
    return rel && (!strcmp(rel, "filename") || !strcmp(rel, "aio") || !strcmp(rel, "locking"));
}

/* o->name: the name qemu shows for the image: its file, the protocol's
 * own name when it is given no options, else the options as a json:
 * name. */
static int make_name(struct fq_blockopts *o)
{
    const struct fq_driver *d = proto_driver(o);
    bool plain = !o->protocol || !strcmp(o->protocol, "file"), bare = d && d->default_name;
    char buf[8192];

    for (int i = 0; i < o->n; i++) {
        const char *rel = proto_rel(o, o->key[i]);
        plain = plain && opens_only(o, i);
        bare = bare && (!rel || !strcmp(o->key[i], "driver"));
    }
    if (plain && o->filename) {
        o->name = strdup(o->filename);
    } else if (bare) {
        o->name = strdup(d->default_name);
    } else {
        if (fq_json_write(o, buf, sizeof(buf)) < 0)
            snprintf(buf, sizeof(buf), "%s", o->filename ? o->filename : "");
        o->name = strdup(buf);
    }
    return o->name ? 0 : -ENOMEM;
}

int fq_blockopts_parse(const char *text, struct fq_blockopts *o, char *err)
{
    const char *v;
    int r;

    fq_blockopts_init(o);
    if ((r = take_apart(text, o, err)) < 0)
        return r;
    o->driver = fq_blockopts_get(o, "driver");
    /* the drivers first: they say where the other keys belong */
    for (int i = 0; i < o->n; i++)
        if (!strcmp(o->key[i], "driver") || !strcmp(o->key[i], "file.driver"))
            if ((r = check_value(find_key(o->key[i]), o->key[i], o->val[i], err)) < 0)
                return r;
    if ((r = find_protocol(o, err)) < 0)
        return r;
    for (int i = 0; i < o->n; i++) {
        const char *rel = proto_rel(o, o->key[i]);
        const struct fq_optdesc *od = rel ? find_proto(o, rel) : NULL;
        const struct key *kd = find_key(o->key[i]);
        if (od) {
            if ((r = check_proto_value(o, od, o->key[i], o->val[i], err)) < 0)
                return r;
            continue;
        }
        if (kd && !kd->qcow2 && (r = check_value(kd, o->key[i], o->val[i], err)) < 0)
            return r;
        /* refused values are said once the format is known */
        if (kd && kd->type == KT_CACHE)
            fq_open_opts_set(&o->caches, o->key[i], o->val[i], NULL);
    }
    if ((v = fq_blockopts_get(o, "read-only")))
        o->readonly = fq_bool_parse(v);
    if ((v = fq_blockopts_get(o, "force-share")))
        o->force_share = fq_bool_parse(v);
    if ((v = fq_blockopts_get(o, "cache.direct")))
        o->direct = fq_bool_parse(v);
    if ((v = fq_blockopts_get(o, "cache.no-flush")))
        o->no_flush = fq_bool_parse(v);
    if ((v = fq_blockopts_get(o, "discard")))
        o->discard_unmap = !strcmp(v, "unmap") || !strcmp(v, "on");
    if ((v = fq_blockopts_get(o, "detect-zeroes")))
        o->detect_zeroes = !strcmp(v, "off") ? 0 : !strcmp(v, "on") ? 1 : 2;
    if ((v = fq_blockopts_get(o, "backing")) && !*v)
        o->no_backing = 1;
    if ((v = proto_get(o, "aio"))) {
        enum fq_engine_kind e;
        if (fq_engine_parse(v, &e) == 0)
            o->engine = (int)e;
        o->aio_native = !strcmp(v, "native");
    }
    if (make_name(o) < 0) {
        fq_seterr(err, "%s", strerror(ENOMEM));
        return -ENOMEM;
    }
    return 0;
}

int fq_blockopts_check_format(const struct fq_blockopts *o, const char *format, char *err)
{
    bool qcow2 = !strcmp(format, "qcow2");
    const char *pname = o->protocol ? o->protocol : "file";
    const char *unknown = NULL;

    /* the protocol's options first: it is opened before the format */
    for (int i = 0; i < o->n; i++) {
        const char *rel = proto_rel(o, o->key[i]);
        const struct key *kd = find_key(o->key[i]);
        if (!rel || find_proto(o, rel))
            continue;
        if (o->top_protocol ? !kd || kd->qcow2 : true) {
            fq_seterr(err, "Block protocol '%s' doesn't support the option '%s'", pname, rel);
            return -EINVAL;
        }
    }
    for (int i = 0; i < o->n; i++) {
        const char *rel = proto_rel(o, o->key[i]);
        const struct key *kd = find_key(o->key[i]);
        if (rel && (o->top_protocol ? !kd : true))
            continue;   /* the protocol's */
        if (!kd || (kd->qcow2 && !qcow2)) {
            if (!unknown)
                unknown = o->key[i];
            continue;
        }
        if (kd->qcow2 && check_value(kd, o->key[i], o->val[i], err) < 0)
            return -EINVAL;
    }
    if (unknown) {
        fq_seterr(err, "Block format '%s' does not support the option '%s'", format, unknown);
        return -EINVAL;
    }
    return 0;
}

int fq_blockopts_no_file(const struct fq_blockopts *o, char *err)
{
    fq_seterr(err, "%s", o->top_protocol ? "The 'file' block driver requires a file name"
                         : o->driver ? "A block device must be specified for \"file\""
                                     : "Must specify either driver or file");
    return -EINVAL;
}

int fq_blockopts_apply(const struct fq_blockopts *o, struct fq_open_opts *oo, char *err)
{
    if (!o->filename)
        return fq_blockopts_no_file(o, err);
    if (o->driver)
        oo->format = o->driver;
    if (o->readonly == 1)
        oo->readonly = 1;
    if (o->force_share == 1)
        oo->force_share = 1;
    if (o->no_backing)
        oo->no_backing = 1;
    oo->cache = fq_blockopts_cache(o, oo->cache);
    if (o->engine >= 0)
        oo->engine = (enum fq_engine_kind)o->engine;
    if (o->aio_native && oo->cache != FQ_CACHE_NONE && oo->cache != FQ_CACHE_DIRECTSYNC) {
        fq_seterr(err, "aio=native was specified, but it requires cache.direct=on, "
                  "which was not specified.");
        return -EINVAL;
    }
    fq_blockopts_set_caches(o, oo);
    return 0;
}
