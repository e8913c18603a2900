/* depth.c: how many operations to keep in flight, chosen by measurement
 * (fq_depth_*, fastqcow.h; the qcow2 driver uses it for the extents in
 * flight per request, the tools and exports for requests in flight).
 *
 * The depths tried are powers of two (1 to 128). Throughput is measured
 * in windows of completed operations, as bytes per second of busy time
 * (time with at least one operation in flight, so that a client's pauses
 * do not count against a depth), and kept per depth as a moving average.
 * The depth used is the smallest whose throughput is within a few percent
 * of the best seen: beyond it, more in flight only adds latency. A window
 * whose work never filled its depth (a request of 16 pieces under a limit
 * of 64) measured the depth it did reach: its figure is credited to that
 * depth, and no deeper one is tried from there, since the work cannot use
 * it (deeper levels would only collect noise). A depth
 * next to it whose throughput is not known yet is tried for one window;
 * once all are known, one window in eight tries a neighbour (alternately
 * above and below), so that the choice follows the device when it speeds
 * up or slows down. A forced depth (fixed) never changes.
 * SPDX-License-Identifier: MIT
 */
#include "core/core.h"
#include "util.h"

#define LEVELS 8                 /* depths 1, 2, 4, ... 128 */
#define START_LEVEL 4            /* 16: the best fixed value measured on disk */
#define NEAR_BEST 0.94           /* within 6% of the best counts as the best */
#define PROBE_EVERY 8            /* windows between probes once settled */

struct fq_depth {
    unsigned fixed;              /* forced depth, 0 = adaptive */
    unsigned lo, hi;             /* levels allowed */
    unsigned cur;                /* level in use this window */
    unsigned home;               /* level chosen */
    unsigned inflight;
    unsigned peak;               /* most in flight in this window */
    bool full[LEVELS];           /* the last window at this level filled it */
    unsigned cap;                /* the deepest level the work filled when
                                    given more (LEVELS: none seen) */
    uint64_t busy_since;         /* when inflight last went from 0 to 1 */
    uint64_t busy_ns;            /* busy time in this window so far */
    uint64_t bytes;
    unsigned ops;
    unsigned windows;
    bool probe_up;
    double rate[LEVELS];         /* bytes per busy ns, moving average; 0 = unknown */
    uint64_t (*clock)(void *);   /* the time (tests simulate devices) */
    void *clock_arg;
};

static uint64_t real_clock(void *arg)
{
    return fq_now_ns();
}

void fq_depth_set_clock(struct fq_depth *d, uint64_t (*clock)(void *), void *arg)
{
    d->clock = clock;
    d->clock_arg = arg;
}

static unsigned level_of(unsigned depth)
{
    unsigned l = 0;

    while (l + 1 < LEVELS && (2u << l) <= depth)
        l++;
    return l;
}

int fq_depth_new(unsigned fixed, unsigned max, struct fq_depth **out)
{
    struct fq_depth *d = calloc(1, sizeof(*d));

    if (!d)
        return -ENOMEM;
    d->fixed = fixed;
    d->lo = 0;
    d->hi = max ? level_of(max) : LEVELS - 1;
    d->home = d->cur = FQ_MIN((unsigned)START_LEVEL, d->hi);
    d->cap = LEVELS;
    d->clock = real_clock;
    *out = d;
    return 0;
}

void fq_depth_free(struct fq_depth *d)
{
    free(d);
}

unsigned fq_depth_limit(const struct fq_depth *d)
{
    if (!d)
        return 16;
    return d->fixed ? d->fixed : 1u << d->cur;
}

void fq_depth_start(struct fq_depth *d)
{
    if (!d || d->fixed)
        return;
    if (d->inflight++ == 0)
        d->busy_since = d->clock(d->clock_arg);
    if (d->inflight > d->peak)
        d->peak = d->inflight;
}

/* Operations a window counts at level l: enough to see the depth at work. */
static unsigned window_ops(unsigned l)
{
    return FQ_MIN(FQ_MAX(4u << l, 32u), 512u);
}

/* The level to use next, from what is known. */
static unsigned choose(struct fq_depth *d)
{
    double best = 0;

    for (unsigned l = d->lo; l <= d->hi; l++)
        best = FQ_MAX(best, d->rate[l]);
    for (unsigned l = d->lo; l <= d->hi; l++)
        if (d->rate[l] > 0 && d->rate[l] >= best * NEAR_BEST) {
            d->home = l;
            break;
        }
    /* deeper only if the work filled the depth chosen; at once only if no
     * deeper window has shown that the work stops short of it (the
     * periodic probe still goes, to see the work change) */
    bool up = d->home < d->hi && d->full[d->home];
    /* an unknown neighbour is tried at once */
    if (up && d->cap > d->home && d->rate[d->home + 1] == 0)
        return d->home + 1;
    if (d->home > d->lo && d->rate[d->home - 1] == 0)
        return d->home - 1;
    if (d->windows % PROBE_EVERY == 0) {
        d->probe_up = !d->probe_up;
        if (d->probe_up && up)
            return d->home + 1;
        if (!d->probe_up && d->home > d->lo)
            return d->home - 1;
    }
    return d->home;
}

void fq_depth_end(struct fq_depth *d, uint64_t bytes)
{
    if (!d || d->fixed)
        return;
    uint64_t now = 0;
    if (d->inflight && --d->inflight == 0) {
        now = d->clock(d->clock_arg);
        d->busy_ns += now - d->busy_since;
    }
    d->bytes += bytes;
    if (++d->ops < window_ops(d->cur))
        return;
    if (d->inflight) {
        now = now ? now : d->clock(d->clock_arg);
        d->busy_ns += now - d->busy_since;
        d->busy_since = now;
    }
    /* a window that never filled its depth measured the one it reached */
    unsigned lvl = d->peak >= (1u << d->cur) ? d->cur : level_of(FQ_MAX(d->peak, 1u));
    lvl = FQ_MAX(lvl, d->lo);
    d->full[d->cur] = lvl == d->cur;
    if (lvl < d->cur)
        d->cap = lvl;
    else if (d->cur > d->cap)
        d->cap = LEVELS;
    if (d->busy_ns > 0 && d->bytes > 0) {
        double r = (double)d->bytes / (double)d->busy_ns;
        double *m = &d->rate[lvl];
        *m = *m > 0 ? 0.6 * *m + 0.4 * r : r;
    }
    d->peak = d->inflight;
    d->bytes = 0;
    d->busy_ns = 0;
    d->ops = 0;
    d->windows++;
    d->cur = choose(d);
}
