/* session.c: the FUSE session of `fastqcow mount` and its loop.
 *
 * One thread, one loop: the context's (fq_ctx_run). The FUSE device (made
 * non-blocking) and a signalfd are watched from it with fq_watch; when the
 * device is readable, requests are read (one read each) and dispatched
 * until it would block, each into a free slot; the aio calls they make go
 * to the kernel together when the callback returns. Replies are written
 * from the completion callbacks, in any order.
 *
 * Bounded memory: FQ_MOUNT_SLOTS slots, each with one buffer of the
 * largest request; the device is not read while no slot is free (the
 * kernel holds the requests), so a burst waits instead of growing memory.
 * Long reads (and long O_DIRECT writes) borrow a buffer in huge pages (at
 * most FQ_MOUNT_RBUFS, mount_rbuf_get), given back with the slot.
 *
 * Requests that need an idle image (resizing, --growable) wait in a queue:
 * the device is not read while one waits; once no aio call is in flight
 * they run one at a time from the loop, outside any callback.
 *
 * Ending: an unmount (fusermount3 -u, umount, `fastqcow umount`) makes the
 * device return ENODEV; SIGTERM, SIGINT or SIGHUP stop reading it. Either
 * way the aio calls in flight complete and are answered, the file is
 * unmounted (if still mounted), and the image is flushed and closed.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "mount.h"
#include "../common/bufpool.h"
#include "../common/cli.h"

static size_t slot_bytes;  /* buffer of a slot */
static size_t recv_off;    /* where a request is read into it */

/* Route libfuse's messages through the tool's "fastqcow: " prefix. */
static void fuse_log_fn(enum fuse_log_level level, const char *fmt, va_list ap)
{
    char line[1024];

    if (level > FUSE_LOG_ERR)
        return;
    vsnprintf(line, sizeof(line), fmt, ap);
    size_t n = strlen(line);
    while (n && line[n - 1] == '\n')
        line[--n] = 0;
    tool_error("%s", line);
}

/* Choose the slot layout: a write's data (after the 80 bytes of FUSE
 * headers) starts page-aligned, so the image can take it for O_DIRECT
 * without a bounce; a read's data goes to the start of the buffer. */
static void slots_layout(void)
{
    size_t page = (size_t)getpagesize();
    size_t hdr = sizeof(struct fuse_in_header) + sizeof(struct fuse_write_in);

    recv_off = page - hdr;
    /* libfuse reads up to 256 pages of data plus one page of headers */
    slot_bytes = recv_off + mount_max_io() + page;
}

size_t mount_max_io(void)
{
    return 256 * (size_t)getpagesize();
}

/* Pause the device watch unless a request can be read now. */
static void update_dev_watch(struct mnt *m)
{
    bool want = !m->stopping && m->free && !m->wait_head;

    if (!m->dev_watch || want == !m->dev_paused)
        return;
    if (fq_watch_modify(m->dev_watch, want ? POLLIN : 0) == 0)
        m->dev_paused = !want;
}

struct mslot *mount_keep_slot(struct mnt *m, fuse_req_t req)
{
    struct mslot *s = m->cur;

    m->cur_kept = true;
    s->req = req;
    s->op = MOP_NONE;
    return s;
}

char *mount_rbuf_get(struct mnt *m)
{
    /* the pool carves them two per 2 MiB slab (with 4 KiB pages) */
    char *b = m->rbuf_lent < FQ_MOUNT_RBUFS ? bufpool_get(m->pool, mount_max_io()) : NULL;

    m->rbuf_lent += b != NULL;
    return b;
}

void mount_release_slot(struct mslot *s)
{
    struct mnt *m = s->m;

    if (s->rbuf) {
        bufpool_put(m->pool, s->rbuf, mount_max_io());
        m->rbuf_lent--;
        s->rbuf = NULL;
    }
    s->req = NULL;
    s->next = m->free;
    m->free = s;
    m->busy--;
    update_dev_watch(m);
}

void mount_wait_idle(struct mslot *s)
{
    struct mnt *m = s->m;

    s->next = NULL;
    *m->wait_tail = s;
    m->wait_tail = &s->next;
    update_dev_watch(m);
}

/* Run the requests that wait for an idle image, while it is idle. */
static void run_waiting(struct mnt *m)
{
    while (m->wait_head && m->io_inflight == 0) {
        struct mslot *s = m->wait_head;
        m->wait_head = s->next;
        if (!m->wait_head)
            m->wait_tail = &m->wait_head;
        mount_run_waiting(s);
    }
    update_dev_watch(m);
}

