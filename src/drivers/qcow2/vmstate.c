/* vmstate.c: the VM state area of a qcow2 image: the saved state of a
 * virtual machine that internal snapshots carry (their vm_state_size
 * bytes). As the format places it, it lives in guest clusters past the end
 * of the disk, starting at the first L1 entry the disk does not use, and
 * is mapped through the active L1 table like guest data: written clusters
 * are allocated, refcounted and copied on write as any other, so `check`
 * counts them and a snapshot taken afterwards shares them.
 *
 * Requests go through the planner (rw.c) with FQ_REQ_VMSTATE, which lets
 * them reach past the disk's end up to what the L1 table covers; a write
 * first grows the L1 table to cover its range. A read past what the L1
 * table covers reads as unallocated clusters do (backing file, zeros).
 * SPDX-License-Identifier: MIT
 */
#include "ops.h"

uint64_t qcow2_vmstate_offset(const struct qcow2 *s)
{
    uint64_t per_l1 = s->cluster_size * s->l2_entries;

    return FQ_DIV_UP(s->bs->size, per_l1) * per_l1;
}

/* Grow the active L1 table to `n` entries (the virtual size unchanged). */
static int grow_l1(struct qcow2 *s, uint64_t n)
{
    uint64_t *nl1 = calloc(n, sizeof(uint64_t));
    int r;

    if (!nl1)
        return -ENOMEM;
    memcpy(nl1, s->l1, (size_t)s->l1_size * sizeof(uint64_t));
    r = qcow2_switch_l1(s, nl1, (uint32_t)n, s->bs->size);
    free(nl1);
    return r < 0 ? r : qcow2_sync_meta(s);   /* frees the old table */
}

/* A read of [off, off+len) past what the L1 table maps: nothing of this
 * image is there, so it reads as unallocated clusters do (the backing
 * file's data, zeros past its end). */
static int read_uncovered(struct qcow2 *s, uint8_t *buf, uint64_t off, uint64_t len)
{
    struct fq_bdev *b = s->bs->backing;
    uint64_t in = b && off < b->size ? FQ_MIN(len, b->size - off) : 0;

    memset(buf + in, 0, (size_t)(len - in));
    if (!in)
        return 0;
    struct iovec v = { buf, (size_t)in };
    struct fq_req req = { .op = FQ_OP_READ, .off = off, .len = in, .iov = &v, .iovcnt = 1 };
    return b->ops->io_sync(b, &req);
}

int qcow2_vmstate_rw(struct qcow2 *s, void *buf, uint64_t len, uint64_t pos, bool write)
{
    uint64_t per_l1 = s->cluster_size * s->l2_entries, off, end;
    int r;

    if (fq_add_ovf(qcow2_vmstate_offset(s), pos, &off) || fq_add_ovf(off, len, &end) ||
        FQ_DIV_UP(end, per_l1) * 8 > QCOW2_MAX_L1_BYTES)
        return -EIO;   /* past what any L1 table can map */
    if (len == 0)
        return 0;
    uint64_t covered = (uint64_t)s->l1_size * per_l1;
    if (write) {
        if ((r = qcow2_op_writable(s, NULL)) < 0)
            return r;
        if (end > covered && (r = grow_l1(s, FQ_DIV_UP(end, per_l1))) < 0)
            return r;
    } else if (end > covered) {
        uint64_t in = off < covered ? covered - off : 0;
        if ((r = read_uncovered(s, (uint8_t *)buf + in, FQ_MAX(off, covered), len - in)) < 0)
            return r;
        if (!(len = in))
            return 0;
    }
    struct iovec v = { buf, (size_t)len };
    struct fq_req req = { .op = write ? FQ_OP_WRITE : FQ_OP_READ, .off = off, .len = len,
                          .iov = &v, .iovcnt = 1, .flags = FQ_REQ_VMSTATE,
                          .tag = FQ_TAG_DATA };
    return qcow2_io_sync(s->bs, &req);
}
