/* common/image.c: images as the qemu-img compatible subcommands open them
 * (image.h): open and close with the tool's messages, and the names qemu
 * gives backing files (one, or those of a whole chain).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "blockopts.h"
#include "image.h"

struct fq_image *img_open(const char *file, const struct fq_open_opts *o)
{
    char err[FQ_ERR_MAX] = "";
    struct fq_image *img;
    int r = tool_open_image(file, o, &img, err);

    if (r == 0) {
        tool_warn_probed_raw(file, o->format, img, !o->readonly);
        return img;
    }
    /* qemu-img names the file, then gives the reason, which for a file
     * that cannot be opened names it again; reasons the library already
     * gave in that form (a lock held elsewhere, force-share) once */
    const char *why = strerror(-r);
    size_t el = strlen(err), wl = strlen(why);
    bool errno_said = el > wl + 2 && !strcmp(err + el - wl, why) && !strncmp(err + el - wl - 2, ": ", 2);
    if (!strncmp(err, "Could not open '", 16) && !errno_said)
        tool_error("%s", err);
    else
        tool_error("Could not open '%s': %s", file, err[0] ? err : why);
    return NULL;
}

struct fq_image *img_open_file(const char *file, const char *fmt, bool rw, bool backing,
                              enum fq_cache_mode cache)
{
    struct fq_open_opts o;

    tool_open_opts_init(&o);
    o.format = fmt;
    o.readonly = !rw;
    o.no_backing = !backing;
    o.cache = cache;
    return img_open(file, &o);
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

    /* option lists, protocol names and "file:NAME" are taken as written */
    if (rel[0] == '/' || !slash || fq_blockopts_is_name(rel) || strstr(rel, "://") ||
        !strncmp(rel, "file:", 5))
        snprintf(out, n, "%s", rel);
    else
        snprintf(out, n, "%.*s%s", (int)(slash - base + 1), base, rel);
}

/* names[d]: the file of layer d of the chain, named as qemu names it.
 * Returns false if the chain comes back to a file already in it (the same
 * file under any name); names[d] of the last layer is then that file. */
bool img_chain_names(const char *file, const char *fmt, char (*names)[4096])
{
    static struct stat seen[MAX_CHAIN + 1];

    snprintf(names[0], 4096, "%s", file);
    for (int d = 0; d < MAX_CHAIN; d++) {
        struct fq_open_opts o;
        struct fq_image *img;
        struct fq_info in;

        names[d + 1][0] = '\0';
        if (stat(names[d], &seen[d]) == 0)
            for (int i = 0; i < d; i++)
                if (seen[i].st_dev == seen[d].st_dev && seen[i].st_ino == seen[d].st_ino)
                    return false;
        tool_open_opts_init(&o);
        o.format = d == 0 ? fmt : NULL;
        o.readonly = o.no_backing = o.check_mode = 1;
        o.name_from_image = d > 0;
        if (fq_open(names[d], &o, &img, NULL) < 0)
            return true;
        int r = fq_get_info(img, &in);
        fq_close(img);
        if (r < 0 || !in.backing_file[0])
            return true;
        img_path_combine(names[d], in.backing_file, names[d + 1], 4096);
    }
    return true;
}
