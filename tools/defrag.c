/* defrag.c: `fastqcow defrag`: rewrite a qcow2 image in place so that
 * it reads like one written sequentially (fq_defrag), or with
 * --compact-only just move the clusters at the end of the file into holes
 * and cut the file. Prints what it did unless -q (--output=json: the
 * figures of fq_defrag_stats as one object); -p shows progress as convert
 * does. Exit 0 on success, 1 on failure (the image is left
 * consistent: running it again finishes the job).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/args.h"
#include "common/cli.h"
#include "common/image.h"
#include "common/output.h"
#include "subcommands.h"

int cmd_defrag(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow defrag [-p] [-q] [-f fmt] [-t cache] [--compact-only] [--budget SIZE]\n"
        "                       [--output=human|json] filename\n\n"
        "Rewrite a qcow2 image in place so that it reads like one written sequentially:\n"
        "data clusters in guest order, each L2 table before the data it maps, the file\n"
        "ending at its last used cluster. Crash-safe: an interrupted run leaves a\n"
        "consistent image, and running it again finishes the job.\n\n"
        "  -p              show progress\n"
        "  -q              print nothing on success\n"
        "  -f fmt          image format (qcow2; default: probe)\n"
        "  -t cache        cache mode (default writeback)\n"
        "  --compact-only  only move clusters from the end of the file into holes, then\n"
        "                  cut the file\n"
        "  --budget SIZE   how far the file may grow past its final size while clusters\n"
        "                  wait for their place (default 32M)\n"
        "  --output=json   print the figures (file sizes before, after and at most,\n"
        "                  bytes copied, clusters placed, rounds, leaks reclaimed)\n"
        "  --image-opts    the image is named by qemu's option list\n"
        "  -h, --help      this help\n";
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
                                        { "compact-only", no_argument, NULL, 'C' },
                                        { "budget", required_argument, NULL, 'B' },
                                        { "output", required_argument, NULL, 'O' }, { 0 } };
    struct fq_defrag_opts o;
    struct fq_defrag_stats st;
    struct fq_open_opts oo;
    struct progress prog = { 0 };
    enum fq_cache_mode cache = FQ_CACHE_WRITEBACK;
    const char *fmt = NULL;
    char err[FQ_ERR_MAX] = "";
    bool quiet = false, json = false;
    int ch;

    fq_defrag_opts_init(&o);
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":f:t:pqh", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = optarg; break;
        case 't':
            if (tool_parse_cache(optarg, &cache, "cache") < 0)
                return 1;
            break;
        case 'p': prog.on = true; break;
        case 'q': quiet = true; break;
        case 'C': o.compact_only = 1; break;
        case 'B':
            if (tool_parse_size(optarg, &o.budget, "budget") < 0)
                return 1;
            if (o.budget == 0) {
                tool_error("The budget must be at least one byte");
                return 1;
            }
            break;
        case 'O':
            if (!strcmp(optarg, "json"))
                json = true;
            else if (strcmp(optarg, "human"))
                return img_usage_err("--output must be used with human or json as argument.");
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    if (quiet)
        prog.on = false;
    tool_open_opts_init(&oo);
    oo.format = fmt;
    oo.cache = cache;
    oo.no_backing = 1;   /* only the image's own clusters move */
    struct fq_image *img = img_open(argv[optind], &oo);
    if (!img)
        return 1;
    if (prog.on) {
        o.progress = img_progress_cb;
        o.opaque = &prog;
        img_progress(&prog, 0, 1, true);
    }
    int r = fq_defrag(img, &o, &st, err);
    if (prog.on && r == 0)
        img_progress(&prog, 1, 1, true);
    if (prog.on)
        putchar('\n');
    if (r < 0)
        tool_error("%s", err[0] ? err : strerror(-r));
    r = img_close(img, r);
    if (r == 0 && json) {
        struct jw w = { 0 };
        jw_open(&w, NULL, '{');
        jw_int(&w, "file-before", (int64_t)st.file_before);
        jw_int(&w, "file-after", (int64_t)st.file_after);
        jw_int(&w, "file-peak", (int64_t)st.file_peak);
        jw_int(&w, "bytes-copied", (int64_t)st.bytes_copied);
        jw_int(&w, "clusters-moved", (int64_t)st.clusters_moved);
        jw_int(&w, "rounds", (int64_t)st.rounds);
        jw_int(&w, "leaks-fixed", (int64_t)st.leaks_fixed);
        jw_close(&w, '}');
    } else if (r == 0 && !quiet) {
        char before[32], after[32], peak[32], copied[32];
        tool_human_size(st.file_before, before, sizeof(before));
        tool_human_size(st.file_after, after, sizeof(after));
        tool_human_size(st.file_peak, peak, sizeof(peak));
        tool_human_size(st.bytes_copied, copied, sizeof(copied));
        if (st.rounds == 0 && st.file_before == st.file_after)
            printf("Image is in order already (%s).\n", after);
        else
            printf("Image defragmented: %" PRIu64 " clusters placed, %s copied in %" PRIu64
                   " rounds; file %s -> %s (at most %s meanwhile).\n", st.clusters_moved, copied,
                   st.rounds, before, after, peak);
        if (st.leaks_fixed)
            printf("%" PRIu64 " leaked clusters were reclaimed first.\n", st.leaks_fixed);
    }
    return r < 0;
}
