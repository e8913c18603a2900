/* test-overlap.c: the overlap checks' indexes (src/drivers/qcow2/overlap.c)
 * on an image that allocates thousands of L2 tables and refcount blocks
 * (4 KiB clusters with 64-bit refcounts: a block covers 2 MiB), so that
 * tables are added to the indexes while they are in use and the lists of
 * additions are merged many times:
 *
 *  - after every few hundred allocations, and at the end, every L2 table
 *    and refcount block is reported as metadata and every data cluster is
 *    not, by qcow2_overlaps_metadata and qcow2_check_meta_write;
 *  - a table that went away (its L1 entry cleared) is no longer reported
 *    (the index's stale entry is confirmed against the tables), and is
 *    again once the entry is back.
 * SPDX-License-Identifier: MIT
 */
#include "testlib.h"
#include "api/api.h"
#include "drivers/qcow2/qcow2.h"

#define TABLES 3000u
#define CS 4096u

/* Every table of the image must be metadata and every data cluster
 * written so far (at guest cluster i * per-table span, i < n) not. */
static void verify(struct fq_image *img, struct qcow2 *s, unsigned n, const char *when)
{
    unsigned bad = 0;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t t = s->l1[i] & L1E_OFFSET_MASK;
        if (t && (!qcow2_overlaps_metadata(s, t, CS) || !qcow2_overlaps_metadata(s, t + 100, 1) ||
                  qcow2_check_meta_write(s, t, CS, FQ_TAG_L2) != 0))
            bad++;
    }
    for (uint64_t i = 0; i < FQ_MIN(s->rt_hi, s->rt_entries); i++)
        if (s->rt[i] && (!qcow2_overlaps_metadata(s, s->rt[i], CS) ||
                         qcow2_check_meta_write(s, s->rt[i], CS, FQ_TAG_REFBLOCK) != 0))
            bad++;
    for (unsigned i = 0; i < n; i++) {
        struct fq_map_entry m;
        uint64_t g = (uint64_t)i * (CS / 8) * CS;
        if (fq_map(img, g, CS, &m) < 0 || !(m.flags & FQ_MAP_OFFSET)) {
            bad++;
            continue;
        }
        if (qcow2_overlaps_metadata(s, m.host_offset, CS) ||
            qcow2_check_meta_write(s, m.host_offset, CS, FQ_TAG_L2) != 0 ||
            qcow2_check_meta_write(s, m.host_offset, CS, FQ_TAG_REFBLOCK) != 0)
            bad++;
    }
    TL_CHECK(bad == 0, "%s: %u wrong answers", when, bad);
}

int main(void)
{
    struct fq_create_opts o;
    char err[FQ_ERR_MAX] = "";
    const char *path;

    tl_name = "test-overlap";
    setvbuf(stdout, NULL, _IOLBF, 0);
    tl_mkdir();
    path = tl_path("t.qcow2");
    fq_create_opts_init(&o);
    o.size = (uint64_t)TABLES * (CS / 8) * CS;
    o.cluster_size = CS;
    o.refcount_bits = 64;
    int r = fq_create(path, &o, err);
    TL_CHECK(r == 0, "create: %s", err);
    struct fq_image *img = r == 0 ? tl_open_image(path, "qcow2", 0, FQ_ENGINE_SYNC, NULL) : NULL;
    if (!img)
        return 1;
    struct qcow2 *s = fq_image_bdev(img)->priv;
    uint8_t buf[CS];
    memset(buf, 0x5a, sizeof(buf));

    /* one cluster per table: a new table (and every 512th a refcount
     * block) per write; half the writes before the first question */
    for (unsigned i = 0; i < TABLES && !tl_failures; i++) {
        r = fq_pwrite(img, buf, CS, (uint64_t)i * (CS / 8) * CS);
        TL_CHECK(r == 0, "write %u: %d", i, r);
        if (i == TABLES / 2 || (i > TABLES / 2 && i % 700 == 0))
            verify(img, s, i + 1, "while allocating");
    }
    verify(img, s, TABLES, "at the end");

    /* a table that went away, and came back */
    uint64_t e = s->l1[7], t = e & L1E_OFFSET_MASK;
    s->l1[7] = 0;
    qcow2_mark_l1_dirty(s, 7);
    TL_CHECK(!qcow2_overlaps_metadata(s, t, CS), "a dropped table is still metadata");
    s->l1[7] = e;
    qcow2_mark_l1_dirty(s, 7);
    TL_CHECK(qcow2_overlaps_metadata(s, t, CS), "a table put back is not metadata");
    verify(img, s, TABLES, "after the drop");
    TL_CHECK(fq_close(img) == 0, "close");

    if (tl_failures) {
        fprintf(stderr, "test-overlap: %d check(s) failed (scratch dir kept with TL_KEEP=1)\n",
                tl_failures);
        return 1;
    }
    tl_cleanup_dir();
    printf("PASS: test-overlap (%u tables)\n", TABLES);
    return 0;
}
