/* taskpool.c: see taskpool.h.
 * SPDX-License-Identifier: MIT
 */
#include "taskpool.h"

void fq_pool_init(struct fq_taskpool *p, unsigned max)
{
    p->max = max ? max : FQ_DEFAULT_WORKERS;
    p->busy = 0;
    p->err = 0;
}

bool fq_pool_can_start(const struct fq_taskpool *p)
{
    return p->busy < p->max && p->err == 0;
}

void fq_pool_start(struct fq_taskpool *p)
{
    p->busy++;
}

void fq_pool_end(struct fq_taskpool *p, int ret)
{
    p->busy--;
    if (ret < 0 && p->err == 0)
        p->err = ret;
}

void fq_pool_fail(struct fq_taskpool *p, int ret)
{
    if (ret < 0 && p->err == 0)
        p->err = ret;
}

bool fq_pool_idle(const struct fq_taskpool *p)
{
    return p->busy == 0;
}
