/* crypt.c: LUKS encrypted qcow2 images (crypt_method 2). The LUKS header
 * and key material live in clusters of their own that the "full disk
 * encryption header" extension points at (offset, length); guest data is
 * encrypted sector by sector (512 bytes) with the cipher the header names,
 * each sector's initial vector made from its *host* offset / 512; metadata
 * is never encrypted. The crypto layer (src/crypto/) does the header and
 * the cipher; this file ties them to the image:
 *
 *  - open: the extension checked, the header parsed, and with a secret
 *    the master key unlocked (check opens without one);
 *  - create: a new header written into clusters allocated for it;
 *  - data: rw.c passes each data read and write of the image file through
 *    a bounce buffer that qcow2_crypt_buf en/decrypts (on offload workers);
 *  - a write or write-zeroes not aligned to 512 bytes becomes a read-
 *    modify-write of whole sectors here (qcow2_crypt_rmw), run
 *    synchronously so that two never interleave on one sector.
 * SPDX-License-Identifier: MIT
 */
#include <stdio.h>

#include "crypt.h"
#include "qcow2.h"

/* The header's bytes at `off` of its area (fq_crypt_read_fn). */
static int hdr_read(void *opaque, void *buf, size_t len, uint64_t off)
{
    struct qcow2 *s = opaque;

    return fq_bdev_pread_sync(s->file, buf, len, s->crypt_hdr_off + off);
}

int qcow2_crypt_open(struct qcow2 *s, const struct fq_open_opts *opts, char *err)
{
    uint64_t end;
    int r;

    if (s->crypt_method != QCOW2_CRYPT_LUKS)
        return 0;
    if (!s->crypt_hdr_len) {
        fq_seterr(err, "LUKS encrypted image has no encryption header extension");
        return -EINVAL;
    }
    if (!FQ_IS_ALIGNED(s->crypt_hdr_off, s->cluster_size) || s->crypt_hdr_off < s->cluster_size ||
        fq_add_ovf(s->crypt_hdr_off, s->crypt_hdr_len, &end) || end > (1ull << 56)) {
        fq_seterr(err, "Encryption header at 0x%llx (%llu bytes) is not a valid cluster range",
                  (unsigned long long)s->crypt_hdr_off, (unsigned long long)s->crypt_hdr_len);
        return -EINVAL;
    }
    if (!FQ_IS_ALIGNED(s->bs->size, FQ_CRYPT_SECTOR)) {
        fq_seterr(err, "Encrypted image size %llu is not a multiple of %u bytes",
                  (unsigned long long)s->bs->size, FQ_CRYPT_SECTOR);
        return -EINVAL;
    }
    if (!opts->key_secret && !opts->check_mode) {
        fq_seterr(err, "Parameter 'encrypt.key-secret' is required for cipher");
        return -EINVAL;
    }
    if (!(s->crypt_info = calloc(1, sizeof(*s->crypt_info))))
        return -ENOMEM;
    r = fq_luks_open(hdr_read, s, s->crypt_hdr_len, opts->check_mode ? NULL : opts->key_secret,
                     opts->key_secret_len, s->crypt_info, &s->crypt, err);
    return r;
}

void qcow2_crypt_buf(const struct qcow2 *s, uint64_t host, uint8_t *buf, size_t len, bool enc)
{
    fq_cipher_sectors(s->crypt, host / FQ_CRYPT_SECTOR, buf, len, enc);
}

/* ---- creation ---- */

/* The encryption options of a new image from `o`, checked. */
static int crypt_params(const struct fq_create_opts *o, struct fq_luks_params *pp, char *err)
{
    struct fq_luks_params p = {
        .cipher_alg = o->encrypt.cipher_alg, .cipher_mode = o->encrypt.cipher_mode,
        .ivgen_alg = o->encrypt.ivgen_alg, .ivgen_hash_alg = o->encrypt.ivgen_hash_alg,
        .hash_alg = o->encrypt.hash_alg, .iter_time_ms = o->encrypt.iter_time,
    };

    if (strcmp(o->encrypt.format, "luks")) {
        fq_seterr(err, "Encryption format '%s' is not supported for new images (use luks)",
                  o->encrypt.format);
        return -ENOTSUP;
    }
    if (!o->encrypt.key_secret) {
        fq_seterr(err, "Parameter 'encrypt.key-secret' is required for cipher");
        return -EINVAL;
    }
    if (!FQ_IS_ALIGNED(o->size, FQ_CRYPT_SECTOR)) {
        fq_seterr(err, "Encrypted image size must be a multiple of %u bytes", FQ_CRYPT_SECTOR);
        return -EINVAL;
    }
    if (o->prealloc != FQ_PREALLOC_OFF) {
        fq_seterr(err, "Preallocation is not supported with encryption");
        return -ENOTSUP;
    }
    *pp = p;
    return fq_luks_params_check(&p, err);
}

