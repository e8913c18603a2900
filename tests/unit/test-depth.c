/* test-depth.c: the depth controller (fq_depth_*) against simulated
 * devices with a simulated clock: a device that serves P operations at a
 * time, each in S ns, driven by a client that keeps the controller's limit
 * in flight. The controller must settle on P (beyond it more in flight only
 * adds latency; below it throughput is lost), follow P when the device
 * changes in either direction, cost little throughput while it measures,
 * and a forced depth must never move. A second device gains a little
 * past its knee, only very deep: the depth chosen stays at the knee. Work
 * that never fills more than 16 on a noisy device does not send the
 * limit deeper.
 * SPDX-License-Identifier: MIT
 */
#include "core/core.h"
#include "testlib.h"

struct sim {
    uint64_t now;               /* ns */
    unsigned par;               /* operations served at once */
    uint64_t svc;               /* ns per operation */
    double slope;               /* extra throughput per op past par (0..1) */
    unsigned work;              /* the client has at most this many at once (0: any) */
    unsigned noise;             /* +-percent on each wave's time (0: none) */
    uint64_t rng;
    uint64_t bytes;
};

static uint64_t sim_clock(void *arg)
{
    return ((struct sim *)arg)->now;
}

/* One batch: the client starts `limit` operations of 64 KiB; the device
 * completes them in waves. Returns the limit used. */
static unsigned batch(struct fq_depth *d, struct sim *s)
{
    unsigned n = fq_depth_limit(d);
    if (s->work && n > s->work)
        n = s->work;
    unsigned served = s->par + (unsigned)(s->slope * (n > s->par ? n - s->par : 0));

    if (served == 0)
        served = 1;
    for (unsigned i = 0; i < n; i++)
        fq_depth_start(d);
    for (unsigned done = 0; done < n;) {
        unsigned wave = n - done < served ? n - done : served;
        s->now += s->svc;
        if (s->noise) {   /* a device whose waves vary: +-noise% */
            s->rng = s->rng * 6364136223846793005ull + 1442695040888963407ull;
            s->now += s->svc * ((s->rng >> 33) % (2 * s->noise + 1)) / 100;
            s->now -= s->svc * s->noise / 100;
        }
        for (unsigned i = 0; i < wave; i++) {
            fq_depth_end(d, 65536);
            s->bytes += 65536;
        }
        done += wave;
    }
    return n;
}

/* Run batches; returns the limit most used over the last `tail` batches. */
static unsigned settle(struct fq_depth *d, struct sim *s, int nbatches, int tail)
{
    unsigned count[256] = { 0 }, best = 0;

    for (int i = 0; i < nbatches; i++) {
        unsigned n = batch(d, s);
        if (i >= nbatches - tail && n < 256)
            count[n]++;
    }
    for (unsigned v = 1; v < 256; v++)
        if (count[v] > count[best])
            best = v;
    return best;
}

int main(void)
{
    struct fq_depth *d;
    struct sim s = { .now = 1, .par = 8, .svc = 50000 };

    tl_name = "test-depth";
    TL_CHECK(fq_depth_new(0, 0, &d) == 0, "fq_depth_new");
    fq_depth_set_clock(d, sim_clock, &s);
    TL_CHECK(fq_depth_limit(d) == 16, "starts at %u", fq_depth_limit(d));

    /* a device that serves 8 at a time: 8 it is */
    unsigned v = settle(d, &s, 400, 100);
    TL_CHECK(v == 8, "8-wide device: settled on %u", v);

    /* throughput while settled, against the best fixed depth (8): the
     * probes of neighbours cost little */
    uint64_t t0 = s.now, b0 = s.bytes;
    settle(d, &s, 400, 1);
    double ours = (double)(s.bytes - b0) / (double)(s.now - t0);
    struct sim f = s;
    struct fq_depth *fx;
    TL_CHECK(fq_depth_new(8, 0, &fx) == 0, "fixed");
    fq_depth_set_clock(fx, sim_clock, &f);
    t0 = f.now;
    b0 = f.bytes;
    settle(fx, &f, 400, 1);
    double best = (double)(f.bytes - b0) / (double)(f.now - t0);
    TL_CHECK(ours >= 0.93 * best, "throughput %.4f, best fixed %.4f", ours, best);
    TL_CHECK(fq_depth_limit(fx) == 8, "a forced depth moved to %u", fq_depth_limit(fx));
    fq_depth_free(fx);

    /* the device slows to 2 at a time, then speeds up to 32 */
    s.par = 2;
    v = settle(d, &s, 600, 100);
    TL_CHECK(v == 2, "2-wide device: settled on %u", v);
    s.par = 32;
    v = settle(d, &s, 1200, 100);
    TL_CHECK(v == 32, "32-wide device: settled on %u", v);
    fq_depth_free(d);

    /* a knee at 4; past it 3% of each extra operation is served too (a
     * whole one more only from 38 in flight on): the deep gain is under
     * the margin for its latency, so the knee it is */
    struct sim k = { .now = 1, .par = 4, .svc = 50000, .slope = 0.03 };
    TL_CHECK(fq_depth_new(0, 0, &d) == 0, "fq_depth_new");
    fq_depth_set_clock(d, sim_clock, &k);
    v = settle(d, &k, 600, 100);
    TL_CHECK(v == 4 || v == 8, "knee at 4: settled on %u", v);
    fq_depth_free(d);

    /* work that never has more than 16 at once (a 1 MiB request of 64 KiB
     * pieces) on a wide, noisy device: deeper limits cannot change what
     * runs, so they are not wandered into on the noise (the figures of
     * such windows belong to the depth reached) */
    struct sim w = { .now = 1, .par = 64, .svc = 50000, .work = 16, .noise = 45, .rng = 1 };
    TL_CHECK(fq_depth_new(0, 0, &d) == 0, "fq_depth_new");
    fq_depth_set_clock(d, sim_clock, &w);
    settle(d, &w, 200, 1);
    unsigned deeper = 0;
    for (int i = 0; i < 400; i++) {
        batch(d, &w);
        deeper += fq_depth_limit(d) > 16;
    }
    if (getenv("TL_VERBOSE"))
        printf("deeper %u\n", deeper);
    TL_CHECK(deeper <= 400 / 8, "16 at most at once: a deeper limit in %u batches of 400", deeper);
    fq_depth_free(d);

    if (!tl_failures)
        printf("test-depth: ok\n");
    return tl_failures ? 1 : 0;
}
