/* header.c: reading, validating and rewriting the qcow2 header and
 * its extensions.
 *
 * Every field is checked against the format's limits before use; the
 * message names the field, its value and what was expected. Unknown
 * header extensions are kept byte for byte and written back whenever the
 * header is rewritten.
 * SPDX-License-Identifier: MIT
 */
#include <stdarg.h>
#include <stdio.h>

#include "qcow2.h"

static const struct {
    int type, bit;
    const char *name;
} known_features[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

int qcow2_default_feature_table(uint8_t **out, uint32_t *len)
{
    size_t n = FQ_ARRAY_SIZE(known_features);
    uint8_t *t = calloc(n, 48);

    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        t[i * 48] = (uint8_t)known_features[i].type;
        t[i * 48 + 1] = (uint8_t)known_features[i].bit;
        memcpy(t + i * 48 + 2, known_features[i].name, strlen(known_features[i].name));
    }
    *out = t;
    *len = (uint32_t)(n * 48);
    return 0;
}

const char *qcow2_feature_name(struct qcow2 *s, int type, int bit, char *buf, size_t len)
{
    /* The image's own feature-name table wins: it may name features that
     * are newer than this library. */
    for (uint32_t i = 0; s->feature_table && i + 48 <= s->feature_table_len; i += 48) {
        const uint8_t *e = s->feature_table + i;
        if (e[0] == type && e[1] == bit) {
            snprintf(buf, len, "%.46s", (const char *)e + 2);
            return buf;
        }
    }
    for (size_t i = 0; i < FQ_ARRAY_SIZE(known_features); i++)
        if (known_features[i].type == type && known_features[i].bit == bit) {
            snprintf(buf, len, "%s", known_features[i].name);
            return buf;
        }
    snprintf(buf, len, "unknown feature bit %d", bit);
    return buf;
}

/* Parse the extension area of cluster 0 (`hdr`, `hlen` bytes valid). */
static int read_extensions(struct qcow2 *s, const uint8_t *hdr, uint64_t hlen,
                           uint64_t end, char *err)
{
    uint64_t off = s->header_length;

    while (off < end) {
        if (end - off < 8) {
            fq_seterr(err, "Header extension at offset %llu is truncated (cluster 0 ends at %llu)",
                      (unsigned long long)off, (unsigned long long)end);
            return -EINVAL;
        }
        uint32_t type = fq_be32(hdr + off), len = fq_be32(hdr + off + 4);
        if (type == QEXT_END)
            return 0;
        off += 8;
        if (len > end - off) {
            fq_seterr(err, "Header extension 0x%08x at offset %llu: length %u runs past the end of cluster 0",
                      type, (unsigned long long)off - 8, len);
            return -EINVAL;
        }
        const uint8_t *d = hdr + off;
        switch (type) {
        case QEXT_BACKING_FORMAT:
            if (len > 63) {
                fq_seterr(err, "Backing format extension is %u bytes (at most 63)", len);
                return -EINVAL;
            }
            free(s->backing_format);
            s->backing_format = strndup((const char *)d, len);
            break;
        case QEXT_FEATURE_TABLE:
            free(s->feature_table);
            s->feature_table = malloc(len ? len : 1);
            if (!s->feature_table)
                return -ENOMEM;
            memcpy(s->feature_table, d, len);
            s->feature_table_len = len;
            break;
        case QEXT_CRYPTO:
            if (s->crypt_method != QCOW2_CRYPT_LUKS) {
                fq_seterr(err, "Full disk encryption header extension present but crypt_method is %u",
                          s->crypt_method);
                return -EINVAL;
            }
            if (len != QEXT_CRYPTO_LEN) {
                fq_seterr(err, "Full disk encryption header extension is %u bytes (16 expected)", len);
                return -EINVAL;
            }
            s->crypt_hdr_off = fq_be64(d);
            s->crypt_hdr_len = fq_be64(d + 8);
            /* kept as it is for header rewrites */
            __attribute__((fallthrough));
        default: {
            struct qext x = { type, len, malloc(len ? len : 1) };
            if (!x.data)
                return -ENOMEM;
            memcpy(x.data, d, len);
            if (qext_vec_push(&s->exts, x) < 0) {
                free(x.data);
                return -ENOMEM;
            }
            break;
        }
        }
        off += FQ_ALIGN_UP((uint64_t)len, 8);
    }
    (void)hlen;
    return 0;
}

