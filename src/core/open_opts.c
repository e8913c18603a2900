/* open_opts.c: fq_open_opts_set: open options given by name, as qemu's
 * --image-opts, -drive and json: specifications name them, with qemu's
 * number syntax and its messages for values it refuses (sizes: decimal,
 * octal-free, or hex; a decimal fraction with a suffix of k, M, G, T, P or
 * E; seconds: a C integer, where a negative one wraps around and is then
 * too big). What depends on the image is checked when it is opened.
 * SPDX-License-Identifier: MIT
 */
#include <ctype.h>
#include <limits.h>

#include "util.h"

static int size_error(char *err, const char *key)
{
    fq_seterr(err, "Parameter '%s' expects a non-negative number below 2^64\n"
              "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
              "and exabytes, respectively.", key);
    return -EINVAL;
}

/* qemu's size syntax. 0, -EINVAL (not a size) or -ERANGE (2^64 or more). */
int fq_qsize_parse(const char *v, uint64_t *out)
{
    static const char sfx[] = "bkmgtpe";
    const char *p = v;
    unsigned __int128 frac = 0, scale = 1, total;
    uint64_t ival = 0, mul = 1;
    bool hex;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '+')
        p++;
    if (!isdigit((unsigned char)*p))
        return -EINVAL;
    hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
    if (hex) {
        p += 2;
        if (!isxdigit((unsigned char)*p))
            return -EINVAL;
        for (; isxdigit((unsigned char)*p); p++) {
            unsigned d = isdigit((unsigned char)*p) ? (unsigned)(*p - '0')
                                                    : (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
            if (ival > (UINT64_MAX - d) / 16)
                return -ERANGE;
            ival = ival * 16 + d;
        }
    } else {
        for (; isdigit((unsigned char)*p); p++) {
            unsigned d = (unsigned)(*p - '0');
            if (ival > (UINT64_MAX - d) / 10)
                return -ERANGE;
            ival = ival * 10 + d;
        }
        if (*p == '.') {
            int nd = 0;
            for (p++; isdigit((unsigned char)*p); p++)
                if (nd++ < 19) {         /* finer digits do not count */
                    frac = frac * 10 + (unsigned)(*p - '0');
                    scale *= 10;
                }
        }
    }
    if (*p) {
        const char *q = strchr(sfx, tolower((unsigned char)*p));
        if (!q)
            return -EINVAL;
        mul = 1ull << (10 * (q - sfx));
        p++;
    }
    if (*p || (mul == 1 && frac != 0))
        return -EINVAL;           /* a fraction of a byte */
    total = (unsigned __int128)ival * mul + frac * mul / scale;
    if (total > UINT64_MAX)
        return -ERANGE;
    *out = (uint64_t)total;
    return 0;
}

/* qemu's number syntax for counts: a C integer of any base prefix. */
static int parse_qnumber(const char *key, const char *v, uint64_t *out, char *err)
{
    const char *p = v;
    bool neg = false;
    unsigned base = 10;
    uint64_t n = 0;

    while (isspace((unsigned char)*p))
        p++;
    if (*p == '+' || *p == '-')
        neg = *p++ == '-';
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') && isxdigit((unsigned char)p[2])) {
        base = 16;
        p += 2;
    } else if (p[0] == '0') {
        base = 8;
    }
    if (!isxdigit((unsigned char)*p))
        goto bad;
    for (; *p; p++) {
        unsigned d;
        if (isdigit((unsigned char)*p))
            d = (unsigned)(*p - '0');
        else if (isxdigit((unsigned char)*p))
            d = (unsigned)(tolower((unsigned char)*p) - 'a' + 10);
        else
            goto bad;
        if (d >= base)
            goto bad;
        if (n > (UINT64_MAX - d) / base) {
            fq_seterr(err, "Value '%s' is too large for parameter '%s'", v, key);
            return -EINVAL;
        }
        n = n * base + d;
    }
    *out = neg ? (uint64_t)0 - n : n;
    return 0;
bad:
    fq_seterr(err, "Parameter '%s' expects a number", key);
    return -EINVAL;
}

int fq_open_opts_set(struct fq_open_opts *o, const char *key, const char *value, char *err)
{
    static const struct { const char *key; unsigned bit; } sizes[] = {
        { "cache-size", FQ_CACHE_GIVEN_SIZE },
        { "l2-cache-size", FQ_CACHE_GIVEN_L2_SIZE },
        { "refcount-cache-size", FQ_CACHE_GIVEN_REFCOUNT_SIZE },
        { "l2-cache-entry-size", FQ_CACHE_GIVEN_ENTRY_SIZE },
    };
    uint64_t v;
    int r;

    if (!o || !key || !value)
        return -EINVAL;
    for (size_t i = 0; i < FQ_ARRAY_SIZE(sizes); i++) {
        if (strcmp(key, sizes[i].key))
            continue;
        r = fq_qsize_parse(value, &v);
        if (r == -ERANGE) {
            fq_seterr(err, "Value '%s' is out of range for parameter '%s'", value, key);
            return -EINVAL;
        }
        if (r < 0)
            return size_error(err, key);
        uint64_t *field[] = { &o->cache_size, &o->l2_cache_size, &o->refcount_cache_size,
                              &o->l2_cache_entry_size };
        *field[i] = v;
        o->cache_given |= sizes[i].bit;
        return 0;
    }
    if (!strcmp(key, "cache-clean-interval")) {
        if ((r = parse_qnumber(key, value, &v, err)) < 0)
            return r;
        if (v > UINT_MAX) {
            fq_seterr(err, "Cache clean interval too big");
            return -EINVAL;
        }
        o->cache_clean_interval = v;
        o->cache_given |= FQ_CACHE_GIVEN_CLEAN;
        return 0;
    }
    return -ENOENT;
}
