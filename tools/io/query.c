/* io/query.c: the commands of `fastqcow io` that report on the image
 * rather than move data: map and alloc (allocation in the top layer, as
 * qemu-io's bdrv_is_allocated sees it), length and info, with qemu-io
 * 7.2's wording and sizes ("64 KiB", format.h).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "format.h"

int io_top_alloc_run(struct io *io, uint64_t off, uint64_t len, bool *alloc, uint64_t *run)
{
    struct fq_map_entry e;
    uint64_t done = 0;

    while (done < len) {
        int r = fq_map(io->img, off + done, len - done, &e);
        if (r < 0)
            return r;
        bool a = e.depth == 0 && (e.flags & FQ_MAP_ALLOCATED);
        if (done == 0)
            *alloc = a;
        else if (a != *alloc)
            break;
        if (e.length == 0)
            break;
        done += e.length < len - done ? e.length : len - done;
    }
    *run = done;
    return 0;
}

int map_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    uint64_t size = fq_size(io->img), off = 0, n;
    char s1[64], s2[64];
    bool alloc;

    while (off < size) {
        int r = io_top_alloc_run(io, off, size - off, &alloc, &n);
        if (r < 0 || n == 0) {
            fprintf(stderr, "fastqcow: Failed to get allocation status: %s\n", strerror(r < 0 ? -r : EIO));
            return r < 0 ? r : -EIO;
        }
        cvtstr((double)n, s1, sizeof(s1));
        cvtstr((double)off, s2, sizeof(s2));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n", s1, n,
               alloc ? "    allocated" : "not allocated", s2, off);
        off += n;
    }
    return 0;
}

int alloc_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    int64_t off, count = 512;
    uint64_t size = fq_size(io->img), sum = 0, pos, rem, n;
    char s1[64];
    bool alloc;

    if (getnum(argv[1], &off) < 0 || (argc == 3 && getnum(argv[2], &count) < 0))
        return -EINVAL;
    for (pos = (uint64_t)off, rem = (uint64_t)count; rem > 0; pos += n, rem -= n) {
        if (pos >= size) {
            count -= (int64_t)rem;
            break;
        }
        int r = io_top_alloc_run(io, pos, rem < size - pos ? rem : size - pos, &alloc, &n);
        if (r < 0) {
            printf("is_allocated failed: %s\n", strerror(-r));
            return r;
        }
        if (alloc)
            sum += n;
    }
    cvtstr((double)off, s1, sizeof(s1));
    printf("%" PRIu64 "/%" PRId64 " bytes allocated at offset %s\n", sum, count, s1);
    return 0;
}

int length_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    char s[64];

    cvtstr((double)fq_size(io->img), s, sizeof(s));
    printf("%s\n", s);
    return 0;
}

int info_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    struct fq_info fi;
    char s1[64], s2[64];
    uint64_t vmso = 0;

    if (fq_get_info(io->img, &fi) < 0) {
        memset(&fi, 0, sizeof(fi));
        snprintf(fi.format, sizeof(fi.format), "%s", fq_format(io->img));
    }
    bool qcow2 = !strcmp(fi.format, "qcow2");
    if (qcow2 && fi.cluster_size) {
        /* qemu's VM state lives just past the guest range an L1 entry covers */
        uint64_t per_l1 = (uint64_t)fi.cluster_size * (fi.cluster_size / (fi.extended_l2 ? 16 : 8));
        vmso = (fi.virtual_size + per_l1 - 1) / per_l1 * per_l1;
    }
    cvtstr(fi.cluster_size, s1, sizeof(s1));
    cvtstr((double)vmso, s2, sizeof(s2));
    printf("format name: %s\ncluster size: %s\nvm state offset: %s\n", fi.format, s1, s2);
    if (!qcow2)
        return 0;
    printf("Format specific information:\n    compat: %s\n    compression type: %s\n",
           fi.version >= 3 ? "1.1" : "0.10", fi.compression_type ? "zstd" : "zlib");
    if (fi.version >= 3)
        printf("    lazy refcounts: %s\n", fi.lazy_refcounts ? "true" : "false");
    printf("    refcount bits: %d\n", fi.refcount_bits);
    if (fi.version >= 3)
        printf("    corrupt: %s\n    extended l2: %s\n", fi.corrupt ? "true" : "false",
               fi.extended_l2 ? "true" : "false");
    return 0;
}
