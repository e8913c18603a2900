/* map.c: `fastqcow map`, qemu-img map: where the guest data of an image
 * lives, through its backing chain, in human or JSON form. Entries are
 * merged as qemu-img 7.2 merges them, and each names the layer's file as
 * qemu names it.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/args.h"
#include "common/blockopts.h"
#include "common/image.h"
#include "subcommands.h"

#define MAP_FLAGS (FQ_MAP_DATA | FQ_MAP_ZERO | FQ_MAP_ALLOCATED | FQ_MAP_OFFSET)

/* qemu-img map merges entries equal in all but length whose host ranges
 * (if any) continue each other; 7.2 knows no "compressed". */
static bool map_mergeable(const struct fq_map_entry *a, const struct fq_map_entry *b)
{
    return a->length && (a->flags & MAP_FLAGS) == (b->flags & MAP_FLAGS) && a->depth == b->depth &&
           (!(a->flags & FQ_MAP_OFFSET) || a->host_offset + a->length == b->host_offset);
}

/* Print a merged entry. Returns 0, or -1 where human output cannot show
 * data without a host offset (compressed clusters). */
static int map_dump(const struct fq_map_entry *e, bool json, bool first, char (*names)[4096],
                    const char *data_name)
{
    bool off = e->flags & FQ_MAP_OFFSET, data = e->flags & FQ_MAP_DATA, zero = e->flags & FQ_MAP_ZERO;

    if (json) {
        printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, \"present\": %s, "
               "\"zero\": %s, \"data\": %s", first ? "[" : ",\n", e->start, e->length, e->depth,
               e->flags & FQ_MAP_ALLOCATED ? "true" : "false", zero ? "true" : "false",
               data ? "true" : "false");
        if (off)
            printf(", \"offset\": %" PRIu64, e->host_offset);
        putchar('}');
    } else if (data && !off) {
        tool_error("File contains external, encrypted or compressed clusters.");
        return -1;
    } else if (data && !zero) {
        char col[3][24];   /* qemu's "%#-16"PRIx64: 0 has no 0x */
        const uint64_t v[3] = { e->start, e->length, e->host_offset };
        for (int i = 0; i < 3; i++)
            snprintf(col[i], sizeof(col[i]), v[i] ? "%#" PRIx64 : "0", v[i]);
        /* data in an external data file is named by it */
        printf("%-16s%-16s%-16s%s\n", col[0], col[1], col[2],
               (e->flags & FQ_MAP_DATA_FILE) && e->depth == 0 && data_name[0] ? data_name
                                                                              : names[e->depth]);
    }
    return 0;
}

static int map_run(int argc, char **argv, char (*names)[4096])
{
    static const char usage[] =
        "usage: fastqcow map [--object objectdef] [-f fmt] [--start-offset=offset]\n"
        "                    [--max-length=len] [--output=human|json] [-U] filename\n"
        "\n"
        "Show where the guest data of an image lives (qemu-img map).\n"
        "\n"
        "  -f fmt               the image's format (qcow2, raw; probed by default)\n"
        "  --start-offset=offset  where to start\n"
        "  --max-length=len     how far to go\n"
        "  --output=human|json  human-readable (default) or JSON output\n"
        "  -U, --force-share    read the image while other programs write it\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    struct fq_info info;
    const char *data_name = "";
    struct fq_map_entry cur, next;
    struct fq_open_opts o;
    struct fq_image *img;
    struct args a;
    bool first = true;
    int r = img_parse_args(argc, argv, ":f:hU", "JXY", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    tool_open_opts_init(&o);
    o.format = a.fmt;
    o.readonly = 1;
    if (!(img = img_open(argv[optind], &o)))
        return 1;
    uint64_t size = fq_size(img), end = a.maxlen > size - MIN(a.start, size) ? size : a.start + a.maxlen;
    if (!a.json) {
        /* the image opened: its name is good */
        struct fq_blockopts spec;
        const char *fmt = a.fmt, *file;
        char err[FQ_ERR_MAX];
        tool_image_name(argv[optind], &spec, &file, &fmt, err);
        img_chain_names(file, fmt, names);
        fq_blockopts_free(&spec);
        if (fq_get_info(img, &info) == 0)
            data_name = info.data_file;
        if (o.data_file)
            data_name = o.data_file;
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    }
    cur = (struct fq_map_entry){ .start = a.start };
    while (r == 0 && cur.start + cur.length < end) {
        uint64_t off = cur.start + cur.length;
        if ((r = fq_map(img, off, end - off, &next)) < 0 || next.length == 0) {
            tool_error("Could not read the image metadata: %s", strerror(r < 0 ? -r : EIO));
            r = -1;
        } else if (map_mergeable(&cur, &next)) {
            cur.length += MIN(next.length, end - off);
        } else {
            if (cur.length && (r = map_dump(&cur, a.json, first, names, data_name)) == 0)
                first = false;
            cur = next;
            cur.length = MIN(next.length, end - off);
        }
    }
    if (r == 0)   /* the last entry is printed even if empty */
        r = map_dump(&cur, a.json, first, names, data_name);
    if (r == 0 && a.json)
        printf("]\n");
    fq_close(img);
    return r < 0;
}

int cmd_map(int argc, char **argv)
{
    char (*names)[4096] = calloc(MAX_CHAIN + 1, sizeof(*names));   /* see cmd_info */
    int r = 1;

    if (names)
        r = map_run(argc, argv, names);
    else
        tool_error("Could not allocate memory");
    free(names);
    return r;
}
