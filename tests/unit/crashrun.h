/* crashrun.h: power-loss replay of one whole-image operation, judged
 * against the image before and after it (the harness of test-feat-crash;
 * any operation that writes metadata can use it: give it the image's
 * bytes, the operation and what it may change).
 *
 * cr_run():
 *  1. opens the image over mem -> record -> qcow2 with a small metadata
 *     cache (so that a large operation evicts tables and blocks), reads
 *     the view before (active content, size, header fields, snapshots with
 *     their contents), runs the operation, reads the view after;
 *  2. replays the log into crash states: every prefix as written and, per
 *     prefix, `variants` random subsets of the writes since its last flush,
 *     applied in a random order and torn at 512-byte sectors (sanitizer
 *     builds take about 25 prefixes of each log, a stride over them);
 *  3. judges each state:
 *     - it opens read-only and fq_check finds no corruption and no error
 *       (leaks are allowed: counted);
 *     - the active state reads as before or after (CR_SAME: as before; a
 *       case may give its own judge), each header field (size, version,
 *       refcount width, lazy refcounts, backing file) is the old or the new
 *       value, and the snapshots are the old set or the new one;
 *     - on `deep_states` states spread over the log, each snapshot present
 *       is applied on a copy and must read as it did before (a new one: as
 *       it did after);
 *     - it opens read-write, takes a write and a flush, and `check -r all`
 *       leaves it clean (every state, or `rw_states` spread over the log);
 *     - on `qemu_states` states spread over the log, `qemu-img check`
 *       exits 0 or 3 (no errors; leaks allowed).
 * An operation that may leave COPIED flag mismatches (copied_ok: check's
 * own repairs) is held to less: those are its only findings, and the
 * repair of each state (check -r all) leaves it clean and unchanged.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TEST_CRASHRUN_H
#define FQ_TEST_CRASHRUN_H

#include "wl.h"

#define CR_MAX_SNAPS 16

/* What an image looks like from outside. */
struct cr_view {
    uint64_t size;
    uint8_t *data;                       /* the active state */
    struct fq_info info;
    int nsnap;
    char *names[CR_MAX_SNAPS];
    uint8_t *snap[CR_MAX_SNAPS];         /* contents: deep reads only */
    uint64_t snap_size[CR_MAX_SNAPS];
};

enum cr_active {
    CR_SAME,        /* the active state may not change */
    CR_EITHER,      /* the old one or the new one, as a whole */
    CR_CUSTOM,      /* the case's judge decides */
};

struct cr_case {
    const char *name;
    /* the operation, on the image opened read-write */
    int (*op)(struct fq_image *img, const void *arg, char *err);
    const void *arg;
    enum cr_active active;
    /* CR_CUSTOM: NULL if `v`'s active state is allowed, else why not */
    const char *(*judge)(const struct cr_view *before, const struct cr_view *after,
                         const struct cr_view *v, const void *arg);
};

struct cr_opts {
    uint64_t cache_size;      /* metadata cache of the operation's image */
    int variants;             /* reorderings per prefix */
    int qemu_states;          /* states also checked by qemu-img (spread
                                 over the log; 0: none) */
    int deep_states;          /* states whose snapshots are read (spread) */
    int rw_states;            /* states written to and repaired (spread;
                                 0: every state) */
    bool copied_ok;           /* COPIED flag mismatches are allowed (and
                                 must be repaired by check -r all) */
    uint64_t seed;
    const char *tag;          /* names the run in messages */
};

struct cr_stats {
    uint64_t states, prefixes, reordered, qemu_checked, deep, leaky, copied, records, flushes;
    int failures;
};

#define CR_FAIL(st, ...)                                                       \
    do {                                                                       \
        fprintf(stderr, "%s: FAIL: ", tl_name);                                \
        fprintf(stderr, __VA_ARGS__);                                          \
        fputc('\n', stderr);                                                   \
        (st)->failures++;                                                      \
    } while (0)

