/* blkdebug.c: fault injection in qemu's syntax: a filter between a format
 * and its file (blkdebug:CONFIG:IMAGE, or file.driver=blkdebug with
 * image, config, inject-error, set-state) that fails requests when rules
 * say so, and holds requests at break points (qemu-io's break, resume,
 * wait_break, remove_break through the ops' `debug`).
 *
 * Events are named as qemu names the points of its qcow2 code, and are
 * recognized by what a request to the file carries (enum fq_tag, set by
 * the format driver on every write): l1_update is a write of the L1
 * table, l2_update and l2_alloc.write of an L2 table, refblock_* of a
 * refcount block, refblock_alloc.write_table and reftable_* of the
 * refcount table, write_aio / cow_write / cluster_alloc of guest data,
 * read_aio / cow_read any read, flush_to_os a flush (flush_to_disk is
 * fired on the file below the filter: never here), pwritev / preadv /
 * pwritev_zero / pdiscard their operations (write-zeroes, which extend
 * the file ahead, meet only pwritev_zero).
 *
 * When a request meets an event, that event's rules run in order, if the
 * state they name (0: any) is the current one (1 at open): inject-error
 * activates the rule, set-state moves to its new_state (after all of the
 * event's rules), a break point holds the request (once). Then every
 * active injection whose sector (512-byte units; -1: any) the request
 * touches fails it with its errno (default EIO); a `once` rule is then
 * removed. A failed request never reaches the file. Write-zeroes past
 * the end of the file (the format extending it ahead of its writes) are
 * never failed.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "driver.h"
#include "util.h"

#define MAX_RULES 64
#define MAX_CONFIG (1u << 20)

enum rule_kind { RULE_INJECT, RULE_STATE, RULE_BREAK };

struct rule {
    enum rule_kind kind;
    int event;
    int state, new_state;    /* 0 state: any */
    int err;                 /* positive errno */
    bool once, active;
    int64_t sector;          /* -1: any */
    char tag[32];            /* break points */
};

/* A request held at a break point. */
struct held {
    struct fq_req *req;
    char tag[32];
    struct held *next;
};

struct dbg_priv {
    struct fq_bdev *child;
    struct rule rules[MAX_RULES];
    int nrules, state;
    struct held *held;
};

enum { W = 1, R = 2, Z = 4, D = 8, FL = 16 };   /* operations */
#define T(t) (1u << (t))

static const struct event {
    const char *name;
    unsigned ops, tags;      /* tags: of writes (0: any) */
} events[] = {
    { "l1_update", W, T(FQ_TAG_L1) },
    { "l1_grow.write_table", W, T(FQ_TAG_L1) },
    { "l1_shrink.write_table", W, T(FQ_TAG_L1) },
    { "l2_update", W, T(FQ_TAG_L2) },
    { "l2_update_compressed", W, T(FQ_TAG_L2) },
    { "l2_alloc.write", W, T(FQ_TAG_L2) },
    { "refblock_update", W, T(FQ_TAG_REFBLOCK) },
    { "refblock_update_part", W, T(FQ_TAG_REFBLOCK) },
    { "refblock_alloc", W, T(FQ_TAG_REFBLOCK) },
    { "refblock_alloc.write", W, T(FQ_TAG_REFBLOCK) },
    { "refblock_alloc.write_blocks", W, T(FQ_TAG_REFBLOCK) },
    { "refblock_alloc.write_table", W, T(FQ_TAG_REFTABLE) },
    { "refblock_alloc.switch_table", W, T(FQ_TAG_HEADER) },
    { "reftable_grow", W, T(FQ_TAG_REFTABLE) },
    { "reftable_update", W, T(FQ_TAG_REFTABLE) },
    { "cluster_alloc", W, T(FQ_TAG_DATA) },
    { "write_aio", W, T(FQ_TAG_DATA) },
    { "cow_write", W, T(FQ_TAG_DATA) },
    { "read_aio", R, 0 },
    { "cow_read", R, 0 },
    { "flush_to_os", FL, 0 },
    { "flush_to_disk", 0, 0 },   /* fired on the file below the filter */
    { "pwritev", W, 0 },
    { "preadv", R, 0 },
    { "pwritev_zero", Z, 0 },
    { "pdiscard", D, 0 },
};

