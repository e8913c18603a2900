/* probe-verdict.c: for each file named, print "NAME raw", "NAME qcow2" or
 * "NAME err MESSAGE": what fq_open makes of it, probed as `fastqcow info`
 * opens it (read-only, backing file not opened). Used by
 * test-probe-truncated.sh to compare with qemu-img at every length.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include "fastqcow.h"

int main(int argc, char **argv)
{
    struct fq_ctx *ctx;
    char err[FQ_ERR_MAX] = "";

    if (fq_ctx_new(FQ_ENGINE_SYNC, &ctx, err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        struct fq_open_opts o;
        struct fq_image *img;
        fq_open_opts_init(&o);
        o.readonly = 1;
        o.no_backing = 1;
        o.ctx = ctx;
        err[0] = '\0';
        int r = fq_open(argv[i], &o, &img, err);
        if (r < 0) {
            for (char *p = err; *p; p++)
                if (*p == '\n')
                    *p = ' ';
            printf("%s err %s\n", argv[i], err[0] ? err : "(no message)");
            continue;
        }
        printf("%s %s\n", argv[i], fq_format(img));
        fq_close(img);
    }
    fq_ctx_free(ctx);
    return 0;
}
