/* test-fault.c: I/O errors at every point of representative workloads.
 *
 * For each configuration (cluster sizes from 512 bytes to 64 KiB, refcount
 * widths 1, 16 and 64 bits, compat 0.10 and 1.1, extended L2), a workload
 * of allocating writes (at 512-byte clusters with 64-bit refcounts the
 * image is first filled to just below what its refcount table covers, so
 * that the table grows during the workload), overwrites, write-zeroes,
 * discards, reads and flushes runs on an image stacked as
 * mem -> fault -> qcow2 (tests/unit/wl.h). A first run counts the device
 * operations of open + workload + close; then, for every N, the workload
 * runs again with the Nth operation failing, once (EIO, or ENOSPC on odd N)
 * and from then on (sticky). Each time:
 *
 *  - the request during which the fault hit returns that error;
 *  - every later request works or fails cleanly (no crash, no sanitizer
 *    report), and every successful read returns the model's content;
 *  - the image reopens on the good storage underneath, fq_check finds no
 *    corruption (leaks are allowed), and every write acknowledged before
 *    the last successful flush reads back (other sectors: old or new).
 *
 * Usage: test-fault [SEED [CONFIG-SUBSTRING]]. FQ_FAULT_LONG=N also walks
 * faults by kind and by write tag, for N seeds (scripts/long-fault-walk.sh).
 * The last line gives the figures.
 * SPDX-License-Identifier: MIT
 */
#include "wl.h"

#define MAX_OPS 128

struct fcfg {
    struct wl_cfg w;
    int prefill;               /* runs of 64 KiB written before the walk */
};

static const struct fcfg configs[] = {
    { { "c512-rb64-v3-grow", 512, 64, 3, 0, 3 << 20, 36, 16, 0 }, 31 },
    { { "c512-rb1-v3", 512, 1, 3, 0, 1 << 20, 50, 0, 0 }, 0 },
    { { "c4k-rb16-v2", 4096, 16, 2, 0, 4 << 20, 50, 0, 0 }, 0 },
    { { "c64k-rb16-v3", 65536, 16, 3, 0, 16 << 20, 50, 0, 0 }, 0 },
    { { "c64k-rb16-v3-extl2", 65536, 16, 3, 1, 16 << 20, 40, 0, 0 }, 0 },
};
/* The same with the smallest caches (wl.h): two L2 entries of 512 bytes,
 * four refcount blocks. */
static const struct fcfg tiny_configs[] = {
    { { "c512-rb16-v3-tinycache", 512, 16, 3, 0, 1 << 20, 50, 0, 0 }, 0 },
    { { "c64k-rb16-v3-tinycache", 65536, 16, 3, 0, 16 << 20, 40, 0, 0 }, 0 },
};

static struct {
    uint64_t runs, points, injected, op_errors, reopen_fail, corruptions, lost, badold,
        badread, silent, other_errno;
} st;
static int failures;

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "test-fault: FAIL: " __VA_ARGS__);                    \
        fputc('\n', stderr);                                                   \
        failures++;                                                            \
    } while (0)

struct run {
    const struct fcfg *c;
    uint64_t seed;
    struct fq_ctx *ctx;
    uint8_t *base;             /* image after the prefill */
    size_t blen;
    struct wl_op ops[MAX_OPS + 2];
    int first;                 /* index of the first walked operation */
    int nops;                  /* prefill + close + walked */
    struct wl_model m;
    uint8_t *buf;
};

static void quiet(void *opaque, const char *line)
{
    if (getenv("TL_VERBOSE"))
        fprintf(stderr, "  check: %s\n", line);
    (void)opaque;
}

/* Verify `img` against the model; returns the number of bad sectors. */
static int verify(struct run *R, struct fq_image *img, int durable, int started, const char *what,
                  const char *where)
{
    const struct wl_cfg *c = &R->c->w;
    uint64_t chunk = 256 * 1024;
    int bad = 0;

    for (uint64_t off = 0; off < c->size && bad < 3; off += chunk) {
        uint64_t n = FQ_MIN(chunk, c->size - off);
        int r = fq_pread(img, R->buf, (size_t)n, off);
        if (r < 0) {
            FAIL("%s: %s: read 0x%llx: %s", where, what, (unsigned long long)off, strerror(-r));
            return 1;
        }
        for (uint64_t s = 0; s < n / WL_SECTOR; s++) {
            uint64_t sec = off / WL_SECTOR + s;
            int exact;
            if (wl_allowed(&R->m, R->ops, sec, durable, started, R->buf + s * WL_SECTOR, &exact))
                continue;
            if (exact)
                st.lost++;
            else
                st.badold++;
            if (bad++ < 2)
                FAIL("%s: %s: sector %llu (0x%llx): %s (durable up to op %d)", where, what,
                     (unsigned long long)sec, (unsigned long long)sec * WL_SECTOR,
                     exact ? "a flushed write is lost" : "neither old nor new content", durable);
        }
    }
    return bad;
}

