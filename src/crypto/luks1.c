/* crypto/luks1.c: the LUKS1 container header (crypt.h). The on-disk
 * layout: a 592-byte big-endian header (magic, version 1, cipher name and
 * mode, hash, payload offset in sectors, master key size, the master
 * key's PBKDF2 digest with its salt and iterations, a UUID) holding eight
 * key slots (state, PBKDF2 iterations and salt, offset in sectors of the
 * slot's key material, anti-forensic stripes). A slot's key material is
 * the master key spread over `stripes` blocks by the anti-forensic
 * splitter and encrypted, with the container's cipher, by the key PBKDF2
 * derives from the passphrase.
 *
 * Every value read from a header is checked before use: algorithms known,
 * iterations bounded (a hostile header must not make an open spin for
 * hours), key material inside the header area and of the one stripe
 * count LUKS uses.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <time.h>

#include "algs.h"
#include "util.h"

#define LUKS_MAGIC "LUKS\xba\xbe"
#define LUKS_HDR_SIZE 592u
#define LUKS_SLOTS 8
#define LUKS_SLOT_ACTIVE 0x00AC71F3u
#define LUKS_SLOT_DISABLED 0x0000DEADu
#define LUKS_STRIPES 4000u
#define LUKS_DIGEST 20u        /* master key digest bytes */
#define LUKS_SALT 32u
#define LUKS_ALIGN_SECTORS 8u  /* key material aligned to 4 KiB */
#define LUKS_MIN_ITERS 1000u
/* The most PBKDF2 iterations a header may ask for: a few seconds of
 * work per slot at today's speeds (a real header holds what its creator's
 * machine did in ~2 s); more is refused as damage. */
#define LUKS_MAX_ITERS (1u << 25)

/* Field offsets of the header and of a key slot in it. */
enum {
    H_MAGIC = 0, H_VERSION = 6, H_CIPHER = 8, H_MODE = 40, H_HASH = 72, H_PAYLOAD = 104,
    H_KEYBYTES = 108, H_MKDIGEST = 112, H_MKSALT = 132, H_MKITER = 164, H_UUID = 168,
    H_SLOTS = 208, SLOT_SIZE = 48,
    S_ACTIVE = 0, S_ITERS = 4, S_SALT = 8, S_OFFSET = 40, S_STRIPES = 44,
};
_Static_assert(H_SLOTS + LUKS_SLOTS * SLOT_SIZE == LUKS_HDR_SIZE, "LUKS1 header size");

/* ---- the anti-forensic splitter ---- */

/* d = H(d) block by block: each digest-sized block i of d replaced by
 * hash(be32(i) || block), the last block cut to what is left. */
static void af_diffuse(enum halg h, uint8_t *d, size_t len)
{
    size_t ds = halg_digest_bytes(h);
    uint8_t out[64];

    for (size_t i = 0, off = 0; off < len; i++, off += ds) {
        uint8_t be[4];
        size_t n = FQ_MIN(ds, len - off);
        fq_put_be32(be, (uint32_t)i);
        hash_two(h, be, 4, d + off, n, out);
        memcpy(d + off, out, n);
    }
}

static void xor_into(uint8_t *d, const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        d[i] ^= s[i];
}

/* Merge `stripes` blocks of `len` bytes back into the key (`out`). */
static void af_merge(enum halg h, const uint8_t *src, size_t len, unsigned stripes, uint8_t *out)
{
    memset(out, 0, len);
    for (unsigned i = 0; i + 1 < stripes; i++) {
        xor_into(out, src + (size_t)i * len, len);
        af_diffuse(h, out, len);
    }
    xor_into(out, src + (size_t)(stripes - 1) * len, len);
}

/* Split `key` into `stripes` blocks (`dst`): all but the last random.
 * 0 or -errno. */
