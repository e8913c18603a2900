/* test-lock-api.c: image locks inside one process, where a test can look at
 * them while the process goes on: fq_open holds the bytes QEMU's programs
 * hold (read-write, read-only, forced share, backing files), fq_close and
 * every failed open (a missing backing file, a header cut short, a
 * conflicting holder) leave none behind, a second open in the same
 * process conflicts like another process, fq_create never empties an
 * image that is open, and force_share with a read-write open is refused.
 * SPDX-License-Identifier: MIT
 */
#include <fcntl.h>

#include "testlib.h"
#include "fastqcow.h"

static int failures;

#define FAIL(...)                                                              \
    do {                                                                       \
        fprintf(stderr, "test-lock-api: FAIL: " __VA_ARGS__);                 \
        fputc('\n', stderr);                                                   \
        failures++;                                                            \
    } while (0)

/* The lock bytes others hold on `path` (bit b: byte 100 + b, bit 8 + b:
 * byte 200 + b), seen from an open file description of our own. */
static unsigned held(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    unsigned m = 0;

    if (fd < 0)
        return 0x8000;
    for (int b = 0; b < 8; b++) {
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET,
                            .l_start = b < 4 ? 100 + b : 200 + b - 4, .l_len = 1 };
        if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
            m |= 0x4000;
            break;
        }
        if (fl.l_type != F_UNLCK)
            m |= 1u << b;
    }
    close(fd);
    return m;
}

/* Bits of held(): what a writer, a reader and a forced share hold. */
#define CR 0x01u
#define W 0x02u
#define RS 0x08u
#define NO_W 0x20u
#define NO_RS 0x80u
#define WRITER (CR | W | RS | NO_W | NO_RS)
#define READER (CR | NO_W | NO_RS)
#define SHARED CR

static int open_img(const char *path, int readonly, int force_share, struct fq_image **img, char *err)
{
    struct fq_open_opts o;

    fq_open_opts_init(&o);
    o.readonly = readonly;
    o.force_share = force_share;
    o.engine = FQ_ENGINE_SYNC;
    err[0] = '\0';
    return fq_open(path, &o, img, err);
}

static int create_img(const char *path, const char *backing, char *err)
{
    struct fq_create_opts c;

    fq_create_opts_init(&c);
    c.size = 1 << 20;
    c.backing_file = backing;
    c.backing_format = backing ? "qcow2" : NULL;
    return fq_create(path, &c, err);
}

static void expect(const char *what, const char *path, unsigned want)
{
    unsigned m = held(path);

    if (m & 0x4000) {
        fprintf(stderr, "test-lock-api: SKIP: no OFD locks on this file system\n");
        exit(TL_SKIP);
    }
    if (m != want)
        FAIL("%s: lock bytes 0x%02x held, 0x%02x expected", what, m, want);
}