/* The event named `name`, or -1. */
static int event_find(const char *name)
{
    for (size_t i = 0; i < FQ_ARRAY_SIZE(events); i++)
        if (!strcmp(events[i].name, name))
            return (int)i;
    return -1;
}

/* Does `req` meet event e? */
static bool event_meets(int e, const struct fq_req *req)
{
    unsigned op = req->op == FQ_OP_READ ? R : req->op == FQ_OP_WRITE ? W
                : req->op == FQ_OP_WRITE_ZEROES ? Z : req->op == FQ_OP_DISCARD ? D : FL;

    if (!(events[e].ops & op))
        return false;
    return !(op & W) || !events[e].tags || (events[e].tags & T(req->tag));
}

/* Run the rules of the events `req` meets. Returns the break point's rule
 * index that holds it, or -1. */
static int run_events(struct dbg_priv *p, const struct fq_req *req, char *tag)
{
    int hold = -1;

    for (size_t e = 0; e < FQ_ARRAY_SIZE(events); e++) {
        if (!event_meets((int)e, req))
            continue;
        int new_state = p->state;
        for (int i = 0; i < p->nrules; i++) {
            struct rule *r = &p->rules[i];
            if (r->event != (int)e || (r->state && r->state != p->state))
                continue;
            if (r->kind == RULE_INJECT)
                r->active = true;
            else if (r->kind == RULE_STATE)
                new_state = r->new_state;
            else if (hold < 0 && tag) {
                hold = i;
                snprintf(tag, 32, "%s", r->tag);
            }
        }
        p->state = new_state;
    }
    if (hold >= 0) {   /* a break point holds once */
        memmove(&p->rules[hold], &p->rules[hold + 1],
                (size_t)(p->nrules - hold - 1) * sizeof(p->rules[0]));
        p->nrules--;
    }
    return hold;
}

/* The error an active injection gives `req`, or 0. */
static int injected(struct dbg_priv *p, const struct fq_req *req)
{
    /* zeroed blocks past the end of the file are the format's extension
     * ahead of its writes (a preallocation), not a write of its data */
    if (req->op == FQ_OP_WRITE_ZEROES && p->child->ops->file_length &&
        (int64_t)req->off >= p->child->ops->file_length(p->child))
        return 0;
    for (int i = 0; i < p->nrules; i++) {
        struct rule *r = &p->rules[i];
        if (r->kind != RULE_INJECT || !r->active)
            continue;
        if (r->sector >= 0) {   /* a flush touches no sector */
            uint64_t s = (uint64_t)r->sector * 512;
            if (req->op == FQ_OP_FLUSH || s + 512 <= req->off || s >= req->off + req->len)
                continue;
        }
        int err = r->err;
        if (r->once) {
            memmove(&p->rules[i], &p->rules[i + 1], (size_t)(p->nrules - i - 1) * sizeof(*r));
            p->nrules--;
        }
        return -err;
    }
    return 0;
}

/* Fail `req` as the injections say, or send it to the file. */
static void go_on(struct fq_bdev *bs, struct fq_req *req)
{
    struct dbg_priv *p = bs->priv;
    int r = injected(p, req);

    if (r < 0)
        fq_req_complete_later(bs, req, r);
    else
        fq_req_forward(bs, p->child, req);
}

static void dbg_submit(struct fq_bdev *bs, struct fq_req *req)
{
    struct dbg_priv *p = bs->priv;
    char tag[32];

    if (run_events(p, req, tag) >= 0) {
        struct held *h = malloc(sizeof(*h));
        if (h) {
            h->req = req;
            snprintf(h->tag, sizeof(h->tag), "%s", tag);
            h->next = p->held;
            p->held = h;
            return;
        }
    }
    go_on(bs, req);
}

static int dbg_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    struct dbg_priv *p = bs->priv;
    int r;

    run_events(p, req, NULL);   /* a blocking request cannot be held */
    if ((r = injected(p, req)) < 0)
        return r;
    r = p->child->ops->io_sync(p->child, req);
    bs->size = p->child->size;
    return r;
}