static int af_split(enum halg h, const uint8_t *key, size_t len, unsigned stripes, uint8_t *dst)
{
    uint8_t d[64] = { 0 };
    size_t last = (size_t)(stripes - 1) * len;
    int r = crypt_random(dst, last);

    if (r < 0)
        return r;
    for (unsigned i = 0; i + 1 < stripes; i++) {
        xor_into(d, dst + (size_t)i * len, len);
        af_diffuse(h, d, len);
    }
    for (size_t i = 0; i < len; i++)
        dst[last + i] = d[i] ^ key[i];
    return 0;
}

/* ---- names in the header ---- */

/* A NUL-terminated string field of `n` bytes, or NULL if unterminated. */
static const char *field(const uint8_t *h, size_t off, size_t n)
{
    return memchr(h + off, 0, n) ? (const char *)h + off : NULL;
}

/* "xts-plain64", "cbc-essiv:sha256" into *c. 0 or -ENOTSUP. */
static int parse_mode(const char *s, struct cspec *c)
{
    char buf[32], *iv, *ivh;
    size_t len = strlen(s);

    if (len >= sizeof(buf))
        return -ENOTSUP;
    memcpy(buf, s, len + 1);
    if (!(iv = strchr(buf, '-')))
        return -ENOTSUP;
    *iv++ = '\0';
    if ((ivh = strchr(iv, ':')))
        *ivh++ = '\0';
    c->mode = cmode_by_name(buf);
    c->iv = ivgen_by_name(iv);
    c->ivhash = ivh ? halg_by_name(ivh) : HALG_NONE;
    if (c->mode == CMODE_NONE || c->iv == IVGEN_NONE || (c->iv == IVGEN_ESSIV) != (ivh != NULL) ||
        (ivh && c->ivhash == HALG_NONE))
        return -ENOTSUP;
    return 0;
}

/* ---- open ---- */

struct hdr {
    uint8_t raw[LUKS_HDR_SIZE];
    struct cspec spec;
    enum halg hash;
    size_t key_bytes;
};

