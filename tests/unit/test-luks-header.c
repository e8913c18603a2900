/* test-luks-header.c: the LUKS1 header code (src/crypto/) on its own, in
 * memory: a header made for a passphrase unlocks with it and with no
 * other; its data cipher round-trips sectors and changes them; each
 * cipher, mode, IV generator and hash offered makes a header that opens;
 * every single-byte change of the header proper (iteration fields kept in
 * range, so that a run stays quick) and of the key material is refused
 * with a message or, where it does not matter (a disabled slot, the
 * UUID, bytes past a name's NUL), still opens with the same key; never a
 * crash (run under ASan in CI). Known answers of PBKDF2 (RFC 6070) anchor the primitive.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypt.h"
#include "crypto/algs.h"
#include "util.h"

static int fails;
#define CHECK(c, ...) do { if (!(c)) { fails++; printf("FAIL %s:%d: ", __FILE__, __LINE__); \
                                       printf(__VA_ARGS__); printf("\n"); } } while (0)

struct mem { const uint8_t *b; size_t len; };

/* fq_crypt_read_fn over a buffer: past its end reads as zeros. */
static int mem_read(void *opaque, void *buf, size_t len, uint64_t off)
{
    struct mem *m = opaque;

    memset(buf, 0, len);
    if (off < m->len)
        memcpy(buf, m->b + off, FQ_MIN(len, m->len - (size_t)off));
    return 0;
}

/* Open `h` with `pw`; returns the result, the cipher freed. */
static int try_open(const uint8_t *h, size_t len, const char *pw, char *err)
{
    struct mem m = { h, len };
    struct fq_encrypt_info info;
    struct fq_cipher *c = NULL;
    int r = fq_luks_open(mem_read, &m, len, pw, pw ? strlen(pw) : 0, &info, &c, err);

    if (r == 0 && pw && !c)
        r = -1000;
    fq_cipher_free(c);
    return r;
}

static void known_answers(void)
{
    static const uint8_t want1[20] = { 0x0c, 0x60, 0xc8, 0x0f, 0x96, 0x1f, 0x0e, 0x71, 0xf3, 0xa9,
                                       0xb5, 0x24, 0xaf, 0x60, 0x12, 0x06, 0x2f, 0xe0, 0x37, 0xa6 };
    static const uint8_t want2[20] = { 0xea, 0x6c, 0x01, 0x4d, 0xc7, 0x2d, 0x6f, 0x8c, 0xcd, 0x1e,
                                       0xd9, 0x2a, 0xce, 0x1d, 0x41, 0xf0, 0xd8, 0xde, 0x89, 0x57 };
    uint8_t out[20];

    pbkdf2_buf(HALG_SHA1, "password", 8, (const uint8_t *)"salt", 4, 1, out, 20);
    CHECK(!memcmp(out, want1, 20), "PBKDF2-SHA1 c=1");
    pbkdf2_buf(HALG_SHA1, "password", 8, (const uint8_t *)"salt", 4, 2, out, 20);
    CHECK(!memcmp(out, want2, 20), "PBKDF2-SHA1 c=2");
}

/* Make a header; check it unlocks with pw only and its cipher works. */
static uint8_t *made(const struct fq_luks_params *p, size_t *len, const char *what)
{
    char err[FQ_ERR_MAX] = "";
    uint8_t *h = NULL, sec[4096], copy[4096];
    struct fq_cipher *c = NULL;
    int r = fq_luks_create(p, "pw", 2, &h, len, &c, err);

    CHECK(r == 0, "%s: create: %s", what, err);
    if (r < 0)
        return NULL;
    for (size_t i = 0; i < sizeof(sec); i++)
        sec[i] = (uint8_t)(i * 7);
    memcpy(copy, sec, sizeof(sec));
    fq_cipher_sectors(c, 12345, sec, sizeof(sec), true);
    CHECK(memcmp(sec, copy, 512) != 0, "%s: encryption changed nothing", what);
    fq_cipher_sectors(c, 12345, sec, sizeof(sec), false);
    CHECK(!memcmp(sec, copy, sizeof(sec)), "%s: decryption does not give the data back", what);
    fq_cipher_free(c);
    CHECK(try_open(h, *len, "pw", err) == 0, "%s: open with the passphrase: %s", what, err);
    CHECK(try_open(h, *len, "pX", err) == -EPERM && strstr(err, "Invalid password"),
          "%s: a wrong passphrase: %s", what, err);
    CHECK(try_open(h, *len, NULL, err) == 0, "%s: header only: %s", what, err);
    return h;
}

int main(void)
{
    static const struct fq_luks_params ps[] = {
        { .iter_time_ms = 1 },
        { "aes-128", "cbc", "essiv", "sha256", "sha1", 1 },
        { "aes-256", "cbc", "plain64", NULL, "sha512", 1 },
        { "aes-128", "xts", "plain", NULL, "sha384", 1 },
        { "aes-192", "xts", "plain64", NULL, "sha256", 1 },
    };
    static const struct fq_luks_params bad[] = {
        { "twofish-128", .iter_time_ms = 1 }, { NULL, "ecb", .iter_time_ms = 1 },
        { NULL, NULL, "foo", .iter_time_ms = 1 }, { NULL, NULL, NULL, NULL, "md5", 1 },
        { NULL, "cbc", "essiv", "sha512", NULL, 1 }, { "aes-192", "cbc", .iter_time_ms = 1 },
    };
    char err[FQ_ERR_MAX];
    size_t len = 0;
    uint8_t *h = NULL;

    known_answers();
    for (size_t i = 0; i < FQ_ARRAY_SIZE(ps); i++) {
        char what[32];
        snprintf(what, sizeof(what), "params %zu", i);
        free(h);
        h = made(&ps[i], &len, what);
    }
    for (size_t i = 0; i < FQ_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        CHECK(fq_luks_params_check(&bad[i], err) < 0 && err[0], "bad params %zu accepted", i);
    }
    free(h);
    if (!(h = made(&ps[0], &len, "default")))
        return 1;

    /* each byte of the header proper changed: refused, or the same key */
    uint8_t *m = malloc(len);
    int refused = 0, opened = 0;
    for (size_t off = 0; off < 592; off++) {
        /* iteration counts: only their low byte, +-1 (more would be
         * slow, not wrong: they are bounded at 2^25) */
        size_t so = (off - 208) % 48;
        bool iters = (off >= 164 && off < 168) || (off >= 208 && so >= 4 && so < 8);
        bool low = off == 167 || (off >= 208 && so == 7);
        for (int v = 0; v < 2; v++) {
            if (iters && (v || !low))
                continue;
            memcpy(m, h, len);
            m[off] ^= v ? 0xff : 0x01;
            err[0] = '\0';
            int r = try_open(m, len, "pw", err);
            CHECK(r == 0 || (r < 0 && err[0]), "byte %zu ^ %d: %d without a message", off, v, r);
            r == 0 ? opened++ : refused++;
        }
    }
    CHECK(refused > 250 && opened > 10, "mutations: %d refused, %d opened", refused, opened);
    /* the key material of slot 0 changed: that slot no longer unlocks */
    memcpy(m, h, len);
    m[4096 + 1000] ^= 0x40;
    CHECK(try_open(m, len, "pw", err) == -EPERM, "damaged key material opened");
    /* the area cut short */
    CHECK(try_open(h, 591, "pw", err) < 0 && try_open(h, 4096, "pw", err) == -EINVAL,
          "a short header area accepted");
    free(m);
    free(h);
    if (fails)
        printf("%d failure(s)\n", fails);
    else
        printf("PASS\n");
    return fails ? 1 : 0;
}
