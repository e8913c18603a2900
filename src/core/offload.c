/* offload.c: see offload.h.
 *
 * Workers take jobs from a locked queue and put finished ones on a done
 * queue, then bump an eventfd. While jobs are outstanding the pool keeps
 * one poll operation on that eventfd in the engine; its completion drains
 * the done queue on the context's thread and re-arms the poll if jobs
 * remain. Outstanding jobs count as engine work, so fq_ctx_run waits for
 * them like for any I/O.
 * SPDX-License-Identifier: MIT
 */
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/ctx.h"
#include "offload.h"
#include "util.h"

#define OFFLOAD_MAX_THREADS 16

struct fq_offload {
    struct fq_ctx *ctx;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct fq_job *todo, **todo_tail;
    struct fq_job *done, **done_tail;
    unsigned nthreads, idle, outstanding;
    bool stop, armed;
    int efd;
    struct fq_aio poll;
    struct fq_ctx_fini fini;
    pthread_t th[OFFLOAD_MAX_THREADS];
};

static void *worker(void *arg)
{
    struct fq_offload *o = arg;

    pthread_mutex_lock(&o->lock);
    for (;;) {
        while (!o->todo && !o->stop) {
            o->idle++;
            pthread_cond_wait(&o->cond, &o->lock);
            o->idle--;
        }
        if (!o->todo)
            break;
        struct fq_job *j = o->todo;
        o->todo = j->next;
        if (!o->todo)
            o->todo_tail = &o->todo;
        pthread_mutex_unlock(&o->lock);
        j->run(j);
        pthread_mutex_lock(&o->lock);
        j->next = NULL;
        *o->done_tail = j;
        o->done_tail = &j->next;
        uint64_t one = 1;
        if (write(o->efd, &one, sizeof(one)) < 0) {
            /* cannot fail short of a counter overflow */
        }
    }
    pthread_mutex_unlock(&o->lock);
    return NULL;
}

static void arm(struct fq_offload *o);

/* The eventfd became readable: run the done callbacks of finished jobs. */
static void poll_done(struct fq_aio *aio)
{
    struct fq_offload *o = (struct fq_offload *)((char *)aio - offsetof(struct fq_offload, poll));
    uint64_t v;

    o->armed = false;
    if (read(o->efd, &v, sizeof(v)) < 0) {
        /* spurious wake-up: nothing to read */
    }
    pthread_mutex_lock(&o->lock);
    struct fq_job *list = o->done;
    o->done = NULL;
    o->done_tail = &o->done;
    pthread_mutex_unlock(&o->lock);
    while (list) {
        struct fq_job *j = list;
        list = j->next;
        o->outstanding--;
        j->done(j);
    }
    if (o->outstanding)
        arm(o);
}

static void arm(struct fq_offload *o)
{
    if (o->armed)
        return;
    memset(&o->poll, 0, sizeof(o->poll));
    o->poll.is_poll = true;
    o->poll.fd = o->efd;
    o->poll.done = poll_done;
    o->armed = true;
    fq_ctx_submit(o->ctx, &o->poll);
}

/* Stop the workers: the context is being freed, no job is in flight. */
static void offload_free(void *opaque)
{
    struct fq_offload *o = opaque;

    pthread_mutex_lock(&o->lock);
    o->stop = true;
    pthread_cond_broadcast(&o->cond);
    pthread_mutex_unlock(&o->lock);
    for (unsigned i = 0; i < o->nthreads; i++)
        pthread_join(o->th[i], NULL);
    close(o->efd);
    pthread_mutex_destroy(&o->lock);
    pthread_cond_destroy(&o->cond);
    free(o);
}

static struct fq_offload *create(struct fq_ctx *ctx)
{
    struct fq_offload *o = calloc(1, sizeof(*o));

    if (!o)
        return NULL;
    o->ctx = ctx;
    o->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (o->efd < 0) {
        free(o);
        return NULL;
    }
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->cond, NULL);
    o->todo_tail = &o->todo;
    o->done_tail = &o->done;
    fq_ctx_at_free(ctx, &o->fini, offload_free, o);
    return o;
}

int fq_offload_submit(struct fq_ctx *ctx, struct fq_job *job)
{
    struct fq_offload *o = ctx->offload;

    if (!o && !(o = ctx->offload = create(ctx)))
        return -ENOMEM;
    pthread_mutex_lock(&o->lock);
    if (o->idle == 0 && o->nthreads < OFFLOAD_MAX_THREADS) {
        if (pthread_create(&o->th[o->nthreads], NULL, worker, o) == 0)
            o->nthreads++;
        else if (o->nthreads == 0) {
            pthread_mutex_unlock(&o->lock);
            return -EAGAIN;
        }
    }
    job->next = NULL;
    *o->todo_tail = job;
    o->todo_tail = &job->next;
    o->outstanding++;
    pthread_cond_signal(&o->cond);
    pthread_mutex_unlock(&o->lock);
    arm(o);
    return 0;
}
