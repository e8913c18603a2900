/* test-crash.c: power-loss replay.
 *
 * For each configuration (cluster sizes from 512 bytes to 64 KiB, refcount
 * widths 1, 16 and 64 bits, compat 0.10 and 1.1, extended L2) a workload
 * of writes, write-zeroes, discards, reads and flushes runs on an image
 * whose storage is a recording device (tests/unit/wl.h). The log is then
 * replayed into crash states: every prefix of it as written, and for each
 * prefix random subsets of the writes since the last flush, applied in a
 * random order and torn at 512-byte sectors. For each state:
 *
 *  - the image opens (read-only) and fq_check finds 0 corruptions;
 *  - every sector holds what the operations acknowledged before the last
 *    completed flush left there, or, where a later operation had started,
 *    the old or the new content;
 *  - the image reopens read-write, takes a write and a flush, reads it back
 *    and checks without corruptions (leaks from the crash are allowed, and
 *    repairing them leaves a clean image);
 *  - a sample of states is written to files and `qemu-img check` must exit
 *    0 or 3 (leaks only).
 *
 * A second pass per configuration fails one of the flushes (mem -> record
 * -> fault -> qcow2): a failed flush promises nothing, so the writes around
 * it share one epoch in the log and every reordering of them is replayed.
 * The long version also fails other flushes and one write of each kind of
 * metadata, then crashes.
 *
 * Usage: test-crash [SEED [CONFIG-SUBSTRING]]. FQ_CRASH_LONG=N runs N
 * seeds per configuration with more variants per prefix
 * (scripts/long-crash-replay.sh). FQ_CRASH_DUMP=1 lists each operation
 * with its range of log records, then every record (to find which writes
 * a failing state holds). The last line gives the figures.
 * SPDX-License-Identifier: MIT
 */
#include "wl.h"

#define MAX_OPS 256

static const struct wl_cfg configs[] = {
    { "c512-rb64-v3", 512, 64, 3, 0, 1 << 20, 60, 0, 0 },
    { "c512-rb64-v3-grow", 512, 64, 3, 0, 4 << 20, 70, 512, 0 },
    { "c512-rb64-v3-grow-clean", 512, 64, 3, 0, 3 << 20, 160, 0, 31 },
    { "c512-rb1-v3", 512, 1, 3, 0, 1 << 20, 60, 0, 0 },
    { "c4k-rb16-v2", 4096, 16, 2, 0, 4 << 20, 50, 0, 0 },
    { "c64k-rb16-v3", 65536, 16, 3, 0, 16 << 20, 40, 0, 0 },
    { "c32k-rb8-v3-extl2", 32768, 8, 3, 1, 8 << 20, 40, 0, 0 },
};

/* The same with the smallest caches: two L2 entries of 512 bytes (a few
 * L2 entries each) and four refcount blocks. */
static const struct wl_cfg tiny_configs[] = {
    { "c512-rb16-v3-tinycache", 512, 16, 3, 0, 1 << 20, 60, 0, 0 },
    { "c64k-rb16-v3-tinycache", 65536, 16, 3, 0, 16 << 20, 40, 0, 0 },
};

struct stats {
    uint64_t states, prefixes, reordered, qemu_checked, corruptions, lost, badold, open_fail,
        rw_fail, records, growths;
};

static struct stats st;
static int failures;
static int variants = 1;       /* random crash states per prefix */

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "test-crash: FAIL: " __VA_ARGS__);                    \
        fputc('\n', stderr);                                                   \
        failures++;                                                            \
    } while (0)

struct run {
    const struct wl_cfg *c;
    uint64_t seed;
    struct fq_ctx *ctx;
    struct wl_op ops[MAX_OPS + 1];
    int nops;
    struct fq_reclog *log;
    struct wl_model m;
    uint8_t *buf;
    const char *what;          /* "plain" / "flush-fault" */
};