int qcow2_read_header(struct qcow2 *s, char *err)
{
    uint8_t first[QH_V3_LENGTH];
    CLEANUP_FREE uint8_t *hdr = NULL;
    uint64_t file_len = s->file->size;
    char name[64];
    int r;

    memset(first, 0, sizeof(first));
    if (file_len < QH_VERSION + 4) {
        fq_seterr(err, "qcow2 header too short: the file is %llu bytes", (unsigned long long)file_len);
        return -EINVAL;
    }
    r = fq_bdev_pread_sync(s->file, first, (size_t)FQ_MIN((uint64_t)sizeof(first), file_len), 0);
    if (r < 0) {
        fq_seterr(err, "Could not read the qcow2 header: %s", strerror(-r));
        return r;
    }
    if (fq_be32(first + QH_MAGIC) != QCOW2_MAGIC) {
        fq_seterr(err, "Image is not in qcow2 format");
        return -EINVAL;
    }
    s->version = fq_be32(first + QH_VERSION);
    if (s->version < 2 || s->version > 3) {
        fq_seterr(err, "Unsupported qcow2 version %u (expected 2 or 3)", s->version);
        return -ENOTSUP;
    }
    /* the fields of the version's fixed header must be in the file (a
     * download cut short is refused, never read as zeros); what may follow
     * them in cluster 0 reads as zeros past the end of the file, as any
     * read there does */
    uint32_t fixed = s->version == 2 ? QH_V2_LENGTH : QH_V3_MIN_LENGTH;
    if (file_len < fixed) {
        fq_seterr(err, "qcow2 header too short: the file ends at byte %llu, inside the %u-byte "
                  "header of version %u", (unsigned long long)file_len, fixed, s->version);
        return -EINVAL;
    }
    s->cluster_bits = fq_be32(first + QH_CLUSTER_BITS);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS || s->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        fq_seterr(err, "Unsupported cluster_bits %u in header (expected %d..%d, 512 B..2 MiB clusters)",
                  s->cluster_bits, QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
        return -EINVAL;
    }
    s->cluster_size = 1ull << s->cluster_bits;

    /* cluster 0 holds the header, extensions and backing name; the part
     * of it past the end of the file reads as zeros */
    uint64_t c0 = s->cluster_size, in_file = FQ_MIN(c0, file_len);
    hdr = fq_zalign(s->cluster_size);
    if (!hdr)
        return -ENOMEM;
    r = fq_bdev_pread_sync(s->file, hdr, (size_t)FQ_ALIGN_UP(in_file, 512) <= c0 ?
                           (size_t)FQ_ALIGN_UP(in_file, 512) : (size_t)c0, 0);
    if (r < 0) {
        fq_seterr(err, "Could not read the qcow2 header cluster: %s", strerror(-r));
        return r;
    }

    s->bs->size = fq_be64(hdr + QH_SIZE);
    s->crypt_method = fq_be32(hdr + QH_CRYPT_METHOD);
    s->l1_size = fq_be32(hdr + QH_L1_SIZE);
    s->l1_offset = fq_be64(hdr + QH_L1_OFFSET);
    s->rt_offset = fq_be64(hdr + QH_RT_OFFSET);
    s->rt_clusters = fq_be32(hdr + QH_RT_CLUSTERS);
    s->nb_snapshots = fq_be32(hdr + QH_NB_SNAPSHOTS);
    s->snapshots_offset = fq_be64(hdr + QH_SNAPSHOTS_OFFSET);
    uint64_t backing_off = fq_be64(hdr + QH_BACKING_OFFSET);
    uint32_t backing_len = fq_be32(hdr + QH_BACKING_SIZE);

    if (s->version == 2) {
        s->header_length = QH_V2_LENGTH;
        s->refcount_order = 4;
    } else {
        s->incompat = fq_be64(hdr + QH_INCOMPAT);
        s->compat = fq_be64(hdr + QH_COMPAT);
        s->autoclear = fq_be64(hdr + QH_AUTOCLEAR);
        s->refcount_order = fq_be32(hdr + QH_REFCOUNT_ORDER);
        s->header_length = fq_be32(hdr + QH_HEADER_LENGTH);
        if (s->header_length < QH_V3_MIN_LENGTH || s->header_length % 8 ||
            s->header_length > c0) {
            fq_seterr(err, "Invalid header_length %u (expected a multiple of 8 from %d up to %llu)",
                      s->header_length, QH_V3_MIN_LENGTH, (unsigned long long)c0);
            return -EINVAL;
        }
        if (s->header_length > QH_COMPRESSION_TYPE)
            s->compression_type = hdr[QH_COMPRESSION_TYPE];
    }

    /* features */
    uint64_t unknown = s->incompat & ~QCOW2_INCOMPAT_KNOWN;
    if (unknown) {
        /* extensions first, for the feature-name table */
        (void)read_extensions(s, hdr, c0, c0, NULL);
        for (int b = 0; b < 64; b++)
            if (unknown & (1ull << b)) {
                fq_seterr(err, "Unsupported qcow2 feature(s): %s (incompatible bit %d)",
                          qcow2_feature_name(s, 0, b, name, sizeof(name)), b);
                return -ENOTSUP;
            }
    }
    if (s->crypt_method != QCOW2_CRYPT_NONE && s->crypt_method != QCOW2_CRYPT_LUKS) {
        fq_seterr(err, "Unsupported qcow2 feature: encryption (crypt_method %u; %s)", s->crypt_method,
                  s->crypt_method == QCOW2_CRYPT_AES
                      ? "the legacy AES method is not supported: convert the image with qemu-img "
                        "to one with encrypt.format=luks"
                      : "unknown method");
        return -ENOTSUP;
    }
    if (s->refcount_order > 6) {
        fq_seterr(err, "Invalid refcount_order %u (at most 6, i.e. 64-bit refcounts)", s->refcount_order);
        return -EINVAL;
    }
    s->refcount_bits = 1u << s->refcount_order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
    if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
        if (s->header_length <= QH_COMPRESSION_TYPE || s->compression_type == 0) {
            fq_seterr(err, "Compression type bit is set but the compression_type field is %s",
                      s->header_length <= QH_COMPRESSION_TYPE ? "absent" : "zero");
            return -EINVAL;
        }
    } else if (s->compression_type != 0) {
        fq_seterr(err, "compression_type is %u but the compression type bit is not set",
                  s->compression_type);
        return -EINVAL;
    }
    if (s->compression_type > 1) {
        fq_seterr(err, "Unsupported compression type %u (known: 0 zlib, 1 zstd)", s->compression_type);
        return -ENOTSUP;
    }
    s->extl2 = s->incompat & QCOW2_INCOMPAT_EXTL2;
    if (s->extl2 && s->cluster_bits < 14) {
        fq_seterr(err, "Extended L2 entries need clusters of at least 16 KiB (cluster_bits %u)",
                  s->cluster_bits);
        return -EINVAL;
    }
    s->l2_entry_size = s->extl2 ? 16 : 8;
    s->l2_bits = s->cluster_bits - (s->extl2 ? 4 : 3);
    s->l2_entries = 1ull << s->l2_bits;
    s->subcluster_size = s->extl2 ? s->cluster_size / QCOW2_SUBCLUSTERS : s->cluster_size;
    s->rb_bits = s->cluster_bits + 3 - s->refcount_order;

    /* backing file name: inside cluster 0, after the extensions */
    if (backing_off) {
        if (backing_len == 0 || backing_len > QCOW2_MAX_BACKING_NAME) {
            fq_seterr(err, "Invalid backing_file_size %u (expected 1..%d)", backing_len,
                      QCOW2_MAX_BACKING_NAME);
            return -EINVAL;
        }
        if (backing_off > c0 || backing_len > c0 - backing_off) {
            fq_seterr(err, "Backing file name at offset %llu (+%u) is outside the header cluster",
                      (unsigned long long)backing_off, backing_len);
            return -EINVAL;
        }
        s->backing_file = strndup((const char *)hdr + backing_off, backing_len);
        if (!s->backing_file)
            return -ENOMEM;
    }
    uint64_t ext_end = backing_off && backing_off > s->header_length ? backing_off : c0;
    r = read_extensions(s, hdr, c0, ext_end, err);
    if (r < 0)
        return r;

    /* virtual size and L1 */
    uint64_t max_l1 = QCOW2_MAX_L1_BYTES / 8;
    if (s->l1_size > max_l1) {
        fq_seterr(err, "L1 table is too large: l1_size %u entries (at most %llu)", s->l1_size,
                  (unsigned long long)max_l1);
        return -EFBIG;
    }
    uint64_t per_l1 = s->cluster_size * s->l2_entries;   /* guest bytes per L1 entry */
    uint64_t need = FQ_DIV_UP(s->bs->size, per_l1);
    if (s->bs->size > (1ull << 62) || need > s->l1_size) {
        fq_seterr(err, "Virtual size %llu needs %llu L1 entries but l1_size is %u",
                  (unsigned long long)s->bs->size, (unsigned long long)need, s->l1_size);
        return -EINVAL;
    }
    if (s->l1_size && (!FQ_IS_ALIGNED(s->l1_offset, s->cluster_size) || s->l1_offset == 0)) {
        fq_seterr(err, "L1 table offset 0x%llx is not aligned to a cluster (or is 0)",
                  (unsigned long long)s->l1_offset);
        return -EINVAL;
    }
    uint64_t l1_end;
    if (fq_add_ovf(s->l1_offset, (uint64_t)s->l1_size * 8, &l1_end) || l1_end > (1ull << 56)) {
        fq_seterr(err, "L1 table at 0x%llx (%u entries) lies beyond the addressable range",
                  (unsigned long long)s->l1_offset, s->l1_size);
        return -EINVAL;
    }

    /* refcount table */
    if (s->rt_clusters == 0 || (uint64_t)s->rt_clusters * s->cluster_size > QCOW2_MAX_RT_BYTES) {
        fq_seterr(err, "Invalid refcount table size: %u clusters (expected 1..%llu)",
                  s->rt_clusters, (unsigned long long)(QCOW2_MAX_RT_BYTES / s->cluster_size));
        return -EINVAL;
    }
    /* a table at cluster 0 (the header read as one) opens for a check
     * only, which rebuilds the refcount structures elsewhere */
    if (!FQ_IS_ALIGNED(s->rt_offset, s->cluster_size) || (s->rt_offset == 0 && !s->check_mode) ||
        s->rt_offset > (1ull << 56)) {
        fq_seterr(err, "Refcount table offset 0x%llx is not a valid cluster offset",
                  (unsigned long long)s->rt_offset);
        return -EINVAL;
    }
    s->rt_entries = (uint64_t)s->rt_clusters * s->cluster_size / 8;

    /* snapshots */
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        fq_seterr(err, "Too many snapshots: %u (at most %d)", s->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
        return -EINVAL;
    }
    if (s->nb_snapshots && (!FQ_IS_ALIGNED(s->snapshots_offset, s->cluster_size) ||
                            s->snapshots_offset == 0)) {
        fq_seterr(err, "Snapshot table offset 0x%llx is not aligned to a cluster",
                  (unsigned long long)s->snapshots_offset);
        return -EINVAL;
    }
    return 0;
}