/* Open a copy of `data` as a qcow2 image on a memory device. */
static inline int cr_open(struct fq_ctx *ctx, const uint8_t *data, size_t len, int ro,
                          uint64_t cache, struct fq_image **img, char *err)
{
    struct fq_open_opts o;
    struct fq_bdev *mem, *q;
    int r = fq_mem_open(ctx, data, len, len + (64u << 20), &mem);

    if (r < 0)
        return r;
    mem->readonly = ro;
    fq_open_opts_init(&o);
    o.readonly = ro;
    o.cache_size = cache;
    if ((r = fq_bdev_open_format(mem, "qcow2", &o, &q, err)) < 0) {
        fq_bdev_close(mem);
        return r;
    }
    if ((r = fq_image_from_bdev(ctx, q, FQ_CACHE_WRITEBACK, img)) < 0)
        fq_bdev_close(q);
    return r;
}

/* The bytes of a device. */
static inline int cr_bytes(struct fq_bdev *dev, uint8_t **data, size_t *len)
{
    *len = (size_t)dev->size;
    *data = malloc(*len ? *len : 1);
    return *data ? fq_bdev_pread_sync(dev, *data, *len, 0) : -ENOMEM;
}

static inline void cr_view_free(struct cr_view *v)
{
    free(v->data);
    for (int i = 0; i < v->nsnap; i++) {
        free(v->names[i]);
        free(v->snap[i]);
    }
    memset(v, 0, sizeof(*v));
}

/* Active state, header fields and snapshot names of an open image. */
static inline int cr_read_view(struct fq_image *img, struct cr_view *v)
{
    struct fq_snapshot *l = NULL;
    int n = 0, r;

    memset(v, 0, sizeof(*v));
    v->size = fq_size(img);
    if ((r = fq_get_info(img, &v->info)) < 0)
        return r;
    if (!(v->data = malloc(v->size ? v->size : 1)))
        return -ENOMEM;
    if ((r = fq_pread(img, v->data, (size_t)v->size, 0)) < 0)
        return r;
    if ((r = fq_snapshot_list(img, &l, &n)) < 0)
        return r;
    for (int i = 0; i < n && i < CR_MAX_SNAPS; i++)
        v->names[v->nsnap++] = strdup(l[i].name);
    fq_snapshot_list_free(l, n);
    return 0;
}

/* Contents of each snapshot of the image `data`: applied on a copy. */
static inline int cr_read_snaps(struct fq_ctx *ctx, const uint8_t *data, size_t len,
                                struct cr_view *v)
{
    for (int i = 0; i < v->nsnap; i++) {
        struct fq_image *img;
        char err[FQ_ERR_MAX] = "";
        int r = cr_open(ctx, data, len, 0, 0, &img, err);
        if (r < 0)
            return r;
        if ((r = fq_snapshot_apply(img, v->names[i], err)) == 0) {
            v->snap_size[i] = fq_size(img);
            v->snap[i] = malloc(v->snap_size[i] ? v->snap_size[i] : 1);
            r = v->snap[i] ? fq_pread(img, v->snap[i], (size_t)v->snap_size[i], 0) : -ENOMEM;
        }
        fq_close(img);
        if (r < 0)
            return r;
    }
    return 0;
}

static inline int cr_find(const struct cr_view *v, const char *name)
{
    for (int i = 0; i < v->nsnap; i++)
        if (!strcmp(v->names[i], name))
            return i;
    return -1;
}

static inline bool cr_same_set(const struct cr_view *a, const struct cr_view *b)
{
    if (a->nsnap != b->nsnap)
        return false;
    for (int i = 0; i < a->nsnap; i++)
        if (cr_find(b, a->names[i]) < 0)
            return false;
    return true;
}