/* Run the workload with the device stack mem -> record [-> fault] -> qcow2. */
static int record_workload(struct run *R, const uint8_t *base, size_t blen,
                           const struct fq_fault_spec *fault)
{
    struct fq_bdev *mem, *rec, *top;
    struct fq_image *img;
    char err[FQ_ERR_MAX] = "";
    int r;

    R->log = fq_reclog_new(base, blen);
    if (!R->log || fq_mem_open(R->ctx, base, blen, 1u << 30, &mem) < 0)
        return -ENOMEM;
    if ((r = fq_record_open(mem, R->log, 0, &rec)) < 0)
        return r;
    top = rec;
    if (fault) {
        if ((r = fq_fault_open(rec, 0, &top)) < 0)
            return r;
        fq_fault_arm(top, fault);
    }
    r = wl_open(R->ctx, top, 0, &img, err);
    if (r < 0) {
        FAIL("%s seed %llu: open for the workload: %s", R->c->name, (unsigned long long)R->seed, err);
        return r;
    }
    for (int i = 0; i < R->nops; i++) {
        struct wl_op *o = &R->ops[i];
        o->sub = fq_reclog_count(R->log);
        o->ret = wl_run_op(img, o, i, R->buf);
        o->ack = fq_reclog_count(R->log);
        if (o->ret < 0 && !fault)
            FAIL("%s seed %llu: op %d (%s 0x%llx+0x%llx) failed: %s", R->c->name,
                 (unsigned long long)R->seed, i, wl_names[o->kind], (unsigned long long)o->off,
                 (unsigned long long)o->len, strerror(-o->ret));
    }
    /* closing flushes: the last operation */
    struct wl_op *o = &R->ops[R->nops];
    memset(o, 0, sizeof(*o));
    o->kind = WL_CLOSE;
    o->sub = fq_reclog_count(R->log);
    o->ret = fq_close(img);
    o->ack = fq_reclog_count(R->log);
    if (o->ret < 0 && !fault)
        FAIL("%s: close: %s", R->c->name, strerror(-o->ret));
    st.records += fq_reclog_count(R->log);
    if (getenv("FQ_CRASH_DUMP")) {
        for (int i = 0; i <= R->nops; i++)
            fprintf(stderr, "op %d: %s 0x%llx+0x%llx recs %zu..%zu ret %d\n", i,
                    R->ops[i].kind == WL_CLOSE ? "close" : wl_names[R->ops[i].kind],
                    (unsigned long long)R->ops[i].off, (unsigned long long)R->ops[i].len,
                    (size_t)R->ops[i].sub, (size_t)R->ops[i].ack, R->ops[i].ret);
        for (size_t i = 0; i < fq_reclog_count(R->log); i++) {
            const struct fq_rec *rc = fq_reclog_get(R->log, i);
            fprintf(stderr, "rec %zu: kind %d tag %u off 0x%llx len 0x%llx\n", i, rc->kind, rc->tag,
                    (unsigned long long)rc->off, (unsigned long long)rc->len);
        }
    }
    for (size_t i = 0; i < fq_reclog_count(R->log); i++)
        if (fq_reclog_get(R->log, i)->tag == FQ_TAG_REFTABLE &&
            fq_reclog_get(R->log, i)->kind == FQ_REC_WRITE)
            st.growths++;
    return 0;
}

static void msg_print(void *opaque, const char *line)
{
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "  check: %s\n", line);
    (void)opaque;
}

/* With TL_KEEP, a failing state is saved as an image file to look at. */
static void keep_state(const struct run *R, const uint8_t *data, size_t len, size_t p)
{
    char name[128];

    if (!getenv("TL_KEEP") || !tl_dir[0])
        return;
    snprintf(name, sizeof(name), "bad-%s-%s-%zu.qcow2", R->c->name, R->what, p);
    wl_save(tl_path(name), data, len);
    fprintf(stderr, "  saved %s\n", tl_path(name));
}