/* Append one extension to `buf` at *pos; -ENOSPC if it does not fit. */
static int put_ext(uint8_t *buf, uint64_t cap, uint64_t *pos, uint32_t type,
                   const void *data, uint32_t len)
{
    uint64_t need = 8 + FQ_ALIGN_UP((uint64_t)len, 8);

    if (*pos + need > cap)
        return -ENOSPC;
    fq_put_be32(buf + *pos, type);
    fq_put_be32(buf + *pos + 4, len);
    memcpy(buf + *pos + 8, data, len);
    memset(buf + *pos + 8 + len, 0, need - 8 - len);
    *pos += need;
    return 0;
}

/* Lay the header out into `buf` (`cap` bytes, zeroed): the fields, the
 * extensions from `hl` on (version 3; 0: the image's header length), the
 * backing file name after them, or at `name_at` if that is not 0. *used
 * is the length laid out. */
static int build_header(struct qcow2 *s, uint8_t *buf, uint64_t cap, uint32_t hl,
                        uint64_t name_at, uint64_t *used)
{
    uint64_t pos;
    int r = 0;

    fq_put_be32(buf + QH_MAGIC, QCOW2_MAGIC);
    fq_put_be32(buf + QH_VERSION, s->version);
    fq_put_be32(buf + QH_CLUSTER_BITS, s->cluster_bits);
    fq_put_be64(buf + QH_SIZE, s->bs->size);
    fq_put_be32(buf + QH_CRYPT_METHOD, s->crypt_method);
    fq_put_be32(buf + QH_L1_SIZE, s->l1_size);
    fq_put_be64(buf + QH_L1_OFFSET, s->l1_offset);
    fq_put_be64(buf + QH_RT_OFFSET, s->rt_offset);
    fq_put_be32(buf + QH_RT_CLUSTERS, s->rt_clusters);
    fq_put_be32(buf + QH_NB_SNAPSHOTS, s->nb_snapshots);
    fq_put_be64(buf + QH_SNAPSHOTS_OFFSET, s->snapshots_offset);
    pos = QH_V2_LENGTH;
    if (s->version >= 3) {
        if (!hl)
            hl = FQ_MAX(s->header_length, (uint32_t)QH_V3_LENGTH);
        fq_put_be64(buf + QH_INCOMPAT, s->incompat);
        fq_put_be64(buf + QH_COMPAT, s->compat);
        fq_put_be64(buf + QH_AUTOCLEAR, s->autoclear);
        fq_put_be32(buf + QH_REFCOUNT_ORDER, s->refcount_order);
        fq_put_be32(buf + QH_HEADER_LENGTH, hl);
        buf[QH_COMPRESSION_TYPE] = s->compression_type;
        pos = hl;
    }
    if (s->backing_format)
        r = put_ext(buf, cap, &pos, QEXT_BACKING_FORMAT, s->backing_format,
                    (uint32_t)strlen(s->backing_format));
    if (r == 0 && s->feature_table && s->version >= 3)
        r = put_ext(buf, cap, &pos, QEXT_FEATURE_TABLE, s->feature_table, s->feature_table_len);
    for (size_t i = 0; r == 0 && i < s->exts.len; i++)
        r = put_ext(buf, cap, &pos, s->exts.ptr[i].type, s->exts.ptr[i].data, s->exts.ptr[i].len);
    if (r == 0 && (s->version >= 3 || s->backing_format || s->exts.len)) {
        if (pos + 8 > cap)
            r = -ENOSPC;
        else
            pos += 8;     /* end marker: already zero */
    }
    if (r == 0 && s->backing_file) {
        size_t bl = strlen(s->backing_file);
        if (name_at)
            pos = FQ_MAX(pos, name_at);
        if (pos + bl > cap) {
            r = -ENOSPC;
        } else {
            fq_put_be64(buf + QH_BACKING_OFFSET, pos);
            fq_put_be32(buf + QH_BACKING_SIZE, (uint32_t)bl);
            memcpy(buf + pos, s->backing_file, bl);
            pos += bl;
        }
    }
    *used = pos;
    return r;
}