/* One run with `spec` armed (NULL: count only). Returns the fault counts. */
static void one_run(struct run *R, const struct fq_fault_spec *spec, struct fq_fault_counts *cnt)
{
    const struct wl_cfg *c = &R->c->w;
    struct fq_bdev *mem, *fault;
    struct fq_image *img = NULL;
    char err[FQ_ERR_MAX] = "", where[256];
    int r, hit_op = -2;

    snprintf(where, sizeof(where), "%s seed %llu fault %s#%llu%s (%s)", c->name,
             (unsigned long long)R->seed, spec ? "any" : "none",
             spec ? (unsigned long long)spec->nth : 0ull, spec && spec->sticky ? "+" : "",
             spec ? strerror(-spec->err) : "-");
    st.runs++;
    for (int i = R->first; i < R->nops; i++)
        R->ops[i].ret = 1;
    if (fq_mem_open(R->ctx, R->base, R->blen, 1u << 30, &mem) < 0 ||
        fq_fault_open(mem, FQ_TESTDEV_BORROW, &fault) < 0) {
        FAIL("out of memory");
        return;
    }
    fq_fault_arm(fault, spec);
    fq_fault_mirror(fault, cnt);
    r = wl_open(R->ctx, fault, 0, &img, err);
    if (r < 0) {
        if (!cnt->injected)
            FAIL("%s: open failed without a fault: %s", where, err);
        hit_op = -1;
        fq_bdev_close(fault);
        img = NULL;
    }
    for (int i = R->first; img && i < R->nops; i++) {
        struct wl_op *o = &R->ops[i];
        uint64_t before = cnt->injected;
        if (o->kind == WL_CLOSE) {
            o->ret = fq_close(img);
            img = NULL;
        } else {
            o->ret = wl_run_op(img, o, i, R->buf);
        }
        if (getenv("FQ_FAULT_TRACE"))
            fprintf(stderr, "  %s: op %d %s 0x%llx+0x%llx: %d (injected %llu)\n", where, i,
                    wl_names[o->kind], (unsigned long long)o->off, (unsigned long long)o->len,
                    o->ret, (unsigned long long)cnt->injected);
        if (o->ret < 0) {
            st.op_errors++;
            if (!cnt->injected)
                FAIL("%s: op %d (%s 0x%llx+0x%llx) failed without a fault: %s", where, i,
                     wl_names[o->kind], (unsigned long long)o->off, (unsigned long long)o->len,
                     strerror(-o->ret));
        }
        if (cnt->injected > before && hit_op == -2) {
            hit_op = i;
            if (o->ret < 0 && spec && o->ret != spec->err) {
                st.other_errno++;
                FAIL("%s: op %d (%s) failed with %s, not the injected %s", where, i,
                     wl_names[o->kind], strerror(-o->ret), strerror(-spec->err));
            }
            /* the close may end with a flush that had nothing left to make
             * durable (fq_close flushed first), and cannot report it */
            if (o->ret == 0 && o->kind != WL_CLOSE) {
                st.silent++;
                FAIL("%s: op %d (%s 0x%llx+0x%llx) succeeded although an I/O error hit it",
                     where, i, wl_names[o->kind], (unsigned long long)o->off,
                     (unsigned long long)o->len);
            }
        }
        if (o->kind == WL_READ && o->ret == 0) {
            for (uint64_t s = 0; s < o->len / WL_SECTOR; s++) {
                uint64_t sec = o->off / WL_SECTOR + s;
                if (!wl_allowed(&R->m, R->ops, sec, i, i, R->buf + s * WL_SECTOR, NULL)) {
                    st.badread++;
                    FAIL("%s: op %d: read 0x%llx+0x%llx returned wrong data at sector %llu", where, i,
                         (unsigned long long)o->off, (unsigned long long)o->len,
                         (unsigned long long)sec);
                    break;
                }
            }
        }
    }
    if (img)
        fq_close(img);         /* closes the fault device too */
    if (spec && !cnt->injected) {
        fq_bdev_close(mem);
        return;                /* N past the end of this run */
    }
    if (spec)
        st.points++;

    /* reopen what the good storage holds */
    size_t len = (size_t)mem->size;
    uint8_t *data = malloc(len ? len : 1);
    r = data ? fq_bdev_pread_sync(mem, data, len, 0) : -ENOMEM;
    fq_bdev_close(mem);
    if (r == 0)
        r = wl_open_mem(R->ctx, data, len, 1, &img, err);
    if (r < 0) {
        st.reopen_fail++;
        FAIL("%s (fault hit op %d): reopen: %s", where, hit_op, err[0] ? err : strerror(-r));
        free(data);
        return;
    }
    struct fq_check_result res;
    r = fq_check(img, 0, &res, quiet, NULL);
    if (r < 0 || res.corruptions || res.check_errors) {
        st.corruptions++;
        FAIL("%s (fault hit op %d): check: ret %d, %lld corruptions, %lld errors", where, hit_op,
             r, (long long)res.corruptions, (long long)res.check_errors);
        if (getenv("TL_KEEP")) {
            char name[200];
            snprintf(name, sizeof(name), "fault-%s-%llu.qcow2", c->name,
                     spec ? (unsigned long long)spec->nth : 0ull);
            wl_save(tl_path(name), data, len);
            fprintf(stderr, "  saved %s\n", tl_path(name));
        }
    }
    int durable = R->first;    /* the prefill was closed cleanly */
    for (int i = R->first; i < R->nops; i++)
        if ((R->ops[i].kind == WL_FLUSH || R->ops[i].kind == WL_CLOSE) && R->ops[i].ret == 0)
            durable = i;
    char what[64];
    snprintf(what, sizeof(what), "after reopening (fault hit op %d)", hit_op);
    verify(R, img, durable, R->nops, what, where);
    fq_close(img);
    free(data);
}

