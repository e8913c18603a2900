/* common/create_opts.h: image creation as `create` and `convert -O` do it
 * (create_opts.c): the -o values of the new image and img_create, which
 * checks them in qemu-img's words and creates the file.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_CREATE_OPTS_H
#define FQ_TOOLS_CREATE_OPTS_H

#include <stdbool.h>
#include <stdint.h>

#include "args.h"

/* The -o keys, in the order qemu-img prints them after "Formatting" for
 * qcow2: the format's, then the file's (nocow, extent_size_hint). */
enum { K_ENCRYPTION, K_ENC_FORMAT, K_ENC_SECRET, K_ENC_CALG, K_ENC_CMODE, K_ENC_IVALG,
       K_ENC_IVHASH, K_ENC_HASH, K_ENC_ITER, K_CLUSTER, K_EXTL2, K_PREALLOC, K_COMPR, K_SIZE,
       K_COMPAT, K_BFILE, K_BFMT, K_DATAFILE, K_DATARAW, K_LAZY, K_REFBITS, K_NOCOW, K_EXTHINT,
       K_NUM };

/* What to create: the -o values as given (NULL = not given). */
struct cspec {
    const char *file, *fmt, *val[K_NUM];
    char norm[K_NUM][24];      /* numbers in decimal, as printed */
    uint64_t num[K_NUM];
    bool on[K_NUM], quiet, unsafe, print;
};

/* Set a numeric key. */
void img_cspec_num(struct cspec *c, int k, uint64_t v);
/* Parse every -o list of `a` into `c`. Returns 0, 1 after printing the
 * help, -1 after printing an error. */
int img_cspec_parse(struct cspec *c, const struct args *a);
/* If an -o list of `a` asks for help ("help" or "?" among its items),
 * print the options of format `fmt` as qemu-img lists them, with those of
 * the file protocol when `file` names the target, and return 1 (-1 after
 * printing an error for an unknown format); 0 if none asks. */
int img_cspec_help(const struct args *a, const char *fmt, const char *file);
/* The passphrase a new encrypted image gets (encrypt.key-secret's
 * secret, or the environment's default), or NULL. */
const char *img_cspec_secret(const struct cspec *c, size_t *len);
/* Create c->file as qemu-img create would: its checks and messages, the
 * "Formatting" line (if c->print), then fq_create. Returns 0 or -1. */
int img_create(struct cspec *c);

#endif