/* Is the view of a crash state one the operation may leave? */
static inline const char *cr_allowed(const struct cr_case *c, const struct cr_view *a,
                                     const struct cr_view *b, const struct cr_view *v)
{
    const struct fq_info *x = &v->info, *p = &a->info, *q = &b->info;

#define CR_FIELD(f) (x->f == p->f || x->f == q->f)
    if (!CR_FIELD(version) || !CR_FIELD(refcount_bits) || !CR_FIELD(lazy_refcounts) ||
        !CR_FIELD(virtual_size))
        return "a header field is neither old nor new";
#undef CR_FIELD
    if (strcmp(x->backing_file, p->backing_file) && strcmp(x->backing_file, q->backing_file))
        return "a backing file name neither old nor new";
    if (!cr_same_set(v, a) && !cr_same_set(v, b))
        return "a set of snapshots neither old nor new";
    switch (c->active) {
    case CR_SAME:
        if (v->size != a->size || memcmp(v->data, a->data, (size_t)v->size))
            return "the active state changed";
        return NULL;
    case CR_EITHER:
        if ((v->size == a->size && !memcmp(v->data, a->data, (size_t)v->size)) ||
            (v->size == b->size && !memcmp(v->data, b->data, (size_t)v->size)))
            return NULL;
        return "the active state is neither old nor new";
    case CR_CUSTOM:
        return c->judge(a, b, v, c->arg);
    }
    return "?";
}

/* Each snapshot of `v` (contents read) reads as it did before, or, if
 * it is new, as it did after. */
static inline const char *cr_snaps_allowed(const struct cr_view *a, const struct cr_view *b,
                                           const struct cr_view *v)
{
    for (int i = 0; i < v->nsnap; i++) {
        const struct cr_view *ref = cr_find(a, v->names[i]) >= 0 ? a : b;
        int k = cr_find(ref, v->names[i]);
        if (k < 0 || !ref->snap[k])
            return "a snapshot that is in neither view";
        if (v->snap_size[i] != ref->snap_size[k] ||
            memcmp(v->snap[i], ref->snap[k], (size_t)v->snap_size[i]))
            return "a snapshot's content changed";
    }
    return NULL;
}

struct cr_findings {
    int leaks, copied, other;
};

static inline void cr_msg(void *opaque, const char *line)
{
    struct cr_findings *f = opaque;

    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "  check: %s\n", line);
    if (!strncmp(line, "Leaked", 6))
        f->leaks++;
    else if (strstr(line, "OFLAG_COPIED"))
        f->copied++;
    else
        f->other++;
}