/* Check the header and fill info. 0 or -errno with a message. */
static int check_header(struct hdr *H, uint64_t avail, struct fq_encrypt_info *info, char *err)
{
    const uint8_t *h = H->raw;
    const char *cname = field(h, H_CIPHER, 32), *mode = field(h, H_MODE, 32);
    const char *hash = field(h, H_HASH, 32);

    if (memcmp(h + H_MAGIC, LUKS_MAGIC, 6)) {
        fq_seterr(err, "Volume is not in LUKS format");
        return -EINVAL;
    }
    if (fq_be16(h + H_VERSION) != 1) {
        fq_seterr(err, "LUKS version %u is not supported", fq_be16(h + H_VERSION));
        return -ENOTSUP;
    }
    if (!cname || !mode || !hash) {
        fq_seterr(err, "LUKS header has an unterminated algorithm name");
        return -EINVAL;
    }
    H->key_bytes = fq_be32(h + H_KEYBYTES);
    if (strcmp(cname, "aes") || parse_mode(mode, &H->spec) < 0) {
        fq_seterr(err, "Cipher '%s' mode '%s' is not supported", cname, mode);
        return -ENOTSUP;
    }
    H->spec.alg = calg_aes_of(H->spec.mode == CMODE_XTS ? H->key_bytes / 2 : H->key_bytes);
    if (H->spec.alg == CALG_NONE || cspec_key_bytes(&H->spec) != H->key_bytes) {
        fq_seterr(err, "Cipher '%s' mode '%s' has no %zu-byte key", cname, mode, H->key_bytes);
        return -EINVAL;
    }
    if ((H->hash = halg_by_name(hash)) == HALG_NONE) {
        fq_seterr(err, "Hash algorithm '%s' is not supported", hash);
        return -ENOTSUP;
    }
    if (H->spec.iv == IVGEN_ESSIV && calg_aes_of(halg_digest_bytes(H->spec.ivhash)) == CALG_NONE) {
        fq_seterr(err, "Cipher mode '%s': no AES cipher with a %zu-byte key", mode,
                  halg_digest_bytes(H->spec.ivhash));
        return -ENOTSUP;
    }
    uint64_t payload = (uint64_t)fq_be32(h + H_PAYLOAD) * FQ_CRYPT_SECTOR;
    uint32_t mkit = fq_be32(h + H_MKITER);
    if (payload > avail || payload < LUKS_HDR_SIZE) {
        fq_seterr(err, "LUKS payload offset %llu is outside the header area (%llu bytes)",
                  (unsigned long long)payload, (unsigned long long)avail);
        return -EINVAL;
    }
    if (mkit == 0 || mkit > LUKS_MAX_ITERS) {
        fq_seterr(err, "LUKS master key digest iterations %u out of range (1 to %u)", mkit,
                  LUKS_MAX_ITERS);
        return -EINVAL;
    }
    memset(info, 0, sizeof(*info));
    strcpy(info->format, "luks");
    snprintf(info->cipher_alg, sizeof(info->cipher_alg), "%s", calg_name(H->spec.alg));
    snprintf(info->cipher_mode, sizeof(info->cipher_mode), "%s", cmode_name(H->spec.mode));
    snprintf(info->ivgen_alg, sizeof(info->ivgen_alg), "%s", ivgen_name(H->spec.iv));
    if (H->spec.iv == IVGEN_ESSIV)
        snprintf(info->ivgen_hash_alg, sizeof(info->ivgen_hash_alg), "%s", halg_name(H->spec.ivhash));
    snprintf(info->hash_alg, sizeof(info->hash_alg), "%s", halg_name(H->hash));
    memcpy(info->uuid, h + H_UUID, 40);
    info->uuid[39] = '\0';
    for (char *u = info->uuid; *u; u++)     /* shown by info: printable only */
        if (*u < 0x20 || *u > 0x7e || *u == '"' || *u == '\\')
            *u = '?';
    info->payload_offset = payload;
    info->master_key_iters = mkit;

    uint64_t material = FQ_ALIGN_UP((uint64_t)H->key_bytes * LUKS_STRIPES, FQ_CRYPT_SECTOR);
    for (int i = 0; i < LUKS_SLOTS; i++) {
        const uint8_t *s = h + H_SLOTS + i * SLOT_SIZE;
        uint32_t state = fq_be32(s + S_ACTIVE), it = fq_be32(s + S_ITERS);
        uint32_t stripes = fq_be32(s + S_STRIPES);
        uint64_t koff = (uint64_t)fq_be32(s + S_OFFSET) * FQ_CRYPT_SECTOR;
        info->slots[i].key_offset = koff;
        info->slots[i].stripes = stripes;
        info->slots[i].iters = it;
        if (state == LUKS_SLOT_DISABLED)
            continue;
        if (state != LUKS_SLOT_ACTIVE) {
            fq_seterr(err, "LUKS key slot %d has an invalid state 0x%x", i, state);
            return -EINVAL;
        }
        if (stripes != LUKS_STRIPES || it == 0 || it > LUKS_MAX_ITERS) {
            fq_seterr(err, "LUKS key slot %d is corrupted (stripes %u, iterations %u)", i, stripes, it);
            return -EINVAL;
        }
        if (koff < LUKS_HDR_SIZE || koff + material > payload) {
            fq_seterr(err, "LUKS key slot %d key material at %llu (%llu bytes) is outside the "
                      "key area (%u to %llu)", i, (unsigned long long)koff,
                      (unsigned long long)material, LUKS_HDR_SIZE, (unsigned long long)payload);
            return -EINVAL;
        }
        info->slots[i].active = true;
    }
    return 0;
}

/* Try one active slot with the passphrase: the master key into mk on
 * success (1), 0 if the passphrase is not this slot's, -errno. */
