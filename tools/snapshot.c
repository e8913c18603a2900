/* snapshot.c: `fastqcow snapshot`, qemu-img snapshot: list (-l), create
 * (-c), apply (-a) or delete (-d, by name) the internal snapshots of an
 * image, through the library's snapshot calls.
 *
 * Options, output and exit codes follow qemu-img 7.2 (learnt by running
 * it); errors go to stderr as "fastqcow: ..." and exit 1.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/args.h"
#include "common/image.h"
#include "common/output.h"
#include "subcommands.h"

int cmd_snapshot(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow snapshot [--object objectdef] [-U] [-q] [-f fmt]\n"
        "                         [-l | -a snapshot | -c snapshot | -d snapshot] filename\n"
        "\n"
        "List, create, apply (revert to) or delete internal snapshots (qemu-img snapshot).\n"
        "\n"
        "  -l                   list the snapshots\n"
        "  -c snapshot          take a snapshot of this name\n"
        "  -a snapshot          revert to the snapshot (ID or name)\n"
        "  -d snapshot          delete the snapshot (ID or name)\n"
        "  -f fmt               the image's format (qcow2)\n"
        "  -q                   print nothing\n"
        "  -U, --force-share    with -l: read the image while other programs write it\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    const char *fmt = NULL, *name = NULL;
    char act = 0, err[FQ_ERR_MAX] = "";
    int ch, r = 0;
    bool quiet = false;

    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":la:c:d:f:qhU", img_help_only, NULL)) != -1) {
        switch (ch) {
        case 'l': case 'a': case 'c': case 'd':
            if (act)
                return img_usage_err("Cannot mix '-l', '-a', '-c', '-d'");
            act = (char)ch;
            name = optarg;
            break;
        case 'f': fmt = optarg; break;
        case 'q': quiet = true; break;
        case 'U': tool_force_share = true; break;
        case LO_OBJECT:
            if ((ch = img_object_opt(optarg)) >= 0)
                return ch;
            break;
        case 'h': fputs(usage, stdout); return 0;
        default: return img_getopt_err(ch, argv);   /* '?' and ':' */
        }
    }
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    (void)quiet;   /* qemu-img prints the list even with -q */
    if (!act)
        return 0;
    struct fq_image *img = img_open_file(argv[optind], fmt, act != 'l', false, FQ_CACHE_WRITEBACK);
    if (!img)
        return 1;
    struct fq_snapshot *v = NULL;
    int n = 0;
    switch (act) {
    case 'l':
        if ((r = fq_snapshot_list(img, &v, &n)) < 0)
            tool_error("Could not read the snapshot table: %s", strerror(-r));
        else if (n)
            img_snapshot_dump(v, n);
        break;
    case 'c':
        if ((r = fq_snapshot_create(img, name, err)) < 0) {
            /* refcounts too narrow for the new references (the library's
             * -ERANGE) are qemu-img's -EINVAL */
            int e = r == -ERANGE ? -EINVAL : r;
            tool_error("Could not create snapshot '%s': %d (%s)", name, e, strerror(-e));
        }
        break;
    case 'a':
        if ((r = fq_snapshot_apply(img, name, err)) < 0)
            tool_error("Could not apply snapshot '%s': %s", name,
                       r == -ENOENT ? "Failed to load snapshot: No such file or directory" : err);
        break;
    case 'd':
        /* as qemu-img: by name only */
        r = fq_snapshot_list(img, &v, &n);
        int i = 0;
        while (r == 0 && i < n && strcmp(v[i].name, name))
            i++;
        if (r == 0 && i == n) {
            tool_error("Could not delete snapshot '%s': snapshot not found", name);
            r = -ENOENT;
        } else if (r == 0 && (r = fq_snapshot_delete(img, v[i].id, err)) < 0) {
            tool_error("Could not delete snapshot '%s': %s", name, err);
        } else if (r < 0) {
            tool_error("Could not delete snapshot '%s': %s", name, strerror(-r));
        }
        break;
    }
    fq_snapshot_list_free(v, n);
    r = img_close(img, r);
    return r < 0;
}