/* Judge one crash state. */
static inline void cr_state(struct fq_ctx *ctx, const struct cr_case *c, const struct cr_opts *o,
                            const struct cr_view *a, const struct cr_view *b, const uint8_t *data,
                            size_t len, const char *kind, size_t p, bool qemu, bool deep,
                            bool rw, struct cr_stats *st)
{
    struct fq_image *img;
    struct fq_check_result res;
    struct cr_findings f = { 0, 0, 0 };
    struct cr_view v;
    char err[FQ_ERR_MAX] = "", where[160];
    const char *why;
    int r;

    st->states++;
    snprintf(where, sizeof(where), "%s%s%s: %s state after %zu records", c->name, o->tag ? "/" : "",
             o->tag ? o->tag : "", kind, p);
    if (qemu) {
        const char *path = tl_path("state.qcow2");
        if (wl_save(path, data, len) == 0) {
            st->qemu_checked++;
            int rc = tl_sh("qemu-img check -f qcow2 '%s' >/dev/null 2>&1", path);
            /* copied_ok: exit 2 only for COPIED flags */
            if (rc == 2 && o->copied_ok &&
                tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | grep -v OFLAG_COPIED | grep -q ERROR",
                      path) != 0)
                rc = 0;
            if (rc != 0 && rc != 3) {
                CR_FAIL(st, "%s: qemu-img check exit %d", where, rc);
                tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -5 >&2", path);
            }
        }
    }
    if ((r = cr_open(ctx, data, len, 1, 0, &img, err)) < 0) {
        CR_FAIL(st, "%s: open: %s", where, err);
        return;
    }
    r = fq_check(img, 0, &res, cr_msg, &f);
    if (r == 0 && o->copied_ok && res.corruptions && !f.other && !res.check_errors)
        st->copied++;
    else if (r < 0 || res.corruptions || res.check_errors) {
        CR_FAIL(st, "%s: check %d, %lld corruptions, %lld errors", where, r,
                (long long)res.corruptions, (long long)res.check_errors);
        if (getenv("TL_KEEP") && tl_dir[0]) {
            char name[96];
            snprintf(name, sizeof(name), "bad-%s-%zu.qcow2", c->name, p);
            wl_save(tl_path(name), data, len);
            fprintf(stderr, "  saved %s\n", tl_path(name));
        }
    }
    st->leaky += res.leaks > 0;
    if ((r = cr_read_view(img, &v)) < 0)
        CR_FAIL(st, "%s: read: %s", where, strerror(-r));
    else if ((why = cr_allowed(c, a, b, &v)))
        CR_FAIL(st, "%s: %s", where, why);
    fq_close(img);
    if (r == 0 && deep) {
        st->deep++;
        if ((r = cr_read_snaps(ctx, data, len, &v)) < 0)
            CR_FAIL(st, "%s: reading the snapshots: %s", where, strerror(-r));
        else if ((why = cr_snaps_allowed(a, b, &v)))
            CR_FAIL(st, "%s: %s", where, why);
    }
    cr_view_free(&v);
    if (!rw)
        return;
    /* usable: a write, a flush, repaired clean */
    if ((r = cr_open(ctx, data, len, 0, 0, &img, err)) < 0) {
        CR_FAIL(st, "%s: read-write open: %s", where, err);
        return;
    }
    uint8_t sec[512];
    memset(sec, 0x5a, sizeof(sec));
    r = fq_size(img) >= sizeof(sec) ? fq_pwrite(img, sec, sizeof(sec), 0) : 0;
    if (r == 0)
        r = fq_flush(img);
    if (r == 0)
        r = fq_check(img, FQ_CHECK_REPAIR_ALL, &res, NULL, NULL);
    if (r == 0)
        r = fq_check(img, 0, &res, NULL, NULL);
    if (r < 0 || res.corruptions || res.leaks || res.check_errors)
        CR_FAIL(st, "%s: after a write and a repair: %d, %lld corruptions, %lld leaks", where, r,
                (long long)res.corruptions, (long long)res.leaks);
    if (r == 0 && o->copied_ok) {
        /* the repair changed nothing a reader sees (but that sector) */
        struct cr_view w;
        if ((r = cr_read_view(img, &w)) < 0 || w.size != a->size ||
            memcmp(w.data + sizeof(sec), a->data + sizeof(sec), (size_t)w.size - sizeof(sec)))
            CR_FAIL(st, "%s: repaired, it reads differently", where);
        cr_view_free(&w);
    }
    fq_close(img);
}

