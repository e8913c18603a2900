/* common/seeded.h: seeded randomness for the io, bench and gen
 * subcommands: a PRNG (bench and gen's random offsets and orders), the
 * seeded content that `io -R` writes and checks, and the iovec walker that
 * applies it. Header-only (static inline).
 *
 * Seeded content: the byte at absolute guest offset `o` is byte (o % 8),
 * little-endian, of fqio_word(seed, o / 8). Every 8-byte word of the image
 * is thus distinct for a given seed, so data placed at the wrong offset (a
 * misdirected extent, a wrong iov_off) fails verification, whatever the
 * alignment of the request.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_SEEDED_H
#define FQ_TOOLS_SEEDED_H

#include <endian.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

/* splitmix64 finaliser: a bijective 64-bit mix. */
static inline uint64_t fqio_mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

/* Sequential PRNG (splitmix64); state may be seeded with any value. */
static inline uint64_t fqio_rand(uint64_t *state)
{
    *state += 0x9e3779b97f4a7c15ull;
    return fqio_mix64(*state);
}

/* Uniform integer in [0, n) without modulo bias (n > 0). */
static inline uint64_t fqio_rand_below(uint64_t *state, uint64_t n)
{
    uint64_t limit = -n % n; /* 2^64 mod n: values below it are rejected */
    uint64_t r;

    do
        r = fqio_rand(state);
    while (r < limit);
    return r % n;
}

/* The 8-byte word of seeded content at word index `idx`. */
static inline uint64_t fqio_word(uint64_t seed, uint64_t idx)
{
    return fqio_mix64(fqio_mix64(seed ^ 0x5eedc0ffee123457ull) + idx);
}

static inline uint8_t fqio_byte(uint64_t seed, uint64_t off)
{
    return (uint8_t)(fqio_word(seed, off >> 3) >> ((off & 7) * 8));
}

/* Fill buf with the seeded content of guest range [off, off + len). */
static inline void fqio_fill_seed(uint64_t seed, uint64_t off, void *buf, size_t len)
{
    uint8_t *p = buf;

    for (; len && (off & 7); len--)
        *p++ = fqio_byte(seed, off++);
    for (; len >= 8; len -= 8, p += 8, off += 8) {
        uint64_t w = htole64(fqio_word(seed, off >> 3));
        memcpy(p, &w, 8);
    }
    for (; len; len--)
        *p++ = fqio_byte(seed, off++);
}

/* Returns the index of the first byte of buf that differs from the seeded
 * content of [off, off + len), or len if all match. */
static inline size_t fqio_verify_seed(uint64_t seed, uint64_t off, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    size_t i = 0;

    for (; i < len && ((off + i) & 7); i++)
        if (p[i] != fqio_byte(seed, off + i))
            return i;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = htole64(fqio_word(seed, (off + i) >> 3));
        if (memcmp(p + i, &w, 8))
            break;
    }
    for (; i < len; i++)
        if (p[i] != fqio_byte(seed, off + i))
            return i;
    return len;
}

/* Call fn(ptr, n, pos, arg) on each piece of the iovec range [iov_off,
 * iov_off + len); pos is the piece's position within the range. Stops and
 * returns fn's value when it is non-zero; returns 0 otherwise. */
typedef int fqio_piece_fn(uint8_t *p, size_t n, size_t pos, void *arg);
static inline int fqio_iov_walk(const struct iovec *iov, int cnt, size_t iov_off, size_t len,
                                fqio_piece_fn *fn, void *arg)
{
    size_t pos = 0;

    for (int i = 0; i < cnt && pos < len; i++) {
        if (iov_off >= iov[i].iov_len) {
            iov_off -= iov[i].iov_len;
            continue;
        }
        size_t n = iov[i].iov_len - iov_off;
        if (n > len - pos)
            n = len - pos;
        int r = fn((uint8_t *)iov[i].iov_base + iov_off, n, pos, arg);
        if (r)
            return r;
        pos += n;
        iov_off = 0;
    }
    return 0;
}

#endif