int main(void)
{
    char err[FQ_ERR_MAX];
    struct fq_image *a, *b;
    const char *dir;
    int r;

    tl_name = "test-lock-api";
    dir = tl_mkdir();
    (void)dir;
    char img[4300], base[4300], top[4300], orphan[4300], cut[4300];
    snprintf(img, sizeof(img), "%s", tl_path("img.qcow2"));
    snprintf(base, sizeof(base), "%s", tl_path("base.qcow2"));
    snprintf(top, sizeof(top), "%s", tl_path("top.qcow2"));
    snprintf(orphan, sizeof(orphan), "%s", tl_path("orphan.qcow2"));
    snprintf(cut, sizeof(cut), "%s", tl_path("cut.qcow2"));
    if (create_img(img, NULL, err) < 0 || create_img(base, NULL, err) < 0 ||
        create_img(top, "base.qcow2", err) < 0) {
        fprintf(stderr, "test-lock-api: create: %s\n", err);
        return 1;
    }

    /* what each open holds, and that close lets go */
    expect("nothing open", img, 0);
    if ((r = open_img(img, 0, 0, &a, err)) < 0) {
        FAIL("read-write open: %s", err);
        return 1;
    }
    expect("read-write open", img, WRITER);
    /* a second open in this process conflicts as another process would */
    r = open_img(img, 0, 0, &b, err);
    if (r != -EAGAIN || !strstr(err, "Failed to get \"write\" lock") ||
        !strstr(err, "Is another process using the image ["))
        FAIL("a second read-write open: %d '%s'", r, err);
    if (r == 0)
        fq_close(b);
    r = open_img(img, 1, 0, &b, err);
    if (r != -EAGAIN || !strstr(err, "Failed to get shared \"write\" lock"))
        FAIL("a read-only open beside a writer: %d '%s'", r, err);
    if (r == 0)
        fq_close(b);
    /* the failed opens left the writer's locks as they were */
    expect("after two refused opens", img, WRITER);
    if ((r = open_img(img, 1, 1, &b, err)) < 0)
        FAIL("a forced-share read beside a writer: %s", err);
    else
        fq_close(b);
    /* creating over an open image is refused, and empties nothing */
    struct stat st0, st1;
    stat(img, &st0);
    r = create_img(img, NULL, err);
    stat(img, &st1);
    if (r != -EAGAIN || !strstr(err, "Failed to get \"write\" lock"))
        FAIL("create over an open image: %d '%s'", r, err);
    if (st0.st_size != st1.st_size || st1.st_size == 0)
        FAIL("create over an open image changed its size: %lld -> %lld",
             (long long)st0.st_size, (long long)st1.st_size);
    if (fq_close(a) < 0)
        FAIL("close");
    expect("after close", img, 0);

    /* read-only opens share; their bytes are a reader's */
    if (open_img(img, 1, 0, &a, err) < 0 || open_img(img, 1, 0, &b, err) < 0) {
        FAIL("two read-only opens: %s", err);
    } else {
        expect("two read-only opens", img, READER);
        fq_close(b);
        r = open_img(img, 0, 0, &b, err);
        if (r != -EAGAIN || !strstr(err, "Failed to get \"write\" lock"))
            FAIL("a writer beside a reader: %d '%s'", r, err);
        if (r == 0)
            fq_close(b);
        fq_close(a);
    }
    expect("after the readers closed", img, 0);

    /* a forced share holds only what it reads with; not for writers */
    if (open_img(img, 1, 1, &a, err) < 0) {
        FAIL("forced share: %s", err);
    } else {
        expect("forced share", img, SHARED);
        if ((r = open_img(img, 0, 0, &b, err)) < 0)
            FAIL("a writer beside a forced share: %s", err);
        else
            fq_close(b);
        fq_close(a);
    }
    r = open_img(img, 0, 1, &a, err);
    if (r != -EINVAL || !strstr(err, "force-share=on can only be used with read-only images"))
        FAIL("force share read-write: %d '%s'", r, err);
    if (r == 0)
        fq_close(a);
    expect("after the forced shares", img, 0);

    /* the backing file of an open overlay is held as a reader holds it */
    if (open_img(top, 0, 0, &a, err) < 0) {
        FAIL("overlay: %s", err);
    } else {
        expect("the overlay", top, WRITER);
        expect("its backing file", base, READER);
        fq_close(a);
    }
    expect("overlay closed", top, 0);
    expect("backing closed", base, 0);

    /* failed opens leave no lock behind */
    if (create_img(orphan, "missing.qcow2", err) < 0)
        FAIL("create orphan: %s", err);
    r = open_img(orphan, 0, 0, &a, err);
    if (r >= 0) {
        FAIL("an overlay without its backing file opened");
        fq_close(a);
    }
    expect("after a failed open (backing file missing)", orphan, 0);
    if (tl_sh("head -c 50 '%s' >'%s'", img, cut) != 0)
        FAIL("cut");
    r = open_img(cut, 0, 0, &a, err);
    if (r >= 0) {
        FAIL("a header cut short opened");
        fq_close(a);
    } else if (!strstr(err, "qcow2 header too short")) {
        FAIL("a header cut short: '%s'", err);
    }
    expect("after a failed open (header too short)", cut, 0);
    /* a refused overlay open releases its own file too */
    if (open_img(base, 0, 0, &b, err) < 0) {
        FAIL("base: %s", err);
    } else {
        r = open_img(top, 0, 0, &a, err);
        if (r != -EAGAIN || !strstr(err, "Failed to get shared \"write\" lock"))
            FAIL("an overlay whose backing file is being written: %d '%s'", r, err);
        if (r == 0)
            fq_close(a);
        expect("the overlay after its refused open", top, 0);
        fq_close(b);
    }
    fprintf(stderr, "test-lock-api: %d failures\n", failures);
    return failures ? 1 : 0;
}
