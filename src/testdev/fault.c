/* fault.c: a fault-injecting pass-through device (see bdev_test.h).
 *
 * Every request is counted at submission, by kind and (for writes) by tag.
 * When the armed fault matches, the request is failed with the chosen errno
 * and does not reach the child (a failed write leaves the storage as it
 * was); otherwise it is forwarded unchanged. Failures complete from the
 * loop like any other completion, never inside submit().
 * Debugging: FQ_FAULT_TRACE=1 prints each injected failure,
 * FQ_FAULT_TRACE_ALL=1 every request, FQ_FAULT_ABORT=1 aborts at the
 * injection (run under gdb for the stack that issued the request).
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>

#include "testdev.h"
#include "util.h"

struct fault_priv {
    struct fq_bdev *child;
    bool borrow;
    struct fq_fault_spec spec;
    struct fq_fault_counts n;
    struct fq_fault_counts *mirror;
};

uint64_t fq_fault_count(const struct fq_fault_counts *c, enum fq_fault_kind kind, unsigned tag)
{
    switch (kind) {
    case FQ_FAULT_NONE: return 0;
    case FQ_FAULT_READ: return c->reads;
    case FQ_FAULT_WRITE: return c->writes;
    case FQ_FAULT_FLUSH: return c->flushes;
    case FQ_FAULT_DISCARD: return c->discards;
    case FQ_FAULT_TAG: return tag < FQ_ARRAY_SIZE(c->tags) ? c->tags[tag] : 0;
    case FQ_FAULT_ANY: return c->any;
    }
    return 0;
}

/* The debugging switches of the header comment, read once each. */
static int trace_all = -1, abort_at = -1, trace = -1;

static bool trace_on(const char *name, int *cached)
{
    if (*cached < 0)
        *cached = getenv(name) != NULL;
    return *cached > 0;
}

/* Count `req` and decide its fate: 0 to forward it, or the injected error. */
static int account(struct fq_bdev *bs, const struct fq_req *req)
{
    struct fault_priv *p = bs->priv;
    struct fq_fault_counts *n = &p->n;
    bool is_write = req->op == FQ_OP_WRITE || req->op == FQ_OP_WRITE_ZEROES;

    n->any++;
    switch (req->op) {
    case FQ_OP_READ: n->reads++; break;
    case FQ_OP_WRITE:
    case FQ_OP_WRITE_ZEROES: n->writes++; break;
    case FQ_OP_FLUSH: n->flushes++; break;
    case FQ_OP_DISCARD: n->discards++; break;
    }
    if (is_write && req->tag < FQ_ARRAY_SIZE(n->tags))
        n->tags[req->tag]++;

    const struct fq_fault_spec *f = &p->spec;
    bool match;
    if (trace_on("FQ_FAULT_TRACE_ALL", &trace_all))
        fprintf(stderr, "  io #%llu: op %d tag %u 0x%llx+0x%llx\n", (unsigned long long)n->any,
                req->op, req->tag, (unsigned long long)req->off, (unsigned long long)req->len);
    switch (f->kind) {
    case FQ_FAULT_READ: match = req->op == FQ_OP_READ; break;
    case FQ_FAULT_WRITE: match = is_write; break;
    case FQ_FAULT_FLUSH: match = req->op == FQ_OP_FLUSH; break;
    case FQ_FAULT_DISCARD: match = req->op == FQ_OP_DISCARD; break;
    case FQ_FAULT_TAG: match = is_write && req->tag == f->tag; break;
    case FQ_FAULT_ANY: match = true; break;
    default: match = false; break;
    }
    if (!match || f->nth == 0) {
        if (p->mirror)
            *p->mirror = *n;
        return 0;
    }
    uint64_t k = fq_fault_count(n, f->kind, f->tag);
    int r = 0;
    if (k == f->nth || (f->sticky && k > f->nth)) {
        n->injected++;
        r = f->err ? f->err : -EIO;
        if (trace_on("FQ_FAULT_ABORT", &abort_at))
            abort();
        if (trace_on("FQ_FAULT_TRACE", &trace))
            fprintf(stderr, "  fault: op %d tag %u 0x%llx+0x%llx fails with %d\n", req->op, req->tag,
                    (unsigned long long)req->off, (unsigned long long)req->len, r);
    }
    if (p->mirror)
        *p->mirror = *n;
    return r;
}

static void fault_submit(struct fq_bdev *bs, struct fq_req *req)
{
    struct fault_priv *p = bs->priv;
    int r = account(bs, req);

    if (r < 0)
        fq_req_complete_later(bs, req, r);
    else
        fq_req_forward(bs, p->child, req);
}

static int fault_io_sync(struct fq_bdev *bs, struct fq_req *req)
{
    struct fault_priv *p = bs->priv;
    int r = account(bs, req);

    if (r < 0)
        return r;
    r = p->child->ops->io_sync(p->child, req);
    bs->size = p->child->size;
    return r;
}

static void fault_close(struct fq_bdev *bs)
{
    struct fault_priv *p = bs->priv;

    /* fq_bdev_close closes bs->child after us unless we borrowed it */
    free(p);
}

static int fault_get_info(struct fq_bdev *bs, struct fq_info *out)
{
    struct fault_priv *p = bs->priv;

    return p->child->ops->get_info ? p->child->ops->get_info(p->child, out) : 0;
}

static int fault_truncate(struct fq_bdev *bs, uint64_t size)
{
    struct fault_priv *p = bs->priv;
    int r = p->child->ops->truncate ? p->child->ops->truncate(p->child, size) : -ENOTSUP;

    bs->size = p->child->size;
    return r;
}

static int64_t fault_file_length(struct fq_bdev *bs)
{
    struct fault_priv *p = bs->priv;

    return p->child->ops->file_length ? p->child->ops->file_length(p->child)
                                      : (int64_t)p->child->size;
}

static const struct fq_bdev_ops fault_ops = {
    .name = "fault",
    .submit = fault_submit,
    .io_sync = fault_io_sync,
    .close = fault_close,
    .get_info = fault_get_info,
    .truncate = fault_truncate,
    .file_length = fault_file_length,
};

int fq_fault_open(struct fq_bdev *child, unsigned flags, struct fq_bdev **out)
{
    struct fq_bdev *bs = calloc(1, sizeof(*bs));
    struct fault_priv *p = calloc(1, sizeof(*p));

    if (!bs || !p) {
        free(bs);
        free(p);
        return -ENOMEM;
    }
    p->child = child;
    p->borrow = flags & FQ_TESTDEV_BORROW;
    bs->ops = &fault_ops;
    bs->ctx = child->ctx;
    bs->size = child->size;
    bs->readonly = child->readonly;
    bs->align = child->align;
    bs->child = p->borrow ? NULL : child;
    bs->filename = child->filename ? strdup(child->filename) : NULL;
    bs->priv = p;
    *out = bs;
    return 0;
}

void fq_fault_arm(struct fq_bdev *bs, const struct fq_fault_spec *spec)
{
    struct fault_priv *p = bs->priv;

    memset(&p->spec, 0, sizeof(p->spec));
    if (spec)
        p->spec = *spec;
    memset(&p->n, 0, sizeof(p->n));
    if (p->mirror)
        *p->mirror = p->n;
}

void fq_fault_mirror(struct fq_bdev *bs, struct fq_fault_counts *out)
{
    struct fault_priv *p = bs->priv;

    p->mirror = out;
    if (out)
        *out = p->n;
}

void fq_fault_counts(struct fq_bdev *bs, struct fq_fault_counts *out)
{
    *out = ((struct fault_priv *)bs->priv)->n;
}