/* Let the requests held at `tag` go on (all of them if `all`, else the
 * first). Returns how many. */
static int release(struct fq_bdev *bs, const char *tag, bool all)
{
    struct dbg_priv *p = bs->priv;
    int n = 0;

    for (struct held **hp = &p->held; *hp;) {
        struct held *h = *hp;
        if (strcmp(h->tag, tag) || (n && !all)) {
            hp = &h->next;
            continue;
        }
        *hp = h->next;
        go_on(bs, h->req);
        free(h);
        n++;
    }
    return n;
}

static int dbg_debug(struct fq_bdev *bs, enum fq_debug_op op, const char *event, const char *tag)
{
    struct dbg_priv *p = bs->priv;
    int e, n = 0;

    switch (op) {
    case FQ_DEBUG_BREAK:
        if ((e = event_find(event)) < 0)
            return -ENOENT;
        if (p->nrules == MAX_RULES)
            return -ENOSPC;
        p->rules[p->nrules++] = (struct rule){ .kind = RULE_BREAK, .event = e, .sector = -1 };
        snprintf(p->rules[p->nrules - 1].tag, sizeof(p->rules[0].tag), "%s", tag);
        return 0;
    case FQ_DEBUG_REMOVE_BREAK:
        for (int i = 0; i < p->nrules;) {
            if (p->rules[i].kind == RULE_BREAK && !strcmp(p->rules[i].tag, tag)) {
                memmove(&p->rules[i], &p->rules[i + 1],
                        (size_t)(p->nrules - i - 1) * sizeof(p->rules[0]));
                p->nrules--;
                n++;
            } else {
                i++;
            }
        }
        n += release(bs, tag, true);
        return n ? 0 : -ENOENT;
    case FQ_DEBUG_RESUME:
        return release(bs, tag, false) ? 0 : -ENOENT;
    case FQ_DEBUG_SUSPENDED:
        for (struct held *h = p->held; h; h = h->next)
            if (!strcmp(h->tag, tag))
                return 1;
        return 0;
    }
    return -EINVAL;
}

static void dbg_close(struct fq_bdev *bs)
{
    struct dbg_priv *p = bs->priv;

    /* requests still held end (a closing image flushed what it could) */
    while (p->held) {
        struct held *h = p->held;
        p->held = h->next;
        h->req->cb(h->req, -ECANCELED);
        free(h);
    }
    free(p);
}

static int dbg_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    struct dbg_priv *p = bs->priv;

    return p->child->ops->get_info ? p->child->ops->get_info(p->child, out) : 0;
}

static int dbg_map(struct fq_bdev *bs, uint64_t off, uint64_t len, struct fq_map_entry *out)
{
    struct dbg_priv *p = bs->priv;

    return p->child->ops->map ? p->child->ops->map(p->child, off, len, out) : -ENOTSUP;
}

static int dbg_truncate(struct fq_bdev *bs, uint64_t size)
{
    struct dbg_priv *p = bs->priv;
    int r = p->child->ops->truncate ? p->child->ops->truncate(p->child, size) : -ENOTSUP;

    bs->size = p->child->size;
    return r;
}

static int64_t dbg_file_length(struct fq_bdev *bs)
{
    struct dbg_priv *p = bs->priv;

    return p->child->ops->file_length ? p->child->ops->file_length(p->child)
                                      : (int64_t)p->child->size;
}

static const struct fq_bdev_ops dbg_ops = {
    .name = "blkdebug",
    .identity_map = true,
    .submit = dbg_submit,
    .io_sync = dbg_io_sync,
    .close = dbg_close,
    .get_info = dbg_get_info,
    .map = dbg_map,
    .truncate = dbg_truncate,
    .file_length = dbg_file_length,
    .debug = dbg_debug,
};

/* ---- rules from options and from a config file ---- */

