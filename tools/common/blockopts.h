/* common/blockopts.h: qemu's block option lists in the tool
 * (blockopts.c). The library parses and checks them (fq_blockopts_*, one
 * interpreter for --image-opts lists and json: names); the tool adds the
 * warning qemu prints for short-form booleans, and the --image-opts of the
 * qemu-img compatible subcommands (convert's --target-image-opts). Every
 * program that takes lists goes through tool_blockopts_parse: those
 * subcommands, io's --image-opts, `open -o` and `reopen -o`, serve's and
 * mount's --image-opts.
 *
 * A list is checked in two steps, as qemu checks it: parsing checks the
 * generic and the protocol's keys; once the image is open and its format
 * known, fq_blockopts_check_format refuses the keys that format does not
 * take. Messages are qemu's, without the caller's frame ("Could not open
 * 'LIST': ", "can't open: ", "Failed to blk_new_open 'LIST': "), which
 * each caller adds its way.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_BLOCKOPTS_H
#define FQ_TOOLS_BLOCKOPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "cli.h"

/* fq_blockopts_parse, then qemu's warning for each short-form boolean
 * ("key" for key=on, "nokey" for key=off). Returns 0 or -1 with why in
 * err. Free `o` with fq_blockopts_free either way. */
int tool_blockopts_parse(const char *list, struct fq_blockopts *o, char *err);

/* ---- --image-opts of the qemu-img compatible subcommands --------------- */

/* --image-opts, and convert's --target-image-opts: taken out of the
 * arguments of the subcommands that open images by the dispatcher; the
 * image names they give are then option lists. */
extern bool tool_image_opts, tool_target_image_opts;
/* fq_open of `name`, an option list under --image-opts. Returns 0 or
 * -errno with why in err (empty if the library said nothing); the caller
 * prints it its way (qemu-img: "Could not open 'NAME': why"). */
int tool_open_image(const char *name, const struct fq_open_opts *o, struct fq_image **out,
                    char *err);
/* The file and format an image name names: the name itself (*fmt left as
 * is), or for a list (--image-opts) or a json: name the file it gives
 * (as qemu shows it) and its format when it names one, parsed into *spec,
 * which holds the strings until the caller frees it (fq_blockopts_free).
 * Returns 0 or -1 with why in err. */
int tool_image_name(const char *name, struct fq_blockopts *spec, const char **file,
                    const char **fmt, char *err);

#endif
