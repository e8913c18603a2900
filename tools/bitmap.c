/* bitmap.c: `fastqcow bitmap`, qemu-img bitmap: add, remove, clear,
 * enable, disable persistent dirty bitmaps and merge one into another
 * (from the same image or, with -b, another), in the order the options
 * are given, through the library's bitmap calls. `--dump` prints a
 * bitmap's dirty extents instead (human or JSON).
 *
 * Options, messages and exit codes follow qemu-img 7.2 (learnt by running
 * it); errors go to stderr as "fastqcow: ..." and exit 1.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/args.h"
#include "common/image.h"
#include "subcommands.h"

enum { OP_ADD = 1, OP_REMOVE, OP_CLEAR, OP_ENABLE, OP_DISABLE, OP_MERGE, OP_DUMP };
enum { LO_ADD = 0x100, LO_REMOVE, LO_CLEAR, LO_ENABLE, LO_DISABLE, LO_MERGE, LO_DUMP, LO_OUT };

static const char *const op_names[] = { "", "add", "remove", "clear", "enable", "disable", "merge" };

struct action {
    int op;
    const char *src;           /* OP_MERGE: the source bitmap */
};

/* Print the dirty extents of bitmap `name` (or every extent with
 * `all`), as map does: human or JSON. Returns 0 or -errno. */
static int dump(struct fq_image *img, const char *name, bool json, bool all)
{
    char err[FQ_ERR_MAX] = "";
    uint64_t size = fq_size(img), off = 0, run;
    int dirty, r = 0;
    bool first = true;

    /* a missing or unusable bitmap is reported before any output */
    if ((r = fq_bitmap_status(img, name, 0, size, &run, &dirty, err)) < 0) {
        tool_error("%s", err[0] ? err : strerror(-r));
        return r;
    }
    if (json)
        printf("[");
    else
        printf("%-16s%-16s%s\n", "Offset", "Length", "Dirty");
    while (off < size) {
        if ((r = fq_bitmap_status(img, name, off, size - off, &run, &dirty, err)) < 0) {
            if (json)
                printf("]\n");
            tool_error("%s", err[0] ? err : strerror(-r));
            return r;
        }
        if (run == 0)
            break;
        if (dirty || all) {
            if (json)
                printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"dirty\": %s}",
                       first ? "" : ",\n", off, run, dirty ? "true" : "false");
            else
                printf("%#-16" PRIx64 "%#-16" PRIx64 "%s\n", off, run, dirty ? "yes" : "no");
            first = false;
        }
        off += run;
    }
    if (json)
        printf("]\n");
    return 0;
}

/* A usage error found after the options were parsed: qemu-img prints no
 * hint with these. Returns the exit code 1. */
static int usage_err(const char *msg)
{
    tool_error("%s", msg);
    return 1;
}