/* Set field `key` of rule r (kind known) from `v`. Returns 0 or -EINVAL. */
static int rule_set(struct rule *r, const char *key, const char *v, char *err)
{
    char *end;
    long long n;

    if (!strcmp(key, "event")) {
        if ((r->event = event_find(v)) < 0) {
            fq_seterr(err, "invalid parameter value: %s", v);
            return -EINVAL;
        }
        return 0;
    }
    if (!strcmp(key, "once") || !strcmp(key, "immediately")) {
        int b = fq_bool_parse(v);
        if (b < 0) {
            fq_seterr(err, "Parameter '%s' expects 'on' or 'off'", key);
            return -EINVAL;
        }
        if (key[0] == 'o')
            r->once = b;
        return 0;
    }
    if (strcmp(key, "errno") && strcmp(key, "sector") && strcmp(key, "state") &&
        strcmp(key, "new_state")) {
        if (!strcmp(key, "iotype"))
            return 0;   /* every kind of operation: the events say which */
        fq_seterr(err, "Invalid parameter '%s'", key);
        return -EINVAL;
    }
    errno = 0;
    n = strtoll(v, &end, 0);
    if (!*v || *end || errno || n < (key[0] == 's' && key[1] == 'e' ? -1 : 0) || n > INT32_MAX) {
        fq_seterr(err, "Parameter '%s' expects a number", key);
        return -EINVAL;
    }
    if (!strcmp(key, "errno"))
        r->err = (int)n;
    else if (!strcmp(key, "sector"))
        r->sector = n;
    else if (!strcmp(key, "state"))
        r->state = (int)n;
    else
        r->new_state = (int)n;
    return 0;
}

/* A new rule of `kind` (its defaults), or NULL with err. */
static struct rule *rule_new(struct dbg_priv *p, enum rule_kind kind, char *err)
{
    if (p->nrules == MAX_RULES) {
        fq_seterr(err, "too many blkdebug rules");
        return NULL;
    }
    struct rule *r = &p->rules[p->nrules++];
    *r = (struct rule){ .kind = kind, .event = -1, .err = EIO, .sector = -1 };
    return r;
}

/* A rule is complete: it names its event (and set-state its new state). */
static int rule_done(const struct rule *r, char *err)
{
    if (r->event < 0) {
        fq_seterr(err, "Parameter 'event' is missing");
        return -EINVAL;
    }
    if (r->kind == RULE_STATE && !r->new_state) {
        fq_seterr(err, "Parameter 'new_state' is missing");
        return -EINVAL;
    }
    return 0;
}

/* Strip blanks around s (in place) and one pair of double quotes. */
static char *trim(char *s)
{
    size_t l;

    while (*s == ' ' || *s == '\t')
        s++;
    l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\t' || s[l - 1] == '\r' || s[l - 1] == '\n'))
        s[--l] = '\0';
    if (l >= 2 && s[0] == '"' && s[l - 1] == '"') {
        s[l - 1] = '\0';
        s++;
    }
    return s;
}

/* The rules of config file `path` (qemu's format: [inject-error] and
 * [set-state] groups of `key = "value"` lines, '#' comments). */
static int read_config(struct dbg_priv *p, const char *path, char *err)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    struct rule *r = NULL;
    int lineno = 0, rc = 0;
    long total = 0;

    if (!f) {
        int e = errno;
        fq_seterr(err, "Could not read blkdebug config file: %s", strerror(e));
        return -e;
    }
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        char *s = trim(line), *eq;
        lineno++;
        total += (long)strlen(line);
        if (total > MAX_CONFIG) {
            fq_seterr(err, "Could not read blkdebug config file: too large");
            rc = -EFBIG;
        } else if (!*s || *s == '#') {
            continue;
        } else if (*s == '[') {
            if (r && (rc = rule_done(r, err)) < 0)
                break;
            if (!strcmp(s, "[inject-error]"))
                r = rule_new(p, RULE_INJECT, err);
            else if (!strcmp(s, "[set-state]"))
                r = rule_new(p, RULE_STATE, err);
            else {
                fq_seterr(err, "%s:%d: There is no option group '%.*s'", path, lineno,
                          (int)strcspn(s + 1, "]"), s + 1);
                rc = -EINVAL;
            }
            if (rc == 0 && !r)
                rc = -EINVAL;
        } else if (!r || !(eq = strchr(s, '='))) {
            fq_seterr(err, "%s:%d: Parse error", path, lineno);
            rc = -EINVAL;
        } else {
            *eq = '\0';
            rc = rule_set(r, trim(s), trim(eq + 1), err);
        }
    }
    fclose(f);
    if (rc == 0 && r)
        rc = rule_done(r, err);
    return rc;
}