/* Run the case on the image `base` and judge every crash state of it. */
static inline void cr_run(struct fq_ctx *ctx, const struct cr_case *c, const uint8_t *base,
                          size_t blen, const struct cr_opts *o, struct cr_stats *st)
{
    struct fq_reclog *log = fq_reclog_new(base, blen);
    struct fq_bdev *mem, *rec, *q;
    struct fq_image *img = NULL;
    struct fq_open_opts oo;
    struct cr_view a, b;
    char err[FQ_ERR_MAX] = "";
    uint8_t *data, *after = NULL;
    size_t len, alen = 0;
    int r;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    fq_open_opts_init(&oo);
    oo.cache_size = o->cache_size;
    if (!log || fq_mem_open(ctx, base, blen, 1u << 30, &mem) < 0 ||
        fq_record_open(mem, log, FQ_TESTDEV_BORROW, &rec) < 0 ||
        fq_bdev_open_format(rec, "qcow2", &oo, &q, err) < 0 ||
        fq_image_from_bdev(ctx, q, FQ_CACHE_WRITEBACK, &img) < 0) {
        CR_FAIL(st, "%s: open: %s", c->name, err);
        fq_reclog_free(log);
        return;
    }
    fq_reclog_enable(log, false);
    r = cr_read_view(img, &a);
    if (r == 0)
        r = cr_read_snaps(ctx, base, blen, &a);
    fq_reclog_enable(log, true);
    if (r == 0 && (r = c->op(img, c->arg, err)) < 0)
        CR_FAIL(st, "%s: the operation failed: %s %s", c->name, strerror(-r), err);
    fq_reclog_enable(log, false);
    int cr = fq_close(img);
    if (r == 0 && cr < 0)
        CR_FAIL(st, "%s: close: %s", c->name, strerror(-(r = cr)));
    if (r == 0 && (r = cr_bytes(mem, &after, &alen)) == 0 &&
        (r = cr_open(ctx, after, alen, 1, 0, &img, err)) == 0) {
        r = cr_read_view(img, &b);
        fq_close(img);
        if (r == 0)
            r = cr_read_snaps(ctx, after, alen, &b);
    }
    fq_bdev_close(mem);
    if (r < 0) {
        if (!st->failures)
            CR_FAIL(st, "%s: reading the views: %s %s", c->name, strerror(-r), err);
        goto out;
    }
    size_t n = fq_reclog_count(log);
    st->records += n;
    for (size_t i = 0; i < n; i++)
        st->flushes += fq_reclog_get(log, i)->kind == FQ_REC_FLUSH;
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "%s: %zu records\n", c->name, n);
    /* the samples: spread over the prefixes, and the last one */
    size_t qs = o->qemu_states ? FQ_MAX((n + 1) / (size_t)o->qemu_states, (size_t)1) : 0;
    size_t ds = o->deep_states ? FQ_MAX((n + 1) / (size_t)o->deep_states, (size_t)1) : 0;
    size_t ws = o->rw_states ? FQ_MAX((n + 1) / (size_t)o->rw_states, (size_t)1) : 1;
    /* sanitizer builds (short runs): about 25 prefixes per log, 8 of
     * them written to */
    bool sampled = WL_SANITIZED && o->variants <= 1;
    size_t stride = sampled ? FQ_MAX((n + 1) / 25, (size_t)1) : 1;
    if (sampled && (!o->rw_states || o->rw_states > 8))
        ws = FQ_MAX((n + 1) / 8, (size_t)1);
    for (size_t p = (size_t)(o->seed % stride); p <= n && st->failures < 20; p += stride) {
        bool qemu = qs && (p % qs == qs / 2 || p == n), deep = ds && (p % ds == 0 || p == n);
        bool rw = p % ws == ws / 3 || p == n;
        if (getenv("TL_VERBOSE") && p % 100 == 0)
            fprintf(stderr, "%s: prefix %zu of %zu, %llu states\n", c->name, p, n,
                    (unsigned long long)st->states);
        if (fq_reclog_replay(log, p, &data, &len) == 0) {
            st->prefixes++;
            cr_state(ctx, c, o, &a, &b, data, len, "in-order", p, qemu, deep, rw, st);
            free(data);
        }
        if (p == fq_reclog_epoch_start(log, p))
            continue;   /* nothing unflushed to reorder */
        for (int k = 0; k < o->variants; k++) {
            uint64_t vs = o->seed * 1000003u + p * 7 + (uint64_t)k;
            if (fq_reclog_replay_crash(log, p, vs, k % 2 ? 85 : 50, 30, &data, &len) == 0) {
                st->reordered++;
                cr_state(ctx, c, o, &a, &b, data, len, "reordered", p, qemu && k == 0, deep, rw, st);
                free(data);
            }
        }
    }
out:
    free(after);
    cr_view_free(&a);
    cr_view_free(&b);
    fq_reclog_free(log);
}

#endif
