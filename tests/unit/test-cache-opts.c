/* test-cache-opts.c: the qcow2 cache options (cache-size, l2-cache-size,
 * refcount-cache-size, l2-cache-entry-size, cache-clean-interval) taken by
 * name (fq_open_opts_set) and checked by fq_open, against qemu-img: for
 * every case, `qemu-img info --image-opts driver=qcow2,file.filename=...,
 * CASE` and fastqcow must both accept it, or both refuse it with the same
 * message (qemu-img's after "Could not open '...': ").
 *
 * One difference is deliberate and checked as such: a refcount cache far
 * larger than memory, which qemu allocates at open and so refuses, is
 * accepted (entries are allocated as they are needed, at most what the
 * file needs).
 * SPDX-License-Identifier: MIT
 */
#include "testlib.h"

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char *const cases[] = {
    /* sizes: qemu's number syntax */
    "l2-cache-size=1", "l2-cache-size=abc", "l2-cache-size=-1", "l2-cache-size=",
    "l2-cache-size=1e3", "l2-cache-size=0x100", "l2-cache-size=99999999999999999999",
    "l2-cache-size=16E", "l2-cache-size=15.99999999999999999E", "l2-cache-size=1.5",
    "l2-cache-size=1.0", "l2-cache-size=1.5M", "l2-cache-size= 1M", "l2-cache-size=1M ",
    "l2-cache-size=+1M", "l2-cache-size=1.5B", "l2-cache-size=.5K", "l2-cache-size=1KB",
    "l2-cache-size=0x1.5M", "l2-cache-size=1b", "l2-cache-size=100T", "l2-cache-size=0",
    "refcount-cache-size=", "refcount-cache-size=1", "refcount-cache-size=2M",
    "cache-size=1k", "cache-size=0", "cache-size=64M",
    /* combinations */
    "cache-size=1M,l2-cache-size=2M", "cache-size=1M,refcount-cache-size=2M",
    "cache-size=1M,l2-cache-size=512k,refcount-cache-size=256k",
    "cache-size=1M,l2-cache-size=1M", "cache-size=1M,refcount-cache-size=1M",
    "l2-cache-size=1M,refcount-cache-size=1M",
    /* entry sizes */
    "l2-cache-entry-size=1000", "l2-cache-entry-size=256", "l2-cache-entry-size=128k",
    "l2-cache-entry-size=4k", "l2-cache-entry-size=512", "l2-cache-entry-size=64k",
    "l2-cache-entry-size=0", "l2-cache-entry-size=x",
    "l2-cache-size=8k,l2-cache-entry-size=1k",
    /* seconds */
    "cache-clean-interval=-1", "cache-clean-interval=abc", "cache-clean-interval=5000000000",
    "cache-clean-interval=4294967295", "cache-clean-interval=4294967296",
    "cache-clean-interval=0x10", "cache-clean-interval=010", "cache-clean-interval=08",
    "cache-clean-interval=1.5", "cache-clean-interval=99999999999999999999",
    "cache-clean-interval=-5", "cache-clean-interval=0", "cache-clean-interval=1 ",
    "cache-clean-interval=",
};

/* Accepted here, refused by qemu-img (see the top). */
static const char *const differs[] = { "refcount-cache-size=100T" };

/* qemu-img's verdict: 0 and "" when it opens, else 1 and its message. */
static int qemu_verdict(const char *img, const char *opts, char *msg, size_t len)
{
    char cmd[8192], out[4096] = "";
    size_t n = 0;
    FILE *p;

    snprintf(cmd, sizeof(cmd), "qemu-img info --image-opts 'driver=qcow2,file.filename=%s,%s' "
             "2>&1 >/dev/null", img, opts);
    if (!(p = popen(cmd, "r")))
        return -1;
    n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    while (n > 0 && out[n - 1] == '\n')
        out[--n] = '\0';
    const char *m = strstr(out, "': ");
    snprintf(msg, len, "%s", m ? m + 3 : out);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}

/* fastqcow's verdict on the same list of key=value pairs. */
static int our_verdict(const char *img, const char *opts, char *msg, size_t len)
{
    struct fq_open_opts o;
    struct fq_image *im;
    char err[FQ_ERR_MAX] = "", list[1024];
    int r = 0;

    fq_open_opts_init(&o);
    o.readonly = 1;
    snprintf(list, sizeof(list), "%s", opts);
    for (char *kv = strtok(list, ","); kv && r == 0; kv = strtok(NULL, ",")) {
        char *eq = strchr(kv, '=');
        if (!eq)
            return -1;
        *eq = '\0';
        r = fq_open_opts_set(&o, kv, eq + 1, err);
    }
    /* a trailing empty value ("key=") is a pair strtok keeps */
    if (r == 0 && (r = fq_open(img, &o, &im, err)) == 0)
        fq_close(im);
    snprintf(msg, len, "%s", r == 0 ? "" : err);
    return r == 0 ? 0 : 1;
}

int main(void)
{
    tl_name = "test-cache-opts";
    if (!tl_have("qemu-img")) {
        TL_MSG("qemu-img missing: skipped");
        return TL_SKIP;
    }
    tl_mkdir();
    const char *img = tl_path("t.qcow2");
    if (tl_create_image(img, "qcow2", 1ull << 30, 0, 0) < 0)
        return 1;
    int agree = 0;
    for (size_t i = 0; i < NELEMS(cases); i++) {
        char qm[4096], fm[4096];
        int q = qemu_verdict(img, cases[i], qm, sizeof(qm));
        int f = our_verdict(img, cases[i], fm, sizeof(fm));
        TL_CHECK(q == f && !strcmp(qm, fm), "%s: qemu-img %s '%s', fastqcow %s '%s'", cases[i],
                 q ? "refuses" : "accepts", qm, f ? "refuses" : "accepts", fm);
        agree += q == f && !strcmp(qm, fm);
    }
    for (size_t i = 0; i < NELEMS(differs); i++) {
        char qm[4096], fm[4096];
        int q = qemu_verdict(img, differs[i], qm, sizeof(qm));
        int f = our_verdict(img, differs[i], fm, sizeof(fm));
        TL_CHECK(q == 1 && f == 0, "%s: qemu-img %s '%s', fastqcow %s '%s'", differs[i],
                 q ? "refuses" : "accepts", qm, f ? "refuses" : "accepts", fm);
    }
    printf("test-cache-opts: %d of %zu cases as qemu-img\n", agree, NELEMS(cases));
    return tl_failures ? 1 : 0;
}
