/* threads.c: a pool of worker threads running blocking syscalls.
 * Workers take operations from a locked queue, run fq_aio_exec, and put
 * them on a completion queue; an eventfd wakes the context thread, which
 * alone calls the completion callbacks.
 * SPDX-License-Identifier: MIT
 */
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "engine/engine.h"
#include "util.h"

#define THREADS_MAX 64

struct threads_priv {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct fq_aio *todo, **todo_tail;
    struct fq_aio *done, **done_tail;
    int efd;
    int stop;
    unsigned nthreads, idle;
    pthread_t th[THREADS_MAX];
};

static void *worker(void *arg)
{
    struct threads_priv *p = arg;

    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (!p->todo && !p->stop) {
            p->idle++;
            pthread_cond_wait(&p->cond, &p->lock);
            p->idle--;
        }
        if (!p->todo && p->stop)
            break;
        struct fq_aio *a = p->todo;
        p->todo = a->next;
        if (!p->todo)
            p->todo_tail = &p->todo;
        pthread_mutex_unlock(&p->lock);
        a->res = a->is_poll ? fq_aio_poll_exec(a->fd, a->poll_events)
                            : fq_aio_exec(a->op, a->fd, a->off, a->len, a->iov, a->iovcnt);
        pthread_mutex_lock(&p->lock);
        a->next = NULL;
        *p->done_tail = a;
        p->done_tail = &a->next;
        uint64_t one = 1;
        if (write(p->efd, &one, sizeof(one)) < 0) {
            /* the counter cannot overflow in practice; wait() polls anyway */
        }
    }
    pthread_mutex_unlock(&p->lock);
    return NULL;
}

static void threads_fini(struct fq_engine *e)
{
    struct threads_priv *p = e->priv;

    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i < p->nthreads; i++)
        pthread_join(p->th[i], NULL);
    close(p->efd);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    free(p);
    e->priv = NULL;
}

static int threads_init(struct fq_engine *e, char *err)
{
    struct threads_priv *p = calloc(1, sizeof(*p));

    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->todo_tail = &p->todo;
    p->done_tail = &p->done;
    p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->efd < 0) {
        int r = -errno;
        fq_seterr(err, "eventfd: %s", strerror(errno));
        free(p);
        return r;
    }
    e->priv = p;
    return 0;
}

/* Threads are started lazily, one more whenever work waits and none is idle. */
static void threads_submit(struct fq_engine *e, struct fq_aio *aio)
{
    struct threads_priv *p = e->priv;

    pthread_mutex_lock(&p->lock);
    aio->next = NULL;
    *p->todo_tail = aio;
    p->todo_tail = &aio->next;
    if (p->idle == 0 && p->nthreads < THREADS_MAX) {
        if (pthread_create(&p->th[p->nthreads], NULL, worker, p) == 0)
            p->nthreads++;
    }
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static void threads_kick(struct fq_engine *e)
{
}

static int threads_wait(struct fq_engine *e, int timeout_ms)
{
    struct threads_priv *p = e->priv;
    struct fq_aio *list;
    uint64_t cnt;

    /* Reset the eventfd before taking the list: a completion queued after
     * that leaves it readable, so a poll() on it (here or in the context's
     * loop) never sleeps over a finished operation. */
    if (read(p->efd, &cnt, sizeof(cnt)) < 0) {
        /* EAGAIN: nothing signalled since the last read */
    }
    pthread_mutex_lock(&p->lock);
    list = p->done;
    p->done = NULL;
    p->done_tail = &p->done;
    pthread_mutex_unlock(&p->lock);
    if (!list && timeout_ms != 0) {
        struct pollfd pfd = { .fd = p->efd, .events = POLLIN };
        if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)
            return -errno;
        pthread_mutex_lock(&p->lock);
        list = p->done;
        p->done = NULL;
        p->done_tail = &p->done;
        pthread_mutex_unlock(&p->lock);
    }
    return fq_engine_complete_list(e, list);
}

static int threads_fd(struct fq_engine *e)
{
    return ((struct threads_priv *)e->priv)->efd;
}

const struct fq_engine_ops fq_engine_threads_ops = {
    .name = "threads",
    .init = threads_init,
    .fini = threads_fini,
    .submit = threads_submit,
    .kick = threads_kick,
    .wait = threads_wait,
    .fd = threads_fd,
};