/* Mark in `ref` the bytes of header `h` (`len` bytes) that a reader
 * looks at: the fields, the extensions up to the end marker and the
 * backing file name. Returns the end of the last one. */
static uint64_t header_refs(const uint8_t *h, uint64_t len, uint8_t *ref)
{
    uint64_t hl = fq_be32(h + QH_VERSION) >= 3 ? fq_be32(h + QH_HEADER_LENGTH) : QH_V2_LENGTH;
    uint64_t bo = fq_be64(h + QH_BACKING_OFFSET), bl = fq_be32(h + QH_BACKING_SIZE);
    uint64_t ext_end = bo && bo > hl ? FQ_MIN(bo, len) : len;
    /* header fields past the ones this library knows are read as unknown
     * fields, whose content does not matter */
    uint64_t top = FQ_MIN(FQ_MIN(hl, (uint64_t)QH_V3_LENGTH), len);

    memset(ref, 0, (size_t)len);
    memset(ref, 1, (size_t)top);
    for (uint64_t pos = hl; pos + 8 <= ext_end;) {
        uint32_t type = fq_be32(h + pos), el = fq_be32(h + pos + 4);
        uint64_t end = FQ_MIN(pos + 8 + FQ_ALIGN_UP((uint64_t)el, 8), ext_end);
        if (type == QEXT_END)
            end = pos + 8;
        memset(ref + pos, 1, (size_t)(end - pos));
        top = FQ_MAX(top, end);
        if (type == QEXT_END)
            break;
        pos = end;
    }
    if (bo && bo < len) {
        uint64_t end = FQ_MIN(bo + bl, len);
        memset(ref + bo, 1, (size_t)(end - bo));
        top = FQ_MAX(top, end);
    }
    return top;
}

