/* common/image.c: images as the qemu-img compatible subcommands open them
 * (image.h): open and close with the tool's messages, and the names qemu
 * gives backing files.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "image.h"

struct fq_image *img_open(const char *file, const struct fq_open_opts *o)
{
    char err[FQ_ERR_MAX] = "";
    struct fq_image *img;
    int r = fq_open(file, o, &img, err);

    if (r == 0)
        return img;
    if (err[0])
        tool_error("%s", err);
    else
        tool_error("Could not open '%s': %s", file, strerror(-r));
    return NULL;
}

int img_close(struct fq_image *img, int r)
{
    int cr = fq_close(img);

    if (r == 0 && cr < 0) {
        tool_error("Could not flush the image: %s", strerror(-cr));
        r = cr;
    }
    return r;
}

void img_path_combine(const char *base, const char *rel, char *out, size_t n)
{
    const char *slash = strrchr(base, '/');

    if (rel[0] == '/' || !slash)
        snprintf(out, n, "%s", rel);
    else
        snprintf(out, n, "%.*s%s", (int)(slash - base + 1), base, rel);
}
