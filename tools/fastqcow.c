/* fastqcow.c: the command-line tool's entry point: the global options and
 * the command table, the one list of subcommands (qemu-img / qemu-io
 * compatible where the name is the same). Each subcommand lives in the
 * file (or folder) of its name; its handler is declared in subcommands.h.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cli.h"
#include "subcommands.h"

/* One subcommand: its name, its handler (argv[0] is the name; returns the
 * exit code) and the line `fastqcow --help` prints for it. */
struct subcommand {
    const char *name;
    int (*handler)(int argc, char **argv);
    const char *summary;
};

/* In the order --help lists them. */
static const struct subcommand cmds[] = {
    { "create", cmd_create, "create a new image (qemu-img create)" },
    { "info", cmd_info, "show image information (qemu-img info)" },
    { "check", cmd_check, "check (and repair) an image (qemu-img check)" },
    { "map", cmd_map, "show the guest-to-host mapping (qemu-img map)" },
    { "compare", cmd_compare, "compare two images (qemu-img compare)" },
    { "convert", cmd_convert, "copy an image to another format (qemu-img convert)" },
    { "io", cmd_io, "run qemu-io style commands on an image" },
    { "bench", cmd_bench, "run a simple benchmark (qemu-img bench)" },
    { "gen", cmd_gen, "generate the seq/reverse/rand/part-rand test images" },
    { "snapshot", cmd_snapshot, "list, create, apply or delete snapshots (qemu-img snapshot)" },
    { "resize", cmd_resize, "change the virtual size (qemu-img resize)" },
    { "amend", cmd_amend, "change options of an image (qemu-img amend)" },
    { "measure", cmd_measure, "show the size a new image needs (qemu-img measure)" },
    { "rebase", cmd_rebase, "change the backing file (qemu-img rebase)" },
    { "commit", cmd_commit, "merge an image into its backing file (qemu-img commit)" },
    { "dd", cmd_dd, "copy an image block by block into a new one (qemu-img dd)" },
};

/* The tool's help: the subcommands of the table, the global options. */
static void usage(FILE *f)
{
    fprintf(f, "usage: fastqcow [--backing-format FMT] SUBCOMMAND [options]\n\nSubcommands:\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].summary);
    fprintf(f, "\nRun 'fastqcow SUBCOMMAND --help' for its options.\n\n"
            "Global options:\n"
            "  --backing-format FMT  format (raw, qcow2) of the image's backing file,\n"
            "                        over what the image records; 'probe': guess the\n"
            "                        format of backing files that record none (by\n"
            "                        default they are refused: a raw disk may start\n"
            "                        with qcow2's magic). Also FASTQCOW_BACKING_FORMAT.\n"
            "  -h, --help            this help\n"
            "  -V, --version         the version\n");
}

/* Take the global options, then run the subcommand argv[1] names. */
int main(int argc, char **argv)
{
    tool_backing_format = getenv("FASTQCOW_BACKING_FORMAT");
    if (tool_backing_format && !tool_backing_format[0])
        tool_backing_format = NULL;
    while (argc >= 2 && !strncmp(argv[1], "--backing-format", 16)) {
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
        int used = argv[1][16] == '=' ? 1 : 2;
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
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].handler(argc - 1, argv + 1);
    tool_error("unknown subcommand '%s'", argv[1]);
    usage(stderr);
    return 1;
}
