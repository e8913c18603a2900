/* resize.c: `fastqcow resize`, qemu-img resize: change the virtual size of
 * an image to a size or by +/- a size; prints "Image resized.".
 *
 * Options, output and exit codes follow qemu-img 7.2 (learnt by running
 * it); errors go to stderr as "fastqcow: ..." and exit 1. As in qemu-img,
 * a smaller size needs --shrink, which drops what lies past the new end;
 * without it the refusal carries qemu-img's warning. --discard-data, which
 * once had to come with --shrink for that, is accepted and changes nothing.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "common/args.h"
#include "common/image.h"
#include "subcommands.h"

int cmd_resize(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow resize [--object objectdef] [-f fmt] [--preallocation=off] [-q]\n"
        "                       [--shrink] [--discard-data] filename [+ | -]size\n"
        "\n"
        "Change the virtual size of an image (qemu-img resize).\n"
        "\n"
        "  --shrink             allow a smaller size: what lies past the new end is dropped\n"
        "  --discard-data       accepted for scripts written for earlier versions; no effect\n"
        "  --preallocation=off  the only mode resize takes\n"
        "  -f fmt               the image's format (qcow2, raw; probed by default)\n"
        "  -q                   print nothing on success\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    static const struct option lo[] = { { "help", no_argument, NULL, 'h' },
                                        { "object", required_argument, NULL, LO_OBJECT },
                                        { "shrink", no_argument, NULL, 'S' },
                                        { "discard-data", no_argument, NULL, 'D' },
                                        { "preallocation", required_argument, NULL, 'P' },
                                        { 0 } };
    const char *fmt = NULL, *arg;
    char err[FQ_ERR_MAX] = "";
    bool quiet = false, shrink = false;
    uint64_t v;
    int ch;

    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return 0;
        }
    if (argc < 3)
        return img_usage_err("Not enough arguments");
    arg = argv[--argc];   /* the size may look like an option ("-1G") */
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":f:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'f': fmt = optarg; break;
        case 'q': quiet = true; break;
        case 'S': shrink = true; break;
        case 'D': break;   /* --discard-data: what --shrink does */
        case LO_OBJECT:
            if ((ch = img_object_opt(optarg)) >= 0)
                return ch;
            break;
        case 'P':
            if (strcmp(optarg, "off")) {
                tool_error("Preallocation mode '%s' is not supported by resize", optarg);
                return 1;
            }
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (optind != argc - 1)
        return img_usage_err("Expecting image file name and size");
    int rel = arg[0] == '+' ? 1 : arg[0] == '-' ? -1 : 0;
    if (img_qsize(arg + (rel != 0), &v) < 0) {
        tool_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes for");
        tool_error("kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
        return 1;
    }
    struct fq_image *img = img_open_file(argv[optind], fmt, true, true, FQ_CACHE_WRITEBACK);
    if (!img)
        return 1;
    uint64_t cur = fq_size(img), size = v;
    int r = 0;
    if (rel < 0 && v >= cur) {
        tool_error("New image size must be positive");
        r = -EINVAL;
    } else if (rel) {
        size = rel > 0 ? cur + v : cur - v;
    } else if (v == 0) {
        tool_error("New image size must be positive");
        r = -EINVAL;
    }
    if (r == 0 && size < cur && !shrink) {
        tool_error("Use the --shrink option to perform a shrink operation.");
        tool_error("warning: Shrinking an image will delete all data beyond the shrunken image's "
                   "end. Before performing such an operation, make sure there is no important "
                   "data there.");
        r = -EINVAL;
    }
    if (r == 0 && !strcmp(fq_format(img), "qcow2") && size % 512) {
        tool_error("The new size must be a multiple of 512");
        r = -EINVAL;
    }
    unsigned flags = shrink ? FQ_RESIZE_SHRINK : 0;
    if (r == 0 && (r = fq_resize(img, size, flags, err)) < 0)
        tool_error("%s", err);
    r = img_close(img, r);
    if (r == 0 && !quiet)
        printf("Image resized.\n");
    return r < 0;
}