int qcow2_crypt_validate(const struct fq_create_opts *o, char *err)
{
    struct fq_luks_params p;

    return o->encrypt.format ? crypt_params(o, &p, err) : 0;
}

int qcow2_crypt_create(const struct fq_create_opts *o, uint8_t **hdr, size_t *len, char *err)
{
    struct fq_luks_params p;
    struct fq_cipher *c = NULL;
    int r = crypt_params(o, &p, err);

    if (r == 0)
        r = fq_luks_create(&p, o->encrypt.key_secret, o->encrypt.key_secret_len, hdr, len, &c, err);
    fq_cipher_free(c);
    return r;
}

/* ---- unaligned writes ---- */

bool qcow2_crypt_unaligned(const struct qcow2 *s, const struct fq_req *req)
{
    return s->crypt && (req->op == FQ_OP_WRITE || req->op == FQ_OP_WRITE_ZEROES) &&
           !FQ_IS_ALIGNED(req->off | req->len, FQ_CRYPT_SECTOR);
}

/* Write [off, off+len) from `src` (iovecs, or zeros if NULL) as whole
 * sectors: the sectors it covers in part read first. */
static int rmw(struct fq_bdev *bs, uint64_t off, uint64_t len, const struct iovec *iov, int iovcnt,
               size_t iov_off, unsigned flags)
{
    uint64_t lo = FQ_ALIGN_DOWN(off, FQ_CRYPT_SECTOR);
    uint64_t hi = FQ_ALIGN_UP(off + len, (uint64_t)FQ_CRYPT_SECTOR);
    CLEANUP_FREE uint8_t *buf = fq_memalign((size_t)(hi - lo));
    struct iovec v = { buf, (size_t)(hi - lo) };
    struct fq_req rd = { .op = FQ_OP_READ, .iov = &v, .iovcnt = 1, .len = FQ_CRYPT_SECTOR,
                         .flags = flags };
    int r = 0;

    if (!buf)
        return -ENOMEM;
    if (off != lo) {
        rd.off = lo;
        r = qcow2_io_sync(bs, &rd);
    }
    if (r == 0 && off + len != hi && (hi - lo > FQ_CRYPT_SECTOR || off == lo)) {
        rd.off = hi - FQ_CRYPT_SECTOR;
        rd.iov_off = (size_t)(hi - lo - FQ_CRYPT_SECTOR);
        r = qcow2_io_sync(bs, &rd);
    }
    if (r < 0)
        return r;
    if (iov)
        fq_iov_to_buf(iov, iovcnt, iov_off, buf + (off - lo), (size_t)len);
    else
        memset(buf + (off - lo), 0, (size_t)len);
    struct fq_req wr = { .op = FQ_OP_WRITE, .off = lo, .len = hi - lo, .iov = &v, .iovcnt = 1,
                         .flags = flags };
    return qcow2_io_sync(bs, &wr);
}

int qcow2_crypt_rmw(struct fq_bdev *bs, struct fq_req *req)
{
    uint64_t off = req->off, end = req->off + req->len;
    unsigned vm = req->flags & FQ_REQ_VMSTATE;

    if (req->op == FQ_OP_WRITE)
        return rmw(bs, off, req->len, req->iov, req->iovcnt, req->iov_off, vm);
    /* write-zeroes: the whole sectors as such, the partial ones rewritten */
    uint64_t a = FQ_ALIGN_UP(off, (uint64_t)FQ_CRYPT_SECTOR), b = FQ_ALIGN_DOWN(end, FQ_CRYPT_SECTOR);
    if (a >= b)
        return rmw(bs, off, req->len, NULL, 0, 0, vm);
    int r = 0;
    if (off < a)
        r = rmw(bs, off, a - off, NULL, 0, 0, vm);
    if (r == 0) {
        struct fq_req z = { .op = FQ_OP_WRITE_ZEROES, .off = a, .len = b - a, .flags = req->flags };
        r = qcow2_io_sync(bs, &z);
    }
    if (r == 0 && b < end)
        r = rmw(bs, b, end - b, NULL, 0, 0, vm);
    return r;
}
