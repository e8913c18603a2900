/* crypto/cipher.c: the sector cipher and the primitives under it, on
 * nettle: AES-128/192/256 in XTS or CBC mode over 512-byte sectors, each
 * sector's initial vector (XTS: tweak) made from its number by the plain
 * (32-bit little-endian), plain64 (64-bit little-endian) or ESSIV method
 * (the plain64 block encrypted with a key that is the hash of the data
 * key, by AES of the hash's size); hashes, PBKDF2 and random bytes.
 *
 * A cipher holds its expanded keys only; encryption keeps its state on
 * the caller's stack, so one cipher serves many threads at once.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <nettle/aes.h>
#include <nettle/cbc.h>
#include <nettle/nettle-meta.h>
#include <nettle/pbkdf2.h>
#include <nettle/sha1.h>
#include <nettle/sha2.h>
#include <nettle/xts.h>

#include "algs.h"

union fq_aes_ctx {
    struct aes128_ctx a128;
    struct aes192_ctx a192;
    struct aes256_ctx a256;
};

struct fq_cipher {
    struct cspec spec;
    union fq_aes_ctx enc, dec;    /* the data key (XTS: its first half) */
    union fq_aes_ctx tweak;       /* XTS: the second half, encrypting */
    union fq_aes_ctx essiv;       /* ESSIV: the hash of the key, encrypting */
    enum calg essiv_alg;
};

/* ---- names ---- */

static const char *const calg_names[] = { "aes-128", "aes-192", "aes-256" };
static const char *const cmode_names[] = { "xts", "cbc" };
static const char *const ivgen_names[] = { "plain", "plain64", "essiv" };
static const char *const halg_names[] = { "sha1", "sha256", "sha384", "sha512" };

/* Index of `s` in `names`, or n when absent. */
static int lookup(const char *const *names, int n, const char *s)
{
    int i = 0;

    while (s && i < n && strcmp(names[i], s))
        i++;
    return s ? i : n;
}

enum calg calg_by_name(const char *s) { return (enum calg)lookup(calg_names, 3, s); }
enum cmode cmode_by_name(const char *s) { return (enum cmode)lookup(cmode_names, 2, s); }
enum ivgen ivgen_by_name(const char *s) { return (enum ivgen)lookup(ivgen_names, 3, s); }
enum halg halg_by_name(const char *s) { return (enum halg)lookup(halg_names, 4, s); }
const char *calg_name(enum calg a) { return a < CALG_NONE ? calg_names[a] : "?"; }
const char *cmode_name(enum cmode m) { return m < CMODE_NONE ? cmode_names[m] : "?"; }
const char *ivgen_name(enum ivgen g) { return g < IVGEN_NONE ? ivgen_names[g] : "?"; }
const char *halg_name(enum halg h) { return h < HALG_NONE ? halg_names[h] : "?"; }

size_t calg_key_bytes(enum calg a)
{
    return a == CALG_AES128 ? 16 : a == CALG_AES192 ? 24 : a == CALG_AES256 ? 32 : 0;
}

size_t cspec_key_bytes(const struct cspec *c)
{
    return calg_key_bytes(c->alg) * (c->mode == CMODE_XTS ? 2 : 1);
}

enum calg calg_aes_of(size_t bytes)
{
    return bytes == 16 ? CALG_AES128 : bytes == 24 ? CALG_AES192 : bytes == 32 ? CALG_AES256 : CALG_NONE;
}

size_t halg_digest_bytes(enum halg h)
{
    static const size_t n[] = { SHA1_DIGEST_SIZE, SHA256_DIGEST_SIZE, SHA384_DIGEST_SIZE,
                                SHA512_DIGEST_SIZE };
    return h < HALG_NONE ? n[h] : 0;
}

/* ---- block cipher adapters (nettle's cipher function type) ---- */

static void enc128(const void *c, size_t n, uint8_t *d, const uint8_t *s) { aes128_encrypt(c, n, d, s); }
static void dec128(const void *c, size_t n, uint8_t *d, const uint8_t *s) { aes128_decrypt(c, n, d, s); }
static void enc192(const void *c, size_t n, uint8_t *d, const uint8_t *s) { aes192_encrypt(c, n, d, s); }
static void dec192(const void *c, size_t n, uint8_t *d, const uint8_t *s) { aes192_decrypt(c, n, d, s); }
static void enc256(const void *c, size_t n, uint8_t *d, const uint8_t *s) { aes256_encrypt(c, n, d, s); }
static void dec256(const void *c, size_t n, uint8_t *d, const uint8_t *s) { aes256_decrypt(c, n, d, s); }

static nettle_cipher_func *const encf[] = { enc128, enc192, enc256 };
static nettle_cipher_func *const decf[] = { dec128, dec192, dec256 };

/* Expand `key` for algorithm `a` into `c`, for encryption or decryption. */
static void set_key(enum calg a, union fq_aes_ctx *c, const uint8_t *key, bool enc)
{
    switch (a) {
    case CALG_AES128:
        (enc ? aes128_set_encrypt_key : aes128_set_decrypt_key)(&c->a128, key);
        break;
    case CALG_AES192:
        (enc ? aes192_set_encrypt_key : aes192_set_decrypt_key)(&c->a192, key);
        break;
    default:
        (enc ? aes256_set_encrypt_key : aes256_set_decrypt_key)(&c->a256, key);
        break;
    }
}