static void run_config(const struct fcfg *c, uint64_t seed, int long_mode)
{
    struct run R;
    struct fq_fault_counts cnt;

    memset(&R, 0, sizeof(R));
    R.c = c;
    R.seed = seed;
    R.buf = malloc(1u << 20);
    if (!R.buf || fq_ctx_new(FQ_ENGINE_SYNC, &R.ctx, NULL) < 0 ||
        wl_create(R.ctx, &c->w, &R.base, &R.blen) < 0) {
        FAIL("%s: could not create the image", c->w.name);
        return;
    }
    /* the prefill runs on a recording device to keep its result */
    if (c->prefill) {
        struct fq_reclog *log = fq_reclog_new(R.base, R.blen);
        struct fq_bdev *mem, *rec;
        struct fq_image *img;
        char err[FQ_ERR_MAX] = "";
        int n = 0, r;
        for (int k = 0; k < c->prefill; k++)
            R.ops[n++] = (struct wl_op){ WL_WRITE, (uint64_t)k * 65536, 65536 - 2 * c->w.cluster, 0, 0, 1 };
        r = log ? fq_mem_open(R.ctx, R.base, R.blen, 1u << 30, &mem) : -ENOMEM;
        if (r == 0)
            r = fq_record_open(mem, log, 0, &rec);
        if (r == 0)
            r = wl_open(R.ctx, rec, 0, &img, err);
        for (int i = 0; r == 0 && i < n; i++)
            r = R.ops[i].ret = wl_run_op(img, &R.ops[i], i, R.buf);
        if (r == 0)
            r = fq_close(img);
        R.ops[n] = (struct wl_op){ WL_CLOSE, 0, 0, 0, 0, 0 };
        free(R.base);
        R.base = NULL;
        if (r == 0)
            r = fq_reclog_replay(log, fq_reclog_count(log), &R.base, &R.blen);
        fq_reclog_free(log);
        if (r < 0) {
            FAIL("%s: prefill: %s %s", c->w.name, strerror(-r), err);
            return;
        }
        R.first = n + 1;
    }
    int nw = wl_generate(&c->w, seed, R.ops + R.first);
    R.nops = R.first + nw;
    R.ops[R.nops] = (struct wl_op){ WL_CLOSE, 0, 0, 0, 0, 1 };
    R.nops++;
    if (wl_model_build(&R.m, &c->w, R.ops, R.nops) < 0) {
        FAIL("out of memory");
        return;
    }
    one_run(&R, NULL, &cnt);
    uint64_t total = cnt.any;
    fprintf(stderr, "test-fault: %s: %llu device operations (%llu reads, %llu writes, %llu flushes) "
            "per run, %llu refcount table writes\n", c->w.name, (unsigned long long)total,
            (unsigned long long)cnt.reads, (unsigned long long)cnt.writes,
            (unsigned long long)cnt.flushes, (unsigned long long)cnt.tags[FQ_TAG_REFTABLE]);
    /* sanitizer builds: once on every fourth point, sticky on the ones
     * two further on */
    int alt = WL_SANITIZED && !long_mode;
    uint64_t nth0 = getenv("FQ_FAULT_NTH") ? strtoull(getenv("FQ_FAULT_NTH"), NULL, 0) : 1;
    for (uint64_t nth = nth0; nth <= total && failures < 10; nth++) {
        struct fq_fault_spec f = { FQ_FAULT_ANY, 0, nth, nth % 2 ? -EIO : -ENOSPC, false };
        if (!alt || nth % 4 == 1)
            one_run(&R, &f, &cnt);
        f.sticky = true;
        f.err = -EIO;
        if (!alt || nth % 4 == 3)
            one_run(&R, &f, &cnt);
    }
    if (long_mode) {
        /* by kind and by tag, each failing from then on */
        static const struct { enum fq_fault_kind k; unsigned tag; } kinds[] = {
            { FQ_FAULT_READ, 0 }, { FQ_FAULT_WRITE, 0 }, { FQ_FAULT_FLUSH, 0 },
            { FQ_FAULT_TAG, FQ_TAG_DATA }, { FQ_FAULT_TAG, FQ_TAG_HEADER },
            { FQ_FAULT_TAG, FQ_TAG_L1 }, { FQ_FAULT_TAG, FQ_TAG_L2 },
            { FQ_FAULT_TAG, FQ_TAG_REFBLOCK }, { FQ_FAULT_TAG, FQ_TAG_REFTABLE },
        };
        one_run(&R, NULL, &cnt);
        struct fq_fault_counts all = cnt;
        for (size_t k = 0; k < FQ_ARRAY_SIZE(kinds) && failures < 10; k++) {
            uint64_t n = fq_fault_count(&all, kinds[k].k, kinds[k].tag);
            for (uint64_t nth = 1; nth <= n && failures < 10; nth++) {
                struct fq_fault_spec f = { kinds[k].k, kinds[k].tag, nth, -ENOSPC, true };
                one_run(&R, &f, &cnt);
                f.sticky = false;
                f.err = -EIO;
                one_run(&R, &f, &cnt);
            }
        }
    }
    wl_model_free(&R.m);
    free(R.base);
    free(R.buf);
    fq_ctx_free(R.ctx);
}