/* Replace header `disk` (what the file holds, updated) by `nw`, both
 * `len` bytes, so that a crash at any point, with writes reordered since
 * the last flush and torn at 512-byte sectors, leaves one of the two
 * readable as itself. A sector is written atomically; the first holds
 * every field. So: the bytes `nw` reads past the first sector are
 * written first (only where `disk` does not read them), flushed, then the
 * first sector. HDR_CONFLICT if `nw` needs a byte there that `disk` reads
 * and that differs; a device's error as -errno (never taken for a layout
 * problem: a device may well say -ENOSPC). */
#define HDR_CONFLICT 1      /* positive: never an errno */
#define HDR_NOFIT 2
static int put_header(struct qcow2 *s, uint8_t *disk, const uint8_t *nw, uint64_t len)
{
    CLEANUP_FREE uint8_t *rd = malloc((size_t)len), *rn = malloc((size_t)len);
    uint64_t first = len, last = 0, sec = FQ_MIN(len, (uint64_t)512);
    int r;

    if (!rd || !rn)
        return -ENOMEM;
    header_refs(disk, len, rd);
    header_refs(nw, len, rn);
    for (uint64_t i = sec; i < len; i++) {
        if (!rn[i] || nw[i] == disk[i])
            continue;
        if (rd[i])
            return HDR_CONFLICT;
        first = FQ_MIN(first, i);
        last = i + 1;
    }
    if (last) {
        for (uint64_t i = first; i < last; i++)
            if (rn[i])
                disk[i] = nw[i];
        uint64_t a = FQ_ALIGN_DOWN(first, 512), b = FQ_MIN(FQ_ALIGN_UP(last, 512), len);
        if ((r = fq_bdev_pwrite_tagged(s->file, disk + a, (size_t)(b - a), a, FQ_TAG_HEADER)) < 0 ||
            (r = qcow2_flush_file(s)) < 0)
            return r;
    }
    r = fq_bdev_pwrite_tagged(s->file, nw, (size_t)sec, 0, FQ_TAG_HEADER);
    if (r == 0)
        memcpy(disk, nw, (size_t)sec);
    return r;
}