/* Check one crash state; `p` = records it may contain. */
static void check_state(struct run *R, const uint8_t *data, size_t len, size_t p, const char *kind,
                        uint64_t vseed, int qemu)
{
    const struct wl_cfg *c = R->c;
    struct fq_image *img;
    struct fq_check_result res;
    char err[FQ_ERR_MAX] = "";
    int durable = 0, started = 0, r;

    st.states++;
    /* the last flush acknowledged within the prefix, the operations begun */
    for (int i = 0; i <= R->nops; i++) {
        const struct wl_op *o = &R->ops[i];
        if ((o->kind == WL_FLUSH || o->kind == WL_CLOSE) && o->ret == 0 && o->ack <= p)
            durable = i;
        if (o->sub < p || (o->sub == p && o->ack == p))
            started = i + 1;
    }
#define WHERE "%s/%s seed %llu: %s state after %zu of %zu records (variant %llu)", c->name, R->what, \
        (unsigned long long)R->seed, kind, p, fq_reclog_count(R->log), (unsigned long long)vseed
    r = wl_open_mem(R->ctx, data, len, 1, &img, err);
    if (r < 0) {
        st.open_fail++;
        FAIL(WHERE);
        fprintf(stderr, "  open: %s\n", err);
        return;
    }
    r = fq_check(img, 0, &res, msg_print, NULL);
    if (r < 0 || res.corruptions || res.check_errors) {
        st.corruptions++;
        FAIL(WHERE);
        fprintf(stderr, "  check: ret %d, %lld corruptions, %lld errors\n", r,
                (long long)res.corruptions, (long long)res.check_errors);
        keep_state(R, data, len, p);
    }
    /* contents */
    uint64_t chunk = 256 * 1024;
    int lost = 0, badold = 0;
    for (uint64_t off = 0; off < c->size && lost + badold < 4; off += chunk) {
        uint64_t n = FQ_MIN(chunk, c->size - off);
        r = fq_pread(img, R->buf, (size_t)n, off);
        if (r < 0) {
            FAIL(WHERE);
            fprintf(stderr, "  read 0x%llx: %s\n", (unsigned long long)off, strerror(-r));
            lost++;
            break;
        }
        for (uint64_t s = 0; s < n / WL_SECTOR; s++) {
            uint64_t sec = off / WL_SECTOR + s;
            int exact;
            if (wl_allowed(&R->m, R->ops, sec, durable, started, R->buf + s * WL_SECTOR, &exact))
                continue;
            if (exact)
                lost++;
            else
                badold++;
            if (lost + badold <= 2) {
                FAIL(WHERE);
                fprintf(stderr, "  sector %llu (0x%llx): %s (durable up to op %d, %d ops begun)\n",
                        (unsigned long long)sec, (unsigned long long)sec * WL_SECTOR,
                        exact ? "a flushed write is lost" : "neither old nor new content",
                        durable, started);
            }
        }
    }
    st.lost += (uint64_t)lost;
    st.badold += (uint64_t)badold;
    if (lost + badold)
        keep_state(R, data, len, p);
    fq_close(img);

    /* read-write: write, flush, read back, check */
    r = wl_open_mem(R->ctx, data, len, 0, &img, err);
    if (r < 0) {
        st.rw_fail++;
        FAIL(WHERE);
        fprintf(stderr, "  read-write open: %s\n", err);
        return;
    }
    uint64_t woff = (vseed % (c->size / c->cluster)) * c->cluster;
    size_t wlen = (size_t)FQ_MIN((uint64_t)c->cluster + 1024, c->size - woff);
    for (size_t i = 0; i < wlen; i++)
        R->buf[i] = (uint8_t)(i * 7 + vseed);
    r = fq_pwrite(img, R->buf, wlen, woff);
    if (r == 0)
        r = fq_flush(img);
    if (r == 0) {
        uint8_t *b2 = R->buf + 2 * wlen;
        r = fq_pread(img, b2, wlen, woff);
        if (r == 0 && memcmp(b2, R->buf, wlen))
            r = -EILSEQ;
    }
    if (r == 0)
        r = fq_check(img, FQ_CHECK_REPAIR_LEAKS, &res, msg_print, NULL);
    if (r < 0 || res.corruptions || res.check_errors || res.leaks) {
        st.rw_fail++;
        FAIL(WHERE);
        fprintf(stderr, "  after a write and a flush: ret %d (%s), %lld corruptions, %lld leaks left\n",
                r, r < 0 ? strerror(-r) : "ok", (long long)res.corruptions,
                (long long)res.leaks);
    }
    fq_close(img);

    if (qemu) {
        const char *path = tl_path("state.qcow2");
        if (wl_save(path, data, len) == 0) {
            int rc = tl_sh("qemu-img check -f qcow2 '%s' >/dev/null 2>&1", path);
            st.qemu_checked++;
            if (rc != 0 && rc != 3) {
                FAIL(WHERE);
                fprintf(stderr, "  qemu-img check exit %d\n", rc);
                tl_sh("qemu-img check -f qcow2 '%s' 2>&1 | head -5 >&2", path);
            }
        }
    }
#undef WHERE
}

