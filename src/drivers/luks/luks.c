/* luks.c: a bare LUKS container. It is recognized when the format is
 * probed, so that its ciphertext is never handed out as a raw disk, and
 * refused: opening one is not supported.
 * SPDX-License-Identifier: MIT
 */
#include "driver.h"
#include "util.h"

static const uint8_t luks_magic[6] = { 'L', 'U', 'K', 'S', 0xba, 0xbe };

/* 100 when the device starts with the LUKS magic. */
static int luks_probe(struct fq_bdev *file)
{
    uint8_t m[sizeof(luks_magic)];

    if (file->size < sizeof(m) || fq_bdev_pread_sync(file, m, sizeof(m), 0) < 0)
        return 0;
    return memcmp(m, luks_magic, sizeof(m)) ? 0 : 100;
}

static int luks_open(struct fq_bdev *child, const struct fq_open_opts *opts,
                     struct fq_bdev **out, char *err)
{
    fq_seterr(err, "'%s' is a LUKS encrypted image: encryption is not supported yet",
              child->filename ? child->filename : "the image");
    return -ENOTSUP;
}

const struct fq_driver fq_driver_luks = {
    .name = "luks",
    .probe = luks_probe,
    .open = luks_open,
};