/* Small clusters leave no room for the layout in between: the header
 * without its feature name table (an optional extension) may then fit in
 * the first sector, written atomically. The table comes back with the
 * next header write, written in the safe order (the lean header reads
 * nothing past the first sector). HDR_NOFIT if even that does not fit. */
static int put_lean_header(struct qcow2 *s, uint8_t *disk, uint64_t len)
{
    CLEANUP_FREE uint8_t *lean = fq_zalign((size_t)len);
    uint8_t *ft = s->feature_table;
    uint64_t used;
    int r;

    if (!lean)
        return -ENOMEM;
    s->feature_table = NULL;
    r = build_header(s, lean, len, 0, 0, &used);
    s->feature_table = ft;
    if (r == -ENOSPC || (r == 0 && used > 512))
        return HDR_NOFIT;
    return r < 0 ? r : put_header(s, disk, lean, len);
}

int qcow2_write_header(struct qcow2 *s)
{
    int64_t flen = s->file->ops->file_length ? s->file->ops->file_length(s->file)
                                             : (int64_t)s->file->size;
    /* what a header may use of cluster 0 (no header is longer than this) */
    uint64_t len = FQ_MIN(s->cluster_size, (uint64_t)65536), used, mused;
    CLEANUP_FREE uint8_t *nw = fq_zalign((size_t)len);
    CLEANUP_FREE uint8_t *disk = fq_zalign((size_t)len);
    int r;

    if (!nw || !disk)
        return -ENOMEM;
    if ((r = build_header(s, nw, len, 0, 0, &used)) < 0)
        return r;
    if (s->version >= 3)
        s->header_length = fq_be32(nw + QH_HEADER_LENGTH);
    uint64_t have = flen > 0 ? FQ_MIN(len, FQ_ALIGN_DOWN((uint64_t)flen, 512)) : 0;
    if (have >= 512 && (r = fq_bdev_pread_sync(s->file, disk, (size_t)have, 0)) < 0)
        return r;
    if (have >= 512 && fq_be32(disk + QH_MAGIC) == QCOW2_MAGIC) {
        r = put_header(s, disk, nw, len);
        if (r == HDR_CONFLICT) {
            /* the new header needs bytes past the first sector that the
             * old one reads: go through a header whose extensions (version
             * 3) or backing name (version 2) lie past what either reads */
            CLEANUP_FREE uint8_t *mid = fq_zalign((size_t)len);
            CLEANUP_FREE uint8_t *ref = malloc((size_t)len);
            if (!mid || !ref)
                return -ENOMEM;
            uint64_t top = FQ_ALIGN_UP(FQ_MAX(header_refs(disk, len, ref),
                                              header_refs(nw, len, ref)), 8);
            r = build_header(s, mid, len, s->version >= 3 ? (uint32_t)top : 0, top, &mused);
            if (r == -ENOSPC)
                r = HDR_NOFIT;
            if (r == 0)
                r = put_header(s, disk, mid, len);
            if (r == 0 && (r = qcow2_flush_file(s)) == 0)
                r = put_header(s, disk, nw, len);
        }
        if (r == HDR_CONFLICT || r == HDR_NOFIT)
            r = put_lean_header(s, disk, len);
        if (r != HDR_CONFLICT && r != HDR_NOFIT) {
            if (r == 0)
                s->header_dirty = false;
            return r;
        }
    }
    /* no header yet, or no order is safe: write it whole */
    r = fq_bdev_pwrite_tagged(s->file, nw, (size_t)FQ_MIN(FQ_ALIGN_UP(used, 4096), len), 0,
                              FQ_TAG_HEADER);
    if (r == 0)
        s->header_dirty = false;
    return r;
}

void qcow2_signal_corruption(struct qcow2 *s, const char *fmt, ...)
{
    char msg[FQ_ERR_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (s->corrupt)
        return;
    s->corrupt = true;
    /* qemu's words: a writable image is marked, a read-only one is not */
    if (s->readonly)
        fprintf(stderr, "qcow2: Image is corrupt: %s; further non-fatal corruption events will "
                "be suppressed\n", msg);
    else
        fprintf(stderr, "qcow2: Marking image as corrupt: %s; further corruption events will "
                "be suppressed\n", msg);
    if (!s->readonly && s->version >= 3) {
        s->incompat |= QCOW2_INCOMPAT_CORRUPT;
        if (qcow2_write_header(s) == 0)
            fq_bdev_flush_sync(s->file);
    }
}