int main(int argc, char **argv)
{
    uint64_t seed = tl_seed_arg(argc, argv, 1);
    const char *only = argc > 2 ? argv[2] : NULL;
    const char *lv = getenv("FQ_FAULT_LONG");
    int nseeds = lv ? atoi(lv) : 1;

    tl_name = "test-fault";
    if (nseeds < 1)
        nseeds = 1;
    tl_mkdir();
    fprintf(stderr, "test-fault: seed %llu\n", (unsigned long long)seed);
    size_t nplain = FQ_ARRAY_SIZE(configs), ntiny = FQ_ARRAY_SIZE(tiny_configs);
    for (int k = 0; k < nseeds && failures < 10; k++)
        for (size_t i = 0; i < nplain + ntiny && failures < 10; i++) {
            const struct fcfg *c = i < nplain ? &configs[i] : &tiny_configs[i - nplain];
            if (only && !strstr(c->w.name, only))
                continue;
            wl_l2_cache = i < nplain ? 0 : 1024;
            wl_l2_entry = i < nplain ? 0 : 512;
            int before = failures;
            run_config(c, seed + (uint64_t)k, lv != NULL);
            if (failures > before)
                fprintf(stderr, "test-fault: reproduce with: test-fault %llu %s\n",
                        (unsigned long long)(seed + (uint64_t)k), c->w.name);
        }
    printf("RESULT fault: runs=%llu points=%llu op_errors=%llu reopen_failures=%llu corruptions=%llu "
           "lost=%llu neither_old_nor_new=%llu bad_reads=%llu silent_errors=%llu other_errno=%llu\n",
           (unsigned long long)st.runs, (unsigned long long)st.points,
           (unsigned long long)st.op_errors, (unsigned long long)st.reopen_fail,
           (unsigned long long)st.corruptions, (unsigned long long)st.lost,
           (unsigned long long)st.badold, (unsigned long long)st.badread,
           (unsigned long long)st.silent, (unsigned long long)st.other_errno);
    return failures ? 1 : 0;
}