/* Stop reading requests; the loop ends once the image is idle. */
static void begin_stop(struct mnt *m)
{
    if (m->stopping)
        return;
    m->stopping = true;
    if (m->dev_watch) {
        fq_watch_stop(m->dev_watch);
        m->dev_watch = NULL;
    }
}

/* Once INIT is answered (the kernel has then capped the readahead at what
 * it offered), raise the file's readahead through sysfs. Never stat()s the
 * mount point: that would wait for this very thread. */
static void tune_readahead(struct mnt *m)
{
    char dev[64], path[128];

    m->tuned = true;
    if (mount_find(m->mountpoint, NULL, 0, dev, sizeof(dev)) <= 0)
        return;
    snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return; /* not root: the kernel's default stays */
    char v[32];
    int n = snprintf(v, sizeof(v), "%d\n", FQ_MOUNT_READAHEAD_KB);
    if (write(fd, v, (size_t)n) != n) {
        /* the default stays */
    }
    close(fd);
}

/* The device is readable: read and dispatch requests until it would
 * block or no slot is free. */
static void dev_ready(void *opaque, int revents)
{
    struct mnt *m = opaque;

    if (revents < 0) {
        tool_error("polling the FUSE device: %s", strerror(-revents));
        m->exit_code = 1;
        begin_stop(m);
        return;
    }
    while (!m->stopping && m->free && !m->wait_head) {
        struct mslot *s = m->free;
        if (!s->base) {
            s->base = aligned_alloc((size_t)getpagesize(),
                                    (slot_bytes + (size_t)getpagesize() - 1) /
                                    (size_t)getpagesize() * (size_t)getpagesize());
            if (!s->base) {
                tool_error("out of memory for a request buffer");
                m->exit_code = 1;
                begin_stop(m);
                return;
            }
        }
        struct fuse_buf fb = { .mem = s->base + recv_off };
        int r = fuse_session_receive_buf(m->se, &fb);
        if (fuse_session_exited(m->se)) {
            m->unmounted = true;
            begin_stop(m);
            return;
        }
        if (r == -EAGAIN || r == -EINTR)
            break;
        if (r < 0) {
            tool_error("reading the FUSE device: %s", strerror(-r));
            m->exit_code = 1;
            begin_stop(m);
            return;
        }
        if (r == 0)
            continue;
        m->free = s->next;
        m->busy++;
        m->cur = s;
        m->cur_kept = false;
        fuse_session_process_buf(m->se, &fb);
        m->cur = NULL;
        if (!m->cur_kept) {
            s->next = m->free;
            m->free = s;
            m->busy--;
        }
        if (m->got_init && !m->tuned)
            tune_readahead(m);
    }
    update_dev_watch(m);
}

