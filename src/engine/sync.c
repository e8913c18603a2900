/* sync.c: the synchronous engine. Each operation runs to completion
 * inside submit(); its callback is queued and delivered by wait(), so the
 * callers see the same ordering rules as with the asynchronous engines.
 * SPDX-License-Identifier: MIT
 */
#include "engine/engine.h"
#include "util.h"

struct sync_priv {
    struct fq_aio *head, **tail;
};

static int sync_init(struct fq_engine *e, char *err)
{
    struct sync_priv *p = calloc(1, sizeof(*p));

    if (!p)
        return -ENOMEM;
    p->tail = &p->head;
    e->priv = p;
    return 0;
}

static void sync_fini(struct fq_engine *e)
{
    free(e->priv);
}

static void sync_submit(struct fq_engine *e, struct fq_aio *aio)
{
    struct sync_priv *p = e->priv;

    aio->res = aio->is_poll ? fq_aio_poll_exec(aio->fd, aio->poll_events)
                            : fq_aio_exec(aio->op, aio->fd, aio->off, aio->len, aio->iov, aio->iovcnt);
    aio->next = NULL;
    *p->tail = aio;
    p->tail = &aio->next;
}

static void sync_kick(struct fq_engine *e)
{
}

static int sync_wait(struct fq_engine *e, int timeout_ms)
{
    struct sync_priv *p = e->priv;
    struct fq_aio *list = p->head;

    p->head = NULL;
    p->tail = &p->head;
    return fq_engine_complete_list(e, list);
}

static int sync_fd(struct fq_engine *e)
{
    return -1;
}

const struct fq_engine_ops fq_engine_sync_ops = {
    .name = "sync",
    .init = sync_init,
    .fini = sync_fini,
    .submit = sync_submit,
    .kick = sync_kick,
    .wait = sync_wait,
    .fd = sync_fd,
};