static int try_slot(struct hdr *H, int i, fq_crypt_read_fn *rd, void *opaque, const void *pw,
                    size_t pwlen, uint8_t *mk)
{
    const uint8_t *s = H->raw + H_SLOTS + i * SLOT_SIZE;
    size_t kb = H->key_bytes, mlen = FQ_ALIGN_UP(kb * LUKS_STRIPES, FQ_CRYPT_SECTOR);
    uint8_t dk[64], digest[LUKS_DIGEST];
    uint8_t *m = malloc(mlen);
    struct fq_cipher *c = NULL;
    int r;

    if (!m)
        return -ENOMEM;
    r = rd(opaque, m, mlen, (uint64_t)fq_be32(s + S_OFFSET) * FQ_CRYPT_SECTOR);
    if (r < 0)
        goto out;
    pbkdf2_buf(H->hash, pw, pwlen, s + S_SALT, LUKS_SALT, fq_be32(s + S_ITERS), dk, kb);
    if (!(c = cipher_new(&H->spec, dk))) {
        r = -ENOMEM;
        goto out;
    }
    fq_cipher_sectors(c, 0, m, mlen, false);
    af_merge(H->hash, m, kb, LUKS_STRIPES, mk);
    pbkdf2_buf(H->hash, mk, kb, H->raw + H_MKSALT, LUKS_SALT, fq_be32(H->raw + H_MKITER), digest,
               LUKS_DIGEST);
    r = memcmp(digest, H->raw + H_MKDIGEST, LUKS_DIGEST) == 0;
out:
    fq_cipher_free(c);
    memset(dk, 0, sizeof(dk));
    memset(m, 0, mlen);
    free(m);
    return r;
}

int fq_luks_open(fq_crypt_read_fn *rd, void *opaque, uint64_t avail, const void *secret,
                 size_t secret_len, struct fq_encrypt_info *info, struct fq_cipher **out, char *err)
{
    struct hdr H;
    uint8_t mk[64];
    int r;

    *out = NULL;
    if (avail < LUKS_HDR_SIZE) {
        fq_seterr(err, "LUKS header area of %llu bytes is too small", (unsigned long long)avail);
        return -EINVAL;
    }
    if ((r = rd(opaque, H.raw, LUKS_HDR_SIZE, 0)) < 0) {
        fq_seterr(err, "Could not read the LUKS header: %s", strerror(-r));
        return r;
    }
    if ((r = check_header(&H, avail, info, err)) < 0 || !secret)
        return r;
    for (int i = 0; i < LUKS_SLOTS; i++) {
        if (!info->slots[i].active)
            continue;
        r = try_slot(&H, i, rd, opaque, secret, secret_len, mk);
        if (r < 0) {
            fq_seterr(err, "Could not read LUKS key slot %d: %s", i, strerror(-r));
            return r;
        }
        if (r == 1) {
            *out = cipher_new(&H.spec, mk);
            memset(mk, 0, sizeof(mk));
            return *out ? 0 : -ENOMEM;
        }
    }
    fq_seterr(err, "Invalid password, cannot unlock any keyslot");
    return -EPERM;
}

/* ---- create ---- */

