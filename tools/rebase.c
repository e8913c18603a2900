/* rebase.c: `fastqcow rebase`, qemu-img rebase: change the backing file of
 * an image; without -u the data that reads differently through the new
 * backing file is first copied into the image (fq_rebase).
 *
 * Options, output and exit codes follow qemu-img 7.2 (learnt by running
 * it); errors go to stderr as "fastqcow: ..." and exit 1.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/args.h"
#include "common/image.h"
#include "common/output.h"
#include "subcommands.h"

int cmd_rebase(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow rebase [--object objectdef] [-U] [-q] [-f fmt] [-t cache] [-T src_cache]\n"
        "                       [-p] [-u] -b backing_file [-F backing_fmt] filename\n"
        "\n"
        "Change the backing file of an image (qemu-img rebase). Without -u, data that\n"
        "reads differently through the new backing file is copied into the image first.\n"
        "\n"
        "  -b backing_file      the new backing file (\"\" for none)\n"
        "  -F backing_fmt       its format\n"
        "  -u                   unsafe: only rewrite the header\n"
        "  -f fmt               the image's format (qcow2)\n"
        "  -t cache             cache mode for the image\n"
        "  -T src_cache         cache mode for the backing files\n"
        "  -p                   show progress\n"
        "  -q                   print nothing\n"
        "  -U, --force-share    accepted; no effect (the image is opened read-write)\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    struct fq_rebase_opts o = { 0 };
    struct progress pg = { 0 };
    enum fq_cache_mode cache = FQ_CACHE_WRITEBACK;
    const char *fmt = NULL;
    char err[FQ_ERR_MAX] = "";
    bool quiet = false, has_b = false;
    int ch;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":f:t:T:b:F:puqhU", img_help_only, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = optarg; break;
        case 'b': o.backing_file = optarg; has_b = true; break;
        case 'F': o.backing_format = optarg; break;
        case 'u': o.unsafe = 1; break;
        case 'p': pg.on = true; break;
        case 'q': quiet = true; break;
        case 'U': break;
        case LO_OBJECT:
            if ((ch = img_object_opt(optarg)) >= 0)
                return ch;
            break;
        case 't':
            if (tool_parse_cache(optarg, &cache, "cache") < 0)
                return 1;
            break;
        case 'T':
            if (tool_parse_cache(optarg, &o.cache, "source cache") < 0)
                return 1;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (!has_b && !o.unsafe)
        return img_usage_err("Must specify backing file (-b) or use unsafe mode (-u)");
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    pg.on = pg.on && !quiet;
    o.progress = img_progress_cb;
    o.opaque = &pg;
    struct fq_open_opts oo;
    tool_open_opts_init(&oo);
    oo.format = fmt;
    oo.no_backing = o.unsafe;
    oo.cache = cache;
    oo.no_readahead = 1;        /* a safe rebase reads both chains once */
    struct fq_image *img = img_open(argv[optind], &oo);
    if (!img)
        return 1;
    img_progress(&pg, 0, 1, true);
    int r = fq_rebase(img, &o, err);
    if (r < 0)
        tool_error("%s", err);
    r = img_close(img, r);
    if (r == 0 && pg.on) {
        img_progress(&pg, 1, 1, true);
        putchar('\n');
    }
    return r < 0;
}