/* ---- hashes, PBKDF2, randomness ---- */

static const struct nettle_hash *hash_of(enum halg h)
{
    static const struct nettle_hash *const t[] = { &nettle_sha1, &nettle_sha256, &nettle_sha384,
                                                   &nettle_sha512 };
    return t[h];
}

union fq_hash_ctx {
    struct sha1_ctx s1;
    struct sha256_ctx s256;
    struct sha512_ctx s512;
};

void hash_two(enum halg h, const void *a, size_t alen, const void *b, size_t blen, uint8_t *out)
{
    const struct nettle_hash *m = hash_of(h);
    union fq_hash_ctx ctx;

    m->init(&ctx);
    m->update(&ctx, alen, a);
    if (blen)
        m->update(&ctx, blen, b);
    m->digest(&ctx, m->digest_size, out);
}

void hash_buf(enum halg h, const void *in, size_t len, uint8_t *out)
{
    hash_two(h, in, len, NULL, 0, out);
}

void pbkdf2_buf(enum halg h, const void *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
                unsigned iters, uint8_t *out, size_t outlen)
{
    switch (h) {
    case HALG_SHA1:
        pbkdf2_hmac_sha1(pwlen, pw, iters, saltlen, salt, outlen, out);
        break;
    case HALG_SHA256:
        pbkdf2_hmac_sha256(pwlen, pw, iters, saltlen, salt, outlen, out);
        break;
    case HALG_SHA384:
        pbkdf2_hmac_sha384(pwlen, pw, iters, saltlen, salt, outlen, out);
        break;
    default:
        pbkdf2_hmac_sha512(pwlen, pw, iters, saltlen, salt, outlen, out);
        break;
    }
}

int crypt_random(void *buf, size_t len)
{
    uint8_t *p = buf;

    while (len) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* ---- the sector cipher ---- */

struct fq_cipher *cipher_new(const struct cspec *spec, const uint8_t *key)
{
    struct fq_cipher *c;
    size_t kb = calg_key_bytes(spec->alg);

    if (spec->alg >= CALG_NONE || spec->mode >= CMODE_NONE || spec->iv >= IVGEN_NONE ||
        (spec->iv == IVGEN_ESSIV && spec->ivhash >= HALG_NONE))
        return NULL;
    if (!(c = calloc(1, sizeof(*c))))
        return NULL;
    c->spec = *spec;
    set_key(spec->alg, &c->enc, key, true);
    set_key(spec->alg, &c->dec, key, false);
    if (spec->mode == CMODE_XTS)
        set_key(spec->alg, &c->tweak, key + kb, true);
    if (spec->iv == IVGEN_ESSIV) {
        uint8_t h[SHA512_DIGEST_SIZE];
        size_t hb = halg_digest_bytes(spec->ivhash);
        hash_buf(spec->ivhash, key, cspec_key_bytes(spec), h);
        /* AES of the digest's size (sha256: AES-256) */
        c->essiv_alg = calg_aes_of(hb);
        if (c->essiv_alg == CALG_NONE) {
            free(c);
            return NULL;
        }
        set_key(c->essiv_alg, &c->essiv, h, true);
        memset(h, 0, sizeof(h));
    }
    return c;
}

/* The initial vector of sector `n`. */
static void make_iv(const struct fq_cipher *c, uint64_t n, uint8_t iv[16])
{
    memset(iv, 0, 16);
    if (c->spec.iv == IVGEN_PLAIN)
        n &= 0xffffffffu;
    for (int i = 0; i < 8; i++)
        iv[i] = (uint8_t)(n >> (8 * i));
    if (c->spec.iv == IVGEN_ESSIV)
        encf[c->essiv_alg](&c->essiv, 16, iv, iv);
}

void fq_cipher_sectors(const struct fq_cipher *c, uint64_t sector, uint8_t *buf, size_t len,
                       bool enc)
{
    nettle_cipher_func *e = encf[c->spec.alg], *d = decf[c->spec.alg];
    uint8_t iv[16];

    for (size_t off = 0; off + FQ_CRYPT_SECTOR <= len; off += FQ_CRYPT_SECTOR, sector++) {
        uint8_t *p = buf + off;
        make_iv(c, sector, iv);
        if (c->spec.mode == CMODE_XTS) {
            if (enc)
                xts_encrypt_message(&c->enc, &c->tweak, e, iv, FQ_CRYPT_SECTOR, p, p);
            else
                xts_decrypt_message(&c->dec, &c->tweak, d, e, iv, FQ_CRYPT_SECTOR, p, p);
        } else if (enc) {
            cbc_encrypt(&c->enc, e, 16, iv, FQ_CRYPT_SECTOR, p, p);
        } else {
            cbc_decrypt(&c->dec, d, 16, iv, FQ_CRYPT_SECTOR, p, p);
        }
    }
}

void fq_cipher_free(struct fq_cipher *c)
{
    if (c) {
        memset(c, 0, sizeof(*c));   /* the expanded keys */
        free(c);
    }
}