int cmd_bitmap(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow bitmap (--merge SOURCE | --add | --remove | --clear |\n"
        "                        --enable | --disable)... [-b source_file [-F source_fmt]]\n"
        "                       [-g granularity] [--object objectdef] [-f fmt]\n"
        "                       filename bitmap\n"
        "       fastqcow bitmap --dump [--all] [--output=human|json] [-f fmt] filename bitmap\n"
        "\n"
        "Change the persistent dirty bitmaps of a qcow2 image (qemu-img bitmap); the\n"
        "operations run in the order given, and the first that fails ends the command.\n"
        "\n"
        "  --add                add an empty, enabled bitmap\n"
        "  --remove             remove the bitmap\n"
        "  --clear              clear every bit of the bitmap\n"
        "  --enable             the bitmap tracks writes from now on\n"
        "  --disable            the bitmap stops tracking writes\n"
        "  --merge SOURCE       set every bit of bitmap SOURCE in the bitmap\n"
        "  -b source_file       with --merge: SOURCE is in this image\n"
        "  -F source_fmt        the format of source_file\n"
        "  -g granularity       with --add: bytes per bit (a power of two, 512 to 2G)\n"
        "  -f fmt               the image's format (qcow2)\n"
        "  --dump               print the bitmap's dirty extents\n"
        "  --all                with --dump: the clean extents too\n"
        "  --output=FMT         with --dump: human (default) or json\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    static const struct option lo[] = {
        { "help", no_argument, NULL, 'h' }, { "object", required_argument, NULL, LO_OBJECT },
        { "add", no_argument, NULL, LO_ADD }, { "remove", no_argument, NULL, LO_REMOVE },
        { "clear", no_argument, NULL, LO_CLEAR }, { "enable", no_argument, NULL, LO_ENABLE },
        { "disable", no_argument, NULL, LO_DISABLE },
        { "merge", required_argument, NULL, LO_MERGE }, { "dump", no_argument, NULL, LO_DUMP },
        { "all", no_argument, NULL, 'a' }, { "output", required_argument, NULL, LO_OUT },
        { 0 } };
    const char *fmt = NULL, *src_file = NULL, *src_fmt = NULL, *gran_s = NULL;
    struct action *acts = calloc((size_t)argc + 1, sizeof(*acts));
    int nacts = 0, ch, r = 0;
    bool add = false, merge = false, do_dump = false, all = false, json = false;
    uint64_t gran = 0;

    if (!acts)
        return 1;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":b:F:g:f:h", lo, NULL)) != -1) {
        switch (ch) {
        case LO_ADD: case LO_REMOVE: case LO_CLEAR: case LO_ENABLE: case LO_DISABLE:
        case LO_MERGE:
            acts[nacts].op = ch - LO_ADD + OP_ADD;
            acts[nacts++].src = ch == LO_MERGE ? optarg : NULL;
            add |= ch == LO_ADD;
            merge |= ch == LO_MERGE;
            break;
        case LO_DUMP: do_dump = true; break;
        case 'a': all = true; break;
        case LO_OUT:
            if (strcmp(optarg, "json") && strcmp(optarg, "human")) {
                free(acts);
                return img_usage_err("--output must be used with human or json as argument.");
            }
            json = !strcmp(optarg, "json");
            break;
        case 'b': src_file = optarg; break;
        case 'F': src_fmt = optarg; break;
        case 'g': gran_s = optarg; break;
        case 'f': fmt = optarg; break;
        case LO_OBJECT:
            if ((ch = img_object_opt(optarg)) >= 0) {
                free(acts);
                return ch;
            }
            break;
        case 'h': fputs(usage, stdout); free(acts); return 0;
        default: free(acts); return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (gran_s && img_cvtnum("granularity", gran_s, &gran) < 0)
        r = 1;
    else if (do_dump && nacts)
        r = usage_err("--dump cannot be combined with other operations");
    else if (!nacts && !do_dump)
        r = usage_err("Need at least one of --add, --remove, --clear, --enable, --disable, "
                      "or --merge");
    else if (gran_s && !add)
        r = usage_err("granularity only supported with --add");
    else if (src_fmt && !src_file)
        r = usage_err("-F only supported with -b");
    else if (src_file && !merge)
        r = usage_err("Merge bitmap source file only supported with --merge");
    else if (optind != argc - 2)
        r = usage_err("Expecting filename and bitmap name");
    if (r) {
        free(acts);
        return r;
    }
    const char *file = argv[optind], *name = argv[optind + 1];
    struct fq_image *img = img_open_file(file, fmt, !do_dump, false, FQ_CACHE_WRITEBACK);
    if (!img) {
        free(acts);
        return 1;
    }
    if (do_dump) {
        r = dump(img, name, json, all);
        fq_close(img);
        free(acts);
        return r < 0;
    }
    struct fq_image *src = NULL;
    for (int i = 0; i < nacts && r == 0; i++) {
        char err[FQ_ERR_MAX] = "";
        const struct action *a = &acts[i];
        if (a->op == OP_MERGE) {
            if (src_file && !src &&
                !(src = img_open_file(src_file, src_fmt, false, false, FQ_CACHE_WRITEBACK))) {
                r = -EINVAL;
                break;
            }
            r = fq_bitmap_merge(img, name, src ? src : img, a->src, err);
        } else {
            r = fq_bitmap_change(img, name, (enum fq_bitmap_op)a->op, a->op == OP_ADD ? gran : 0,
                                 err);
        }
        if (r < 0) {
            tool_error("Operation %s on bitmap %s failed: %s", op_names[a->op], name,
                       err[0] ? err : strerror(-r));
            if (r == -EUCLEAN)
                fprintf(stderr, "Try block-dirty-bitmap-remove to delete this bitmap from disk\n");
        }
    }
    if (src)
        fq_close(src);
    r = img_close(img, r);
    free(acts);
    return r < 0;
}
