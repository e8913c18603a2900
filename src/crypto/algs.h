/* crypto/algs.h: the algorithms the crypto layer knows (cipher.c), by the
 * names LUKS headers and qemu's options give them, shared by the LUKS
 * header code (luks.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_CRYPTO_ALGS_H
#define FQ_CRYPTO_ALGS_H

#include "crypt.h"

enum calg { CALG_AES128, CALG_AES192, CALG_AES256, CALG_NONE };
enum cmode { CMODE_XTS, CMODE_CBC, CMODE_NONE };
enum ivgen { IVGEN_PLAIN, IVGEN_PLAIN64, IVGEN_ESSIV, IVGEN_NONE };
enum halg { HALG_SHA1, HALG_SHA256, HALG_SHA384, HALG_SHA512, HALG_NONE };

/* A cipher's full description. */
struct cspec {
    enum calg alg;
    enum cmode mode;
    enum ivgen iv;
    enum halg ivhash;          /* ESSIV only */
};

/* Names: "aes-256", "xts", "plain64", "sha256"; *_NONE when unknown. */
enum calg calg_by_name(const char *s);
enum cmode cmode_by_name(const char *s);
enum ivgen ivgen_by_name(const char *s);
enum halg halg_by_name(const char *s);
const char *calg_name(enum calg a);
const char *cmode_name(enum cmode m);
const char *ivgen_name(enum ivgen g);
const char *halg_name(enum halg h);
/* Key bytes of a block cipher (16, 24, 32). */
size_t calg_key_bytes(enum calg a);
/* Key bytes of a cipher in a mode (XTS: two keys). */
size_t cspec_key_bytes(const struct cspec *c);
/* The AES algorithm of `bytes` key bytes, or CALG_NONE. */
enum calg calg_aes_of(size_t bytes);
size_t halg_digest_bytes(enum halg h);

/* A cipher of spec `c` with `key` (cspec_key_bytes bytes). NULL on
 * -ENOMEM or a combination nettle lacks (XTS with AES-192). */
struct fq_cipher *cipher_new(const struct cspec *c, const uint8_t *key);
/* out = hash(in) (halg_digest_bytes bytes). */
void hash_buf(enum halg h, const void *in, size_t len, uint8_t *out);
/* Two-part hash: hash(a || b). */
void hash_two(enum halg h, const void *a, size_t alen, const void *b, size_t blen, uint8_t *out);
/* PBKDF2 with HMAC over `h`. */
void pbkdf2_buf(enum halg h, const void *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
                unsigned iters, uint8_t *out, size_t outlen);
/* Random bytes for keys and salts. 0 or -errno. */
int crypt_random(void *buf, size_t len);

#endif
