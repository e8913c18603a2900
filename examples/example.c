/* example.c: the README's library example as a complete program.
 * Usage: example FILE  (creates a 1 GiB qcow2 image, writes, reads back
 * synchronously and asynchronously, and checks the content).
 * SPDX-License-Identifier: MIT
 */
#include <fastqcow.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void done_cb(void *opaque, int ret)
{
    int *result = opaque;

    *result = ret;
}

int main(int argc, char **argv)
{
    char err[FQ_ERR_MAX] = "";
    struct fq_create_opts co;
    struct fq_open_opts oo;
    struct fq_image *img;
    static char buf[1 << 20], a[4096], b[8192];
    int r, result = 1;

    if (argc != 2) {
        fprintf(stderr, "usage: %s FILE\n", argv[0]);
        return 2;
    }
    fq_create_opts_init(&co);
    co.size = 1ull << 30;
    if (fq_create(argv[1], &co, err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    fq_open_opts_init(&oo);
    if (fq_open(argv[1], &oo, &img, err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (char)(i * 7);
    if ((r = fq_pwrite(img, buf, sizeof(buf), 65536)) < 0) {
        fprintf(stderr, "write: %s\n", strerror(-r));
        return 1;
    }
    /* read 12000 bytes at guest offset 65536 + 100 into two buffers,
     * starting 100 bytes into the iovec array */
    struct iovec iov[2] = { { a, sizeof(a) }, { b, sizeof(b) } };
    r = fq_aio_preadv(img, iov, 2, 100, 12000, 65536 + 100, done_cb, &result);
    while (r == 0 && fq_ctx_inflight(fq_image_ctx(img)))
        r = fq_ctx_run(fq_image_ctx(img), 1, -1) < 0 ? -1 : 0;
    if (r < 0 || result != 0) {
        fprintf(stderr, "aio read failed\n");
        return 1;
    }
    for (size_t i = 0; i < 12000; i++) {
        char got = i + 100 < sizeof(a) ? a[i + 100] : b[i + 100 - sizeof(a)];
        if (got != buf[100 + i]) {
            fprintf(stderr, "mismatch at %zu\n", i);
            return 1;
        }
    }
    if ((r = fq_flush(img)) < 0 || (r = fq_close(img)) < 0) {
        fprintf(stderr, "flush/close: %s\n", strerror(-r));
        return 1;
    }
    printf("ok\n");
    return 0;
}
