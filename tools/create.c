/* create.c: `fastqcow create`, qemu-img create: its command line (the
 * file, the size, -b/-F over -o); the -o keys, their checks and the
 * creation itself are common/create_opts.c's, which convert -O shares.
 * SPDX-License-Identifier: MIT
 */
#include <getopt.h>
#include <stdint.h>

#include "common/args.h"
#include "common/create_opts.h"
#include "subcommands.h"

int cmd_create(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]]\n"
        "                       [-u] [-o options] filename [size]\n"
        "\n"
        "Create a qcow2 or raw image (qemu-img create). Sizes take the suffixes\n"
        "k, M, G, T, P, E.\n"
        "\n"
        "  -f fmt               format of the new image: raw (default) or qcow2\n"
        "  -o options           its options, key=value,...; '-o help' lists them\n"
        "  -b backing_file      a backing file (qcow2)\n"
        "  -F backing_fmt       the format of the backing file\n"
        "  -u                   do not open the backing file (the size must be given)\n"
        "  -q                   print nothing on success\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    struct args a;
    struct cspec c = { .print = true };
    uint64_t sz;
    int r = img_parse_args(argc, argv, ":f:o:b:F:qhu", "", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    c.fmt = a.fmt ? a.fmt : "raw";
    c.quiet = a.quiet;
    c.unsafe = a.unsafe;
    c.file = optind < argc ? argv[optind++] : "";
    if ((r = img_cspec_parse(&c, &a)))
        return r > 0 ? 0 : 1;
    if (!c.file[0])
        return img_usage_err("Expecting image file name");
    if (a.backing)   /* -b and -F win over -o */
        c.val[K_BFILE] = a.backing;
    if (a.fmt2)
        c.val[K_BFMT] = a.fmt2;
    if (optind < argc) {
        if (img_cvtnum("image size", argv[optind++], &sz) < 0)
            return 1;
        if (c.val[K_SIZE]) {
            tool_error("%s: The image size must be specified only once", c.file);
            return 1;
        }
        img_cspec_num(&c, K_SIZE, sz);
    }
    if (optind < argc)
        return img_usage_err("Unexpected argument: %s", argv[optind]);
    return img_create(&c) < 0 ? 1 : 0;
}