/* SIGTERM, SIGINT, SIGHUP: finish what is in flight and end. */
static void sig_ready(void *opaque, int revents)
{
    struct mnt *m = opaque;
    struct signalfd_siginfo si;

    (void)revents;
    while (read(m->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        ;
    begin_stop(m);
}

/* Build the session and mount it on m->mountpoint. */
static int session_mount(struct mnt *m)
{
    const struct mount_opts *o = m->o;
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    char *opts = NULL;
    int r = -1;

    /* fsname=IMAGE: the mount table names the image served */
    char *abs = realpath(o->image, NULL);
    char *fsname = NULL;
    int n = asprintf(&fsname, "fsname=%s", abs ? abs : o->image);
    free(abs);
    if (n < 0)
        fsname = NULL;
    if (!fsname || fuse_opt_add_arg(&args, "fastqcow") < 0 ||
        fuse_opt_add_opt(&opts, "subtype=fastqcow,default_permissions") < 0 ||
        fuse_opt_add_opt_escaped(&opts, fsname) < 0)
        goto out;
    if ((o->readonly && fuse_opt_add_opt(&opts, "ro") < 0) ||
        (o->allow_other && fuse_opt_add_opt(&opts, "allow_other") < 0))
        goto out;
    if (fuse_opt_add_arg(&args, "-o") < 0 || fuse_opt_add_arg(&args, opts) < 0)
        goto out;
    m->se = fuse_session_new(&args, &mount_ops, sizeof(mount_ops), m);
    if (!m->se)
        goto out;
    if (fuse_session_mount(m->se, m->mountpoint) != 0) {
        fuse_session_destroy(m->se);
        m->se = NULL;
        goto out;
    }
    r = 0;
out:
    free(fsname);
    free(opts);
    fuse_opt_free_args(&args);
    return r;
}

/* Watch the device and the signals from the context's loop. */
static int start_watches(struct mnt *m, const sigset_t *sigs)
{
    int fd = fuse_session_fd(m->se);
    int r;

    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0) {
        tool_error("FUSE device: %s", strerror(errno));
        return -1;
    }
    m->sigfd = signalfd(-1, sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m->sigfd < 0) {
        tool_error("signalfd: %s", strerror(errno));
        return -1;
    }
    r = fq_watch_start(m->ctx, m->sigfd, POLLIN, sig_ready, m, &m->sig_watch);
    if (r == 0)
        r = fq_watch_start(m->ctx, fd, POLLIN, dev_ready, m, &m->dev_watch);
    if (r < 0) {
        tool_error("watching the FUSE device: %s", strerror(-r));
        return -1;
    }
    return 0;
}

/* Unmount (if the kernel has not ended the session), then close. */
static void session_end(struct mnt *m)
{
    if (m->dev_watch) {
        fq_watch_stop(m->dev_watch);
        m->dev_watch = NULL;
    }
    if (m->se) {
        fuse_session_unmount(m->se);
        fuse_session_destroy(m->se);
        m->se = NULL;
    }
}

int mount_serve(const struct mount_opts *o, void (*ready)(void *opaque, int code), void *opaque)
{
    struct mnt *m = calloc(1, sizeof(*m));
    char err[FQ_ERR_MAX] = "";
    sigset_t sigs, old;
    int r, code = 1;

    if (!m) {
        tool_error("out of memory");
        return 1;
    }
    m->o = o;
    m->sigfd = -1;
    if (!(m->pool = bufpool_new(0))) {
        free(m);
        tool_error("out of memory");
        return 1;
    }
    m->wait_tail = &m->wait_head;
    slots_layout();
    for (int i = FQ_MOUNT_SLOTS - 1; i >= 0; i--) {
        m->slots[i].m = m;
        m->slots[i].next = m->free;
        m->free = &m->slots[i];
    }
    fuse_set_log_func(fuse_log_fn);
    /* Blocked before any thread exists, so that they all inherit it and
     * the signals reach the signalfd only. */
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, &old);
    signal(SIGPIPE, SIG_IGN);

    m->mountpoint = realpath(o->file, NULL);
    if (!m->mountpoint) {
        tool_error("%s: %s", o->file, strerror(errno));
        goto out;
    }
    if (stat(m->mountpoint, &m->st) < 0) {
        tool_error("%s: %s", o->file, strerror(errno));
        goto out;
    }
    if (o->readonly)
        m->st.st_mode &= ~(mode_t)0222;
    r = fq_open(o->image, &o->open, &m->img, err);
    if (r == 0 && o->image_opts && fq_blockopts_check_format(&o->spec, fq_format(m->img), err) < 0) {
        fq_close(m->img);
        m->img = NULL;
        r = -EINVAL;
    }
    if (r < 0) {
        if (!strncmp(err, "Could not open", 14))
            tool_error("%s", err);
        else
            tool_error("Could not open '%s': %s", o->image, err[0] ? err : strerror(-r));
        goto out;
    }
    m->ctx = fq_image_ctx(m->img);
    m->size = fq_size(m->img);
    if (session_mount(m) < 0)
        goto out;
    if (start_watches(m, &sigs) < 0)
        goto out;
    if (ready) {
        ready(opaque, 0);
        ready = NULL;
    }
    code = 0;
    for (;;) {
        run_waiting(m);
        if (m->stopping && m->io_inflight == 0 && !m->wait_head)
            break;
        r = fq_ctx_run(m->ctx, 1, -1);
        if (r < 0) {
            tool_error("event loop: %s", strerror(-r));
            m->exit_code = 1;
            break;
        }
    }
    if (m->exit_code)
        code = m->exit_code;
out:
    session_end(m);
    if (o->created && m->mountpoint)
        unlink(m->mountpoint);
    if (m->sig_watch)
        fq_watch_stop(m->sig_watch);
    if (m->sigfd >= 0)
        close(m->sigfd);
    if (m->img) {
        r = fq_close(m->img);
        if (r < 0) {
            tool_error("flushing '%s': %s", o->image, strerror(-r));
            code = 1;
        }
    }
    if (ready)
        ready(opaque, code);
    for (int i = 0; i < FQ_MOUNT_SLOTS; i++)
        free(m->slots[i].base);
    bufpool_free(m->pool);
    free(m->mountpoint);
    free(m);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return code;
}