/* The parameters with their defaults filled in, checked. */
static int params_spec(const struct fq_luks_params *p, struct cspec *c, enum halg *hash, char *err)
{
    const char *alg = p->cipher_alg ? p->cipher_alg : "aes-256";
    const char *mode = p->cipher_mode ? p->cipher_mode : "xts";
    const char *iv = p->ivgen_alg ? p->ivgen_alg : "plain64";
    const char *h = p->hash_alg ? p->hash_alg : "sha256";

    c->alg = calg_by_name(alg);
    c->mode = cmode_by_name(mode);
    c->iv = ivgen_by_name(iv);
    c->ivhash = c->iv == IVGEN_ESSIV ? halg_by_name(p->ivgen_hash_alg ? p->ivgen_hash_alg : "sha256")
                                     : HALG_NONE;
    *hash = halg_by_name(h);
    if (c->alg == CALG_NONE) {
        fq_seterr(err, "Cipher algorithm '%s' is not supported (aes-128, aes-192, aes-256)", alg);
        return -ENOTSUP;
    }
    if (c->mode == CMODE_NONE) {
        fq_seterr(err, "Cipher mode '%s' is not supported (xts, cbc)", mode);
        return -ENOTSUP;
    }
    if (c->iv == IVGEN_NONE) {
        fq_seterr(err, "IV generator '%s' is not supported (plain, plain64, essiv)", iv);
        return -ENOTSUP;
    }
    if (*hash == HALG_NONE || (c->iv == IVGEN_ESSIV && c->ivhash == HALG_NONE)) {
        fq_seterr(err, "Hash algorithm '%s' is not supported (sha1, sha256, sha384, sha512)",
                  *hash == HALG_NONE ? h : p->ivgen_hash_alg);
        return -ENOTSUP;
    }
    if ((cspec_key_bytes(c) * LUKS_STRIPES) % FQ_CRYPT_SECTOR) {
        /* key material that ends inside a sector: readers that decrypt
         * it in whole sectors refuse (or fail on) such headers */
        fq_seterr(err, "Cipher %s in %s mode is not supported: its key material would not fill "
                  "whole sectors", alg, mode);
        return -ENOTSUP;
    }
    if (c->iv == IVGEN_ESSIV && calg_aes_of(halg_digest_bytes(c->ivhash)) == CALG_NONE) {
        fq_seterr(err, "No AES cipher with key size %zu available", halg_digest_bytes(c->ivhash));
        return -ENOTSUP;
    }
    return 0;
}

int fq_luks_params_check(const struct fq_luks_params *p, char *err)
{
    struct cspec c;
    enum halg h;

    return params_spec(p, &c, &h, err);
}

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* PBKDF2 iterations of `h` that take about `ms` milliseconds here, at
 * least LUKS_MIN_ITERS, at most LUKS_MAX_ITERS. */
static unsigned iters_for(enum halg h, size_t outlen, uint64_t ms)
{
    static const uint8_t salt[LUKS_SALT];
    uint8_t out[64];
    unsigned n = 1024;
    uint64_t dt;

    for (;;) {
        uint64_t t0 = now_ns();
        pbkdf2_buf(h, "fastqcow", 8, salt, sizeof(salt), n, out, outlen);
        dt = now_ns() - t0;
        if (dt >= 5000000 || n >= LUKS_MAX_ITERS / 2)
            break;
        n *= 2;
    }
    double want = (double)n * (double)ms * 1e6 / (double)(dt ? dt : 1);
    if (want < LUKS_MIN_ITERS)
        return LUKS_MIN_ITERS;
    return want > LUKS_MAX_ITERS ? LUKS_MAX_ITERS : (unsigned)want;
}

/* A random version 4 UUID, as text. */
static int make_uuid(char out[40])
{
    uint8_t u[16];
    int r = crypt_random(u, sizeof(u));

    if (r < 0)
        return r;
    u[6] = (uint8_t)((u[6] & 0x0f) | 0x40);
    u[8] = (uint8_t)((u[8] & 0x3f) | 0x80);
    snprintf(out, 40, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
             u[14], u[15]);
    return 0;
}