/* The rules of the options: PREFIX inject-error.N.KEY, set-state.N.KEY. */
static int read_opts(struct dbg_priv *p, const struct fq_blockopts *o, const char *prefix,
                     char *err)
{
    static const struct { const char *group; enum rule_kind kind; } groups[] = {
        { "inject-error.", RULE_INJECT }, { "set-state.", RULE_STATE },
    };
    size_t pl = strlen(prefix);
    int r;

    for (size_t g = 0; g < FQ_ARRAY_SIZE(groups); g++) {
        for (long idx = 0;; idx++) {
            struct rule *rule = NULL;
            char head[64];
            int hl = snprintf(head, sizeof(head), "%s%ld.", groups[g].group, idx);
            for (int i = 0; i < o->n; i++) {
                const char *k = o->key[i];
                if (strncmp(k, prefix, pl) || strncmp(k + pl, head, (size_t)hl))
                    continue;
                if (!rule && !(rule = rule_new(p, groups[g].kind, err)))
                    return -EINVAL;
                if ((r = rule_set(rule, k + pl + hl, o->val[i], err)) < 0)
                    return r;
            }
            if (!rule)
                break;
            if ((r = rule_done(rule, err)) < 0)
                return r;
        }
    }
    return 0;
}

static int dbg_open_opts(struct fq_ctx *ctx, const char *filename, unsigned flags,
                         const struct fq_blockopts *o, const char *prefix, struct fq_bdev *child,
                         struct fq_bdev **out, char *err)
{
    struct fq_bdev *bs = calloc(1, sizeof(*bs));
    struct dbg_priv *p = calloc(1, sizeof(*p));
    char k[64];
    const char *cfg;
    int r = 0;

    (void)ctx;
    (void)filename;
    (void)flags;
    if (!bs || !p) {
        free(bs);
        free(p);
        return -ENOMEM;
    }
    p->child = child;
    p->state = 1;
    snprintf(k, sizeof(k), "%sconfig", prefix);
    if ((cfg = fq_blockopts_get(o, k)) && *cfg)
        r = read_config(p, cfg, err);
    if (r == 0)
        r = read_opts(p, o, prefix, err);
    if (r == 0 && !(bs->filename = child->filename ? strdup(child->filename) : strdup("")))
        r = -ENOMEM;
    if (r < 0) {
        free(bs);
        free(p);
        return r;
    }
    bs->ops = &dbg_ops;
    bs->ctx = child->ctx;
    bs->size = child->size;
    bs->readonly = child->readonly;
    bs->growable = child->growable;
    bs->align = child->align;
    bs->child = child;
    bs->priv = p;
    *out = bs;
    return 0;
}

static bool dbg_claims(const char *filename)
{
    return !strncmp(filename, "blkdebug:", 9);
}

/* A blkdebug: name reaching a protocol's open by itself (not as options:
 * the core turns those names into options first). */
static int dbg_open_file(struct fq_ctx *ctx, const char *filename, unsigned flags,
                         struct fq_bdev **out, char *err)
{
    (void)ctx;
    (void)filename;
    (void)flags;
    (void)out;
    fq_seterr(err, "blkdebug needs an image to open");
    return -EINVAL;
}

static const struct fq_optdesc dbg_opts[] = {
    { "config", FQ_OPT_STR, NULL },
    { "image", FQ_OPT_TREE, NULL },
    { "inject-error", FQ_OPT_TREE, NULL },
    { "set-state", FQ_OPT_TREE, NULL },
    { "align", FQ_OPT_NUM, NULL },
    { NULL, FQ_OPT_STR, NULL },
};

const struct fq_driver fq_driver_blkdebug = {
    .name = "blkdebug",
    .open_file = dbg_open_file,
    .claims = dbg_claims,
    .opts = dbg_opts,
    .filter = true,
    .open_opts = dbg_open_opts,
};
