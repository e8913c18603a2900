/* io/table.c: the command table of `fastqcow io`, in qemu-io 7.2's order
 * (by name) with its argument lines, aliases and help texts, and the help
 * command. Options beyond qemu-io's (-R SEED) are described by
 * `fastqcow io --help` and the manual page, so that every text here reads
 * as qemu-io's does.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"

static const char help_aio_read[] =
    "\n"
    " asynchronously reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'aio_read -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " The read is performed asynchronously and the aio_flush command must be\n"
    " used to ensure all outstanding aio requests have been completed.\n"
    " Note that due to its asynchronous nature, this command will be\n"
    " considered successful once the request is submitted, independently\n"
    " of potential I/O errors or pattern mismatches.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -i, -- treat request as invalid, for exercising stats\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

static const char help_aio_write[] =
    "\n"
    " asynchronously writes a range of bytes from the given offset source\n"
    " from multiple buffers\n"
    "\n"
    " Example:\n"
    " 'aio_write 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " The write is performed asynchronously and the aio_flush command must be\n"
    " used to ensure all outstanding aio requests have been completed.\n"
    " Note that due to its asynchronous nature, this command will be\n"
    " considered successful once the request is submitted, independently\n"
    " of potential I/O errors or pattern mismatches.\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -i, -- treat request as invalid, for exercising stats\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes\n"
    "\n";

static const char help_discard[] =
    "\n"
    " discards a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'discard 512 1k' - discards 1 kilobyte from 512 bytes into the file\n"
    "\n"
    " Discards a segment of the currently open file.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

static const char help_open[] =
    "\n"
    " opens a new file in the requested mode\n"
    "\n"
    " Example:\n"
    " 'open -n -o driver=raw /tmp/data' - opens raw data file read-write, uncached\n"
    "\n"
    " Opens a file for subsequent use by all of the other qemu-io commands.\n"
    " -r, -- open file read-only\n"
    " -s, -- use snapshot file\n"
    " -C, -- use copy-on-read\n"
    " -n, -- disable host cache, short for -t none\n"
    " -U, -- force shared permissions\n"
    " -k, -- use kernel AIO implementation (Linux only, prefer use of -i)\n"
    " -i, -- use AIO mode (threads, native or io_uring)\n"
    " -t, -- use the given cache mode for the image\n"
    " -d, -- use the given discard mode for the image\n"
    " -o, -- options to be given to the block driver\n";

static const char help_read[] =
    "\n"
    " reads a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'read -v 512 1k' - dumps 1 kilobyte read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " -b, -- read from the VM state rather than the virtual disk\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -l, -- length for pattern verification (only with -P)\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use a pattern to verify read data\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -s, -- start offset for pattern verification (only with -P)\n"
    " -v, -- dump buffer to standard output\n"
    "\n";

static const char help_readv[] =
    "\n"
    " reads a range of bytes from the given offset into multiple buffers\n"
    "\n"
    " Example:\n"
    " 'readv -v 512 1k 1k ' - dumps 2 kilobytes read from 512 bytes into the file\n"
    "\n"
    " Reads a segment of the currently open file, optionally dumping it to the\n"
    " standard output stream (with -v option) for subsequent inspection.\n"
    " Uses multiple iovec buffers if more than one byte range is specified.\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -P, -- use a pattern to verify read data\n"
    " -v, -- dump buffer to standard output\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

static const char help_reopen[] =
    "\n"
    " Changes the open options of an already opened image\n"
    "\n"
    " Example:\n"
    " 'reopen -o lazy-refcounts=on' - activates lazy refcount writeback on a qcow2 image\n"
    "\n"
    " -r, -- Reopen the image read-only\n"
    " -w, -- Reopen the image read-write\n"
    " -c, -- Change the cache mode to the given value\n"
    " -o, -- Changes block driver options (cf. 'open' command)\n"
    "\n";

static const char help_sigraise[] =
    "\n"
    " raises the given signal\n"
    "\n"
    " Example:\n"
    " 'sigraise 15' - raises SIGTERM\n"
    "\n"
    " Invokes raise(signal), where \"signal\" is the mandatory integer argument\n"
    " given to sigraise.\n"
    "\n";

static const char help_write[] =
    "\n"
    " writes a range of bytes from the given offset\n"
    "\n"
    " Example:\n"
    " 'write 512 1k' - writes 1 kilobyte at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -b, -- write to the VM state rather than the virtual disk\n"
    " -c, -- write compressed data\n"
    " -f, -- use Force Unit Access semantics\n"
    " -n, -- with -z, don't allow slow fallback\n"
    " -p, -- ignored for backwards compatibility\n"
    " -P, -- use different pattern to fill file\n"
    " -s, -- use a pattern file to fill the write buffer\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    " -u, -- with -z, allow unmapping\n"
    " -z, -- write zeroes\n"
    "\n";

static const char help_writev[] =
    "\n"
    " writes a range of bytes from the given offset source from multiple buffers\n"
    "\n"
    " Example:\n"
    " 'writev 512 1k 1k' - writes 2 kilobytes at 512 bytes into the open file\n"
    "\n"
    " Writes into a segment of the currently open file, using a buffer\n"
    " filled with a set pattern (0xcdcdcdcd).\n"
    " -P, -- use different pattern to fill file\n"
    " -C, -- report statistics in a machine parsable format\n"
    " -f, -- use Force Unit Access semantics\n"
    " -q, -- quiet mode, do not show I/O statistics\n"
    "\n";

static const struct io_cmd cmds[] = {
    { "abort", NULL, abort_f, 0, 0, IO_NOFILE, NULL,
      "simulate a program crash using abort(3)", NULL },
    { "aio_flush", NULL, aio_flush_f, 0, 0, 0, NULL,
      "completes all outstanding aio requests", NULL },
    { "aio_read", NULL, aio_read_f, 2, -1, 0, "[-Ciqv] [-P pattern] off len [len..]",
      "asynchronously reads a number of bytes", help_aio_read },
    { "aio_write", NULL, aio_write_f, 2, -1, IO_WRITES, "[-Cfiquz] [-P pattern] off len [len..]",
      "asynchronously writes a number of bytes", help_aio_write },
    { "alloc", "a", alloc_f, 1, 2, 0, "offset [count]",
      "checks if offset is allocated in the file", NULL },
    { "break", NULL, break_f, 2, 2, 0, "event tag",
      "sets a breakpoint on event and tags the stopped request as tag", NULL },
    { "close", "c", close_f, 0, 0, 0, NULL,
      "close the current open file", NULL },
    { "discard", "d", discard_f, 2, -1, IO_WRITES, "[-Cq] off len",
      "discards a number of bytes at a specified offset", help_discard },
    { "flush", "f", flush_f, 0, 0, 0, NULL,
      "flush all in-core file state to disk", NULL },
    { "help", "?", help_f, 0, 1, IO_NOFILE, "[command]",
      "help for one or all commands", NULL },
    { "info", "i", info_f, 0, 0, 0, NULL,
      "prints information about the current file", NULL },
    { "length", "l", length_f, 0, 0, 0, NULL,
      "gets the length of the current file", NULL },
    { "map", NULL, map_f, 0, 0, 0, "",
      "prints the allocated areas of a file", NULL },
    { "open", "o", open_f, 1, -1, IO_NOFILE, "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
      "open the file specified by path", help_open },
    { "quit", "q", quit_f, 0, -1, IO_NOFILE, NULL,
      "exit the program", NULL },
    { "read", "r", read_f, 2, -1, 0, "[-abCqv] [-P pattern [-s off] [-l len]] off len",
      "reads a number of bytes at a specified offset", help_read },
    { "readv", NULL, readv_f, 2, -1, 0, "[-Cqv] [-P pattern] off len [len..]",
      "reads a number of bytes at a specified offset", help_readv },
    { "remove_break", NULL, remove_break_f, 1, 1, 0, "tag",
      "remove a breakpoint by tag", NULL },
    { "reopen", NULL, reopen_f, 0, -1, 0, "[(-r|-w)] [-c cache] [-o options]",
      "reopens an image with new options", help_reopen },
    { "resume", NULL, resume_f, 1, 1, 0, "tag",
      "resumes the request tagged as tag", NULL },
    { "sigraise", NULL, sigraise_f, 1, 1, IO_NOFILE, "signal",
      "raises a signal", help_sigraise },
    { "sleep", NULL, sleep_f, 1, 1, IO_NOFILE, NULL,
      "waits for the given value in milliseconds", NULL },
    { "truncate", "t", truncate_f, 1, 3, IO_WRITES, "[-m prealloc_mode] off",
      "truncates the current file at the given offset", NULL },
    { "wait_break", NULL, wait_break_f, 1, 1, 0, "tag",
      "waits for the suspension of a request", NULL },
    { "write", "w", write_f, 2, -1, IO_WRITES, "[-bcCfnquz] [-P pattern | -s source_file] off len",
      "writes a number of bytes at a specified offset", help_write },
    { "writev", NULL, writev_f, 2, -1, IO_WRITES, "[-Cfq] [-P pattern] off len [len..]",
      "writes a number of bytes at a specified offset", help_writev },
};

const struct io_cmd *io_find_cmd(const char *name)
{
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (!strcmp(name, cmds[i].name) || (cmds[i].alt && !strcmp(name, cmds[i].alt)))
            return &cmds[i];
    return NULL;
}

/* "NAME ARGS -- ONELINE" with the name the user typed. */
static void help_oneline(const char *name, const struct io_cmd *ct)
{
    printf("%s ", name);
    if (ct->args)
        printf("%s ", ct->args);
    printf("-- %s\n", ct->oneline);
}

int io_usage(const struct io_cmd *ct)
{
    printf("%s %s -- %s\n", ct->name, ct->args ? ct->args : "", ct->oneline);
    return -EINVAL;
}

int help_f(struct io *io, const struct io_cmd *ct, int argc, char **argv)
{
    if (argc == 1) {
        for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
            help_oneline(cmds[i].name, &cmds[i]);
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    const struct io_cmd *c = io_find_cmd(argv[1]);
    if (!c) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], c);
    if (c->help)
        fputs(c->help, stdout);
    return 0;
}