int fq_luks_create(const struct fq_luks_params *p, const void *secret, size_t secret_len,
                   uint8_t **hdr_out, size_t *len_out, struct fq_cipher **out, char *err)
{
    struct cspec c;
    enum halg hash;
    uint8_t mk[64], dk[64];
    uint64_t ms = p->iter_time_ms ? p->iter_time_ms : 2000;
    int r = params_spec(p, &c, &hash, err);

    *out = NULL;
    if (r < 0)
        return r;
    size_t kb = cspec_key_bytes(&c);
    size_t mlen = FQ_ALIGN_UP(kb * LUKS_STRIPES, FQ_CRYPT_SECTOR);
    uint32_t slot_sectors = (uint32_t)FQ_ALIGN_UP(mlen / FQ_CRYPT_SECTOR, LUKS_ALIGN_SECTORS);
    uint32_t payload = LUKS_ALIGN_SECTORS + LUKS_SLOTS * slot_sectors;
    size_t total = (size_t)payload * FQ_CRYPT_SECTOR;
    uint8_t *h = calloc(1, total);
    struct fq_cipher *kc = NULL;

    if (!h)
        return -ENOMEM;
    memcpy(h + H_MAGIC, LUKS_MAGIC, 6);
    fq_put_be16(h + H_VERSION, 1);
    strcpy((char *)h + H_CIPHER, "aes");
    if (c.iv == IVGEN_ESSIV)
        snprintf((char *)h + H_MODE, 32, "%s-essiv:%s", cmode_name(c.mode), halg_name(c.ivhash));
    else
        snprintf((char *)h + H_MODE, 32, "%s-%s", cmode_name(c.mode), ivgen_name(c.iv));
    snprintf((char *)h + H_HASH, 32, "%s", halg_name(hash));
    fq_put_be32(h + H_PAYLOAD, payload);
    fq_put_be32(h + H_KEYBYTES, (uint32_t)kb);
    unsigned slot_iters = iters_for(hash, kb, ms);
    unsigned mk_iters = FQ_MAX(LUKS_MIN_ITERS, slot_iters / 8);
    if ((r = crypt_random(mk, kb)) < 0 || (r = crypt_random(h + H_MKSALT, LUKS_SALT)) < 0 ||
        (r = make_uuid((char *)h + H_UUID)) < 0)
        goto fail;
    fq_put_be32(h + H_MKITER, mk_iters);
    pbkdf2_buf(hash, mk, kb, h + H_MKSALT, LUKS_SALT, mk_iters, h + H_MKDIGEST, LUKS_DIGEST);
    for (int i = 0; i < LUKS_SLOTS; i++) {
        uint8_t *s = h + H_SLOTS + i * SLOT_SIZE;
        fq_put_be32(s + S_ACTIVE, i == 0 ? LUKS_SLOT_ACTIVE : LUKS_SLOT_DISABLED);
        fq_put_be32(s + S_OFFSET, LUKS_ALIGN_SECTORS + (uint32_t)i * slot_sectors);
        fq_put_be32(s + S_STRIPES, LUKS_STRIPES);
    }
    /* slot 0: the master key split, encrypted with the passphrase's key */
    uint8_t *s0 = h + H_SLOTS;
    uint8_t *m = h + (size_t)LUKS_ALIGN_SECTORS * FQ_CRYPT_SECTOR;
    fq_put_be32(s0 + S_ITERS, slot_iters);
    if ((r = crypt_random(s0 + S_SALT, LUKS_SALT)) < 0 || (r = af_split(hash, mk, kb, LUKS_STRIPES, m)) < 0)
        goto fail;
    pbkdf2_buf(hash, secret, secret_len, s0 + S_SALT, LUKS_SALT, slot_iters, dk, kb);
    r = -ENOMEM;
    if (!(kc = cipher_new(&c, dk)))
        goto fail;
    fq_cipher_sectors(kc, 0, m, mlen, true);
    if (!(*out = cipher_new(&c, mk)))
        goto fail;
    fq_cipher_free(kc);
    memset(mk, 0, sizeof(mk));
    memset(dk, 0, sizeof(dk));
    *hdr_out = h;
    *len_out = total;
    return 0;
fail:
    fq_cipher_free(kc);
    memset(mk, 0, sizeof(mk));
    memset(dk, 0, sizeof(dk));
    free(h);
    if (r == -ENOMEM)
        fq_seterr(err, "Out of memory creating the LUKS header");
    else
        fq_seterr(err, "Could not create the LUKS header: %s", strerror(-r));
    return r;
}
