/* fastqcow.c: the command-line tool's entry point: the global options and
 * the command table, the one list of subcommands (qemu-img / qemu-io
 * compatible where the name is the same). Each subcommand lives in the
 * file (or folder) of its name; its handler is declared in subcommands.h.
 * SPDX-License-Identifier: MIT
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/blockopts.h"
#include "common/cli.h"
#include "subcommands.h"

/* One subcommand: its name, its handler (argv[0] is the name; returns the
 * exit code), the line `fastqcow --help` prints for it, and whether it
 * opens images (and so takes --image-opts). */
struct subcommand {
    const char *name;
    int (*handler)(int argc, char **argv);
    const char *summary;
    bool opens;
};

/* In the order --help lists them. */
static const struct subcommand cmds[] = {
    { "create", cmd_create, "create a new image (qemu-img create)", false },
    { "info", cmd_info, "show image information (qemu-img info)", true },
    { "check", cmd_check, "check (and repair) an image (qemu-img check)", true },
    { "map", cmd_map, "show the guest-to-host mapping (qemu-img map)", true },
    { "compare", cmd_compare, "compare two images (qemu-img compare)", true },
    { "convert", cmd_convert, "copy an image to another format (qemu-img convert)", true },
    { "io", cmd_io, "run qemu-io style commands on an image", false },
    { "bench", cmd_bench, "run a simple benchmark (qemu-img bench)", true },
    { "gen", cmd_gen, "generate the seq/reverse/rand/part-rand test images", false },
    { "snapshot", cmd_snapshot, "list, create, apply or delete snapshots (qemu-img snapshot)", true },
    { "bitmap", cmd_bitmap, "add, remove, clear, enable, disable, merge or dump bitmaps (qemu-img bitmap)", true },
    { "resize", cmd_resize, "change the virtual size (qemu-img resize)", true },
    { "amend", cmd_amend, "change options of an image (qemu-img amend)", true },
    { "measure", cmd_measure, "show the size a new image needs (qemu-img measure)", true },
    { "rebase", cmd_rebase, "change the backing file (qemu-img rebase)", true },
    { "commit", cmd_commit, "merge an image into its backing file (qemu-img commit)", true },
    { "serve", cmd_serve, "serve an image over NBD (qemu-nbd)", false },
    { "mount", cmd_mount, "serve the guest view of an image as a regular file (FUSE)", false },
    { "umount", cmd_umount, "unmount a file served by mount, wait until the image is closed", false },
    { "defrag", cmd_defrag, "rewrite an image in place so it reads sequentially", true },
    { "dd", cmd_dd, "copy an image block by block into a new one (qemu-img dd)", true },
};

/* The tool's help: the subcommands of the table, the global options. */
static void usage(FILE *f)
{
    fprintf(f, "usage: fastqcow [--backing-format FMT] [--allow-backing-protocol LIST] SUBCOMMAND [options]\n\nSubcommands:\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\nRun 'fastqcow SUBCOMMAND --help' for its options.\n\n"
            "Global options:\n"
            "  --backing-format FMT  format (raw, qcow2) of the image's backing file,\n"
            "                        over what the image records; 'probe': guess the\n"
            "                        format of backing files that record none (by\n"
            "                        default they are refused: a raw disk may start\n"
            "                        with qcow2's magic). Also FASTQCOW_BACKING_FORMAT.\n"
            "  --allow-backing-protocol LIST  protocols (nbd, or all) a backing file\n"
            "                        name read from an image may use; by default only\n"
            "                        plain files. Also FASTQCOW_ALLOW_BACKING_PROTOCOL.\n"
            "  -h, --help            this help\n"
            "  -V, --version         the version\n\n"
            "Subcommands that open images take --image-opts: their image names are\n"
            "then qemu's option lists (driver=qcow2,file.filename=disk.qcow2,\n"
            "l2-cache-size=4M,l2-cache-entry-size=4k,refcount-cache-size=1M,\n"
            "cache-size=...,cache-clean-interval=SECONDS,read-only=on); convert also\n"
            "takes --target-image-opts (with -n).\n");
}

/* Take --image-opts (and, for convert, --target-image-opts) out of a
 * subcommand's arguments (before any "--"), setting the tool's flags.
 * Returns the new argc. */
static int take_image_opts(int argc, char **argv, bool target)
{
    int o = 2;

    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            while (i < argc)
                argv[o++] = argv[i++];
            break;
        }
        if (!strcmp(argv[i], "--image-opts")) {
            tool_image_opts = true;
            continue;
        }
        if (target && !strcmp(argv[i], "--target-image-opts")) {
            tool_target_image_opts = true;
            continue;
        }
        argv[o++] = argv[i];
    }
    argv[o] = NULL;
    return o;
}

/* A global option `name` with a value at argv[1] ("--name V" or
 * "--name=V"): the value into *out. Returns the arguments it took, 0 if
 * argv[1] is not that option, -1 (with a message) if its value is
 * missing. */
static int global_value(int argc, char **argv, const char *name, const char **out)
{
    size_t n = strlen(name);

    if (argc < 2 || strncmp(argv[1], name, n) || (argv[1][n] && argv[1][n] != '='))
        return 0;
    const char *v = argv[1][n] == '=' ? argv[1] + n + 1 : argc >= 3 ? argv[2] : NULL;
    if (!v || !v[0]) {
        tool_error("%s needs a value", name);
        return -1;
    }
    *out = v;
    return argv[1][n] == '=' ? 1 : 2;
}

/* Take the global options, then run the subcommand argv[1] names. */
int main(int argc, char **argv)
{
    tool_backing_format = getenv("FASTQCOW_BACKING_FORMAT");
    if (tool_backing_format && !tool_backing_format[0])
        tool_backing_format = NULL;
    tool_backing_protocols = getenv("FASTQCOW_ALLOW_BACKING_PROTOCOL");
    if (tool_backing_protocols && !tool_backing_protocols[0])
        tool_backing_protocols = NULL;
    for (;;) {
        int used = global_value(argc, argv, "--allow-backing-protocol", &tool_backing_protocols);
        if (used < 0)
            return 1;
        if (used) {
            argc -= used;
            argv += used;
            continue;
        }
        if (argc < 2 || strncmp(argv[1], "--backing-format", 16))
            break;
        const char *v = argv[1][16] == '=' ? argv[1] + 17 : argv[1][16] ? NULL : argc >= 3 ? argv[2] : NULL;
        if (!v || !v[0] || (argv[1][16] && argv[1][16] != '=')) {
            tool_error("--backing-format needs a format (raw, qcow2 or probe)");
            return 1;
        }
        if (strcmp(v, "raw") && strcmp(v, "qcow2") && strcmp(v, "probe")) {
            tool_error("Unknown backing format '%s' (raw, qcow2 or probe)", v);
            return 1;
        }
        tool_backing_format = v;
        used = argv[1][16] == '=' ? 1 : 2;
        argc -= used;
        argv += used;
    }
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) {
        printf("fastqcow version %s\n", fq_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(argv[1], cmds[i].name)) {
            if (cmds[i].opens)
                argc = take_image_opts(argc, argv, !strcmp(cmds[i].name, "convert"));
            return cmds[i].handler(argc - 1, argv + 1);
        }
    tool_error("unknown subcommand '%s'", argv[1]);
    usage(stderr);
    return 1;
}