static void replay_all(struct run *R, int have_qemu, int qemu_every)
{
    size_t n = fq_reclog_count(R->log);
    uint8_t *data;
    size_t len;

    /* sanitizer builds: about 120 prefixes per log, one reordering each */
    size_t stride = WL_SANITIZED && !getenv("FQ_CRASH_LONG") ? FQ_MAX(n / 60, (size_t)3) : 1;
    int nvar = stride > 1 ? 1 : variants;
    for (size_t p = (size_t)(R->seed % stride); p <= n && failures < 20; p += stride) {
        if (fq_reclog_replay(R->log, p, &data, &len) < 0) {
            FAIL("replay failed");
            return;
        }
        st.prefixes++;
        check_state(R, data, len, p, "prefix", 0, have_qemu && p % (size_t)qemu_every == 0);
        free(data);
        /* reorderings only differ when unflushed writes exist */
        if (fq_reclog_epoch_start(R->log, p) == p)
            continue;
        for (int v = 0; v < nvar; v++) {
            uint64_t vs = R->seed * 1000003u + p * 31 + (uint64_t)v;
            unsigned keep = v % 2 ? 50 : 85, torn = v % 3 ? 30 : 60;
            if (fq_reclog_replay_crash(R->log, p, vs, keep, torn, &data, &len) < 0) {
                FAIL("replay failed");
                return;
            }
            st.reordered++;
            check_state(R, data, len, p, "reordered", vs,
                        have_qemu && (p + (size_t)v) % (size_t)(qemu_every * 3) == 1);
            free(data);
        }
    }
}

