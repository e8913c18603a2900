/* commit.c: `fastqcow commit`, qemu-img commit: write the data of an image
 * into its backing file (or a deeper one with -b), then empty the image
 * unless -d (fq_commit); prints "Image committed.".
 *
 * Options, output and exit codes follow qemu-img 7.2 (learnt by running
 * it); errors go to stderr as "fastqcow: ..." and exit 1.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/args.h"
#include "common/blockopts.h"
#include "common/output.h"
#include "subcommands.h"

int cmd_commit(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow commit [--object objectdef] [-q] [-f fmt] [-t cache] [-b base]\n"
        "                       [-r rate_limit] [-d] [-p] filename\n"
        "\n"
        "Write the data of an image into its backing file (qemu-img commit); then empty\n"
        "the image unless -d (or -b names a deeper backing file).\n"
        "\n"
        "  -b base              the backing file to commit into (default: the image's own)\n"
        "  -d                   keep the image's data (do not empty it)\n"
        "  -f fmt               the image's format (probed by default)\n"
        "  -t cache             cache mode\n"
        "  -r rate_limit        accepted; commits run unthrottled\n"
        "  -p                   show progress\n"
        "  -q                   print nothing\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    struct fq_commit_opts o = { 0 };
    struct progress pg = { 0 };
    char err[FQ_ERR_MAX] = "";
    bool quiet = false;
    int ch;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":f:t:b:r:dpqh", img_help_only, NULL)) != -1) {
        switch (ch) {
        case 'f': o.format = optarg; break;
        case 'b': o.base = optarg; break;
        case 'd': o.keep = 1; break;
        case 'p': pg.on = true; break;
        case 'q': quiet = true; break;
        case 'r': break;
        case LO_OBJECT:
            if ((ch = img_object_opt(optarg)) >= 0)
                return ch;
            break;
        case 't':
            if (tool_parse_cache(optarg, &o.cache, "cache") < 0)
                return 1;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    /* under --image-opts, the file and its format (commit opens the
     * chain itself, with the default caches) */
    struct fq_blockopts spec;
    const char *file;
    if (tool_image_name(argv[optind], &spec, &file, &o.format, err) < 0) {
        tool_error("Could not open '%s': %s", argv[optind], err);
        fq_blockopts_free(&spec);
        return 1;
    }
    pg.on = pg.on && !quiet;
    o.progress = img_progress_cb;
    o.opaque = &pg;
    img_progress(&pg, 0, 1, true);
    int r = fq_commit(file, &o, err);
    fq_blockopts_free(&spec);
    if (r < 0) {
        tool_error("%s", err[0] ? err : strerror(-r));
        return 1;
    }
    if (pg.on) {
        img_progress(&pg, 1, 1, true);
        putchar('\n');
    }
    if (!quiet)
        printf("Image committed.\n");
    return 0;
}
