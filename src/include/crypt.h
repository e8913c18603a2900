/* crypt.h: disk encryption as the drivers use it (src/crypto/): a sector
 * cipher (AES in XTS or CBC mode with plain, plain64 or ESSIV initial
 * vectors, on 512-byte sectors) and the LUKS1 container header that keeps
 * its master key (parse, unlock with a passphrase, create). The
 * cryptographic primitives come from nettle; this layer holds the header
 * layout, the anti-forensic splitter and the choice of algorithms only.
 *
 * Threading: a struct fq_cipher is read-only once made, so any number of
 * threads (offload workers) may encrypt and decrypt with it at once.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_CRYPT_H
#define FQ_CRYPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fastqcow.h"

#define FQ_CRYPT_SECTOR 512u

struct fq_cipher;

/* Encrypt (enc) or decrypt `len` bytes (a multiple of FQ_CRYPT_SECTOR) in
 * place; the first sector's initial vector is made from `sector`. */
void fq_cipher_sectors(const struct fq_cipher *c, uint64_t sector, uint8_t *buf, size_t len,
                       bool enc);
void fq_cipher_free(struct fq_cipher *c);

/* Reads `len` bytes at `off` (from the header's start). 0 or -errno. */
typedef int fq_crypt_read_fn(void *opaque, void *buf, size_t len, uint64_t off);

/* Parse and check the LUKS header of a container of `avail` bytes read
 * through `rd`; with a secret, unlock a key slot and make the data cipher
 * (*out; NULL without a secret). Returns 0, -EINVAL / -ENOTSUP with a
 * message for a damaged or unsupported header, -EPERM with "Invalid
 * password, cannot unlock any keyslot" for a secret no slot takes. */
int fq_luks_open(fq_crypt_read_fn *rd, void *opaque, uint64_t avail, const void *secret,
                 size_t secret_len, struct fq_encrypt_info *info, struct fq_cipher **out, char *err);

/* Creation parameters, with qemu's option names and defaults (NULL / 0:
 * the default: aes-256, xts, plain64, sha256, 2000 ms). */
struct fq_luks_params {
    const char *cipher_alg, *cipher_mode, *ivgen_alg, *ivgen_hash_alg, *hash_alg;
    uint64_t iter_time_ms;
};

/* Check the parameters (qemu's messages). 0 or -EINVAL / -ENOTSUP. */
int fq_luks_params_check(const struct fq_luks_params *p, char *err);
/* A new LUKS header and key material for `secret` in slot 0: *hdr holds
 * *len bytes (the header, the eight key slot areas, up to the payload),
 * freed by the caller; *out the data cipher. 0 or -errno with a message. */
int fq_luks_create(const struct fq_luks_params *p, const void *secret, size_t secret_len,
                   uint8_t **hdr, size_t *len, struct fq_cipher **out, char *err);

#endif