static void run_config(const struct wl_cfg *c, uint64_t seed, int have_qemu, int long_mode)
{
    struct run R;
    uint8_t *base;
    size_t blen;

    memset(&R, 0, sizeof(R));
    R.c = c;
    R.seed = seed;
    if (fq_ctx_new(FQ_ENGINE_SYNC, &R.ctx, NULL) < 0 || wl_create(R.ctx, c, &base, &blen) < 0) {
        FAIL("%s: could not create the image", c->name);
        return;
    }
    R.buf = malloc((size_t)FQ_MAX((uint64_t)((c->maxw > 8 ? c->maxw : 8) * c->cluster + 8192) * 3,
                                  (uint64_t)(1u << 20)));
    R.nops = wl_generate(c, seed, R.ops);
    if (!R.buf || wl_model_build(&R.m, c, R.ops, R.nops) < 0) {
        FAIL("out of memory");
        return;
    }
    /* plain, then with a failed flush (the 2nd, then the 4th) */
    /* plain, then with one failed flush (the 2nd); the long version also
     * fails the 4th and 6th flush, and one write of each metadata kind */
    static const struct { const char *what; struct fq_fault_spec f; } passes[] = {
        { "plain", { FQ_FAULT_NONE, 0, 0, 0, false } },
        { "flush-fault", { FQ_FAULT_FLUSH, 0, 2, -EIO, false } },
        { "flush-fault", { FQ_FAULT_FLUSH, 0, 4, -EIO, false } },
        { "flush-fault", { FQ_FAULT_FLUSH, 0, 6, -EIO, false } },
        { "refblock-fault", { FQ_FAULT_TAG, FQ_TAG_REFBLOCK, 2, -EIO, false } },
        { "l2-fault", { FQ_FAULT_TAG, FQ_TAG_L2, 2, -EIO, false } },
        { "l1-fault", { FQ_FAULT_TAG, FQ_TAG_L1, 1, -ENOSPC, false } },
        { "data-fault", { FQ_FAULT_TAG, FQ_TAG_DATA, 3, -EIO, false } },
        { "header-fault", { FQ_FAULT_TAG, FQ_TAG_HEADER, 1, -EIO, false } },
    };
    for (size_t pass = 0; pass < (long_mode ? FQ_ARRAY_SIZE(passes) : 2); pass++) {
        const struct fq_fault_spec *ff = pass == 0 ? NULL : &passes[pass].f;
        R.what = passes[pass].what;
        for (int i = 0; i <= R.nops; i++)
            R.ops[i].ret = 1;
        if (record_workload(&R, base, blen, ff) == 0)
            replay_all(&R, have_qemu, long_mode ? 10 : 100);
        fq_reclog_free(R.log);
        R.log = NULL;
    }
    wl_model_free(&R.m);
    free(R.buf);
    free(base);
    fq_ctx_free(R.ctx);
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 ? argv[2] : NULL;
    const char *lv = getenv("FQ_CRASH_LONG");
    int nseeds = lv ? atoi(lv) : 1;
    int have_qemu = tl_have("qemu-img");

    tl_name = "test-crash";
    if (nseeds < 1)
        nseeds = 1;
    if (lv)
        variants = 6;
    tl_mkdir();
    fprintf(stderr, "test-crash: seed %llu%s\n", (unsigned long long)seed,
            have_qemu ? "" : " (qemu-img missing: its checks are skipped)");
    size_t nplain = FQ_ARRAY_SIZE(configs), ntiny = FQ_ARRAY_SIZE(tiny_configs);
    for (int k = 0; k < nseeds && failures < 20; k++)
        for (size_t i = 0; i < nplain + ntiny; i++) {
            const struct wl_cfg *c = i < nplain ? &configs[i] : &tiny_configs[i - nplain];
            if (only && !strstr(c->name, only))
                continue;
            wl_l2_cache = i < nplain ? 0 : 1024;
            wl_l2_entry = i < nplain ? 0 : 512;
            int before = failures;
            run_config(c, seed + (uint64_t)k, have_qemu, lv != NULL);
            if (failures > before)
                fprintf(stderr, "test-crash: reproduce with: test-crash %llu %s\n",
                        (unsigned long long)(seed + (uint64_t)k), c->name);
            if (failures >= 20)
                break;
        }
    printf("RESULT crash: table_writes=%llu records=%llu states=%llu prefixes=%llu reordered=%llu qemu_checked=%llu "
           "corruptions=%llu lost=%llu neither_old_nor_new=%llu open_failures=%llu rw_failures=%llu\n",
           (unsigned long long)st.growths, (unsigned long long)st.records, (unsigned long long)st.states,
           (unsigned long long)st.prefixes, (unsigned long long)st.reordered,
           (unsigned long long)st.qemu_checked, (unsigned long long)st.corruptions,
           (unsigned long long)st.lost, (unsigned long long)st.badold,
           (unsigned long long)st.open_fail, (unsigned long long)st.rw_fail);
    return failures ? 1 : 0;
}
