/* common/create_opts.c: image creation as create and convert -O do it
 * (create_opts.h): the -o keys of qcow2, raw and the file protocol, their
 * parsing and help (listed exactly as qemu-img 7.2 lists them, also the
 * keys refused here: encryption), qemu-img's
 * checks of their values, the "Formatting ..." line and img_create.
 *
 * Where this file repeats a check the library makes (create option
 * values), it does so only to print qemu-img 7.2's wording; the library
 * is then handed the values normalised (decimal numbers, on/off).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "args.h"
#include "create_opts.h"
#include "image.h"
#include "object.h"

/* Each -o key: its name, its type, where it applies (the qcow2 format,
 * the raw format, the file protocol under either), its default printed
 * for qcow2 and its line of '-o help'. */
enum otype { OT_SIZE, OT_BOOL, OT_NUM, OT_STR };
#define S_QCOW2 1u
#define S_RAW 2u
#define S_FILE 4u
static const struct okey {
    const char *key, *def, *help;
    enum otype type;
    unsigned scope;
} okeys[K_NUM] = {
    [K_ENCRYPTION] = { "encryption", NULL, "Encrypt the image with format 'aes'. (Deprecated in "
                       "favor of encrypt.format=aes)", OT_BOOL, S_QCOW2 },
    [K_ENC_FORMAT] = { "encrypt.format", NULL, "Encrypt the image, format choices: 'aes', 'luks'",
                       OT_STR, S_QCOW2 },
    [K_ENC_SECRET] = { "encrypt.key-secret", NULL, "ID of secret providing qcow AES key or LUKS "
                       "passphrase", OT_STR, S_QCOW2 },
    [K_ENC_CALG] = { "encrypt.cipher-alg", NULL, "Name of encryption cipher algorithm", OT_STR, S_QCOW2 },
    [K_ENC_CMODE] = { "encrypt.cipher-mode", NULL, "Name of encryption cipher mode", OT_STR, S_QCOW2 },
    [K_ENC_IVALG] = { "encrypt.ivgen-alg", NULL, "Name of IV generator algorithm", OT_STR, S_QCOW2 },
    [K_ENC_IVHASH] = { "encrypt.ivgen-hash-alg", NULL, "Name of IV generator hash algorithm", OT_STR,
                       S_QCOW2 },
    [K_ENC_HASH] = { "encrypt.hash-alg", NULL, "Name of encryption hash algorithm", OT_STR, S_QCOW2 },
    [K_ENC_ITER] = { "encrypt.iter-time", NULL, "Time to spend in PBKDF in milliseconds", OT_NUM,
                     S_QCOW2 },
    [K_CLUSTER] = { "cluster_size", "65536", "qcow2 cluster size", OT_SIZE, S_QCOW2 },
    [K_EXTL2] = { "extended_l2", "off", "Extended L2 tables", OT_BOOL, S_QCOW2 },
    [K_PREALLOC] = { "preallocation", NULL, "Preallocation mode (allowed values: off, metadata, "
                     "falloc, full)", OT_STR, S_QCOW2 | S_FILE },
    [K_COMPR] = { "compression_type", "zlib", "Compression method used for image cluster compression",
                  OT_STR, S_QCOW2 },
    [K_SIZE] = { "size", NULL, "Virtual disk size", OT_SIZE, S_QCOW2 | S_RAW | S_FILE },
    [K_COMPAT] = { "compat", NULL, "Compatibility level (v2 [0.10] or v3 [1.1])", OT_STR, S_QCOW2 },
    [K_BFILE] = { "backing_file", NULL, "File name of a base image", OT_STR, S_QCOW2 },
    [K_BFMT] = { "backing_fmt", NULL, "Image format of the base image", OT_STR, S_QCOW2 },
    [K_DATAFILE] = { "data_file", NULL, "File name of an external data file", OT_STR, S_QCOW2 },
    [K_DATARAW] = { "data_file_raw", NULL, "The external data file must stay valid as a raw image",
                    OT_BOOL, S_QCOW2 },
    [K_LAZY] = { "lazy_refcounts", "off", "Postpone refcount updates", OT_BOOL, S_QCOW2 },
    [K_REFBITS] = { "refcount_bits", "16", "Width of a reference count entry in bits", OT_NUM, S_QCOW2 },
    [K_NOCOW] = { "nocow", NULL, "Turn off copy-on-write (valid only on btrfs)", OT_BOOL, S_FILE },
    [K_EXTHINT] = { "extent_size_hint", NULL, "Extent size hint for the image file, 0 to disable",
                    OT_SIZE, S_FILE },
};
/* The order of the raw format's "Formatting" line. */
static const int raw_keys[] = { K_SIZE, K_NOCOW, K_PREALLOC, K_EXTHINT };

static bool is_raw(const struct cspec *c)
{
    return !strcmp(c->fmt, "raw");
}

/* Does an image of c->fmt, created as a file, take key k? */
static bool key_valid(const struct cspec *c, int k)
{
    return (okeys[k].scope & (S_FILE | (is_raw(c) ? S_RAW : S_QCOW2))) != 0;
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(okeys[*(const int *)a].key, okeys[*(const int *)b].key);
}

/* '-o help': the options of the format, and those of the file protocol
 * when a target file is named, sorted by name as qemu-img lists them. */
static void print_help(const char *fmt, bool protocol)
{
    static const char *tname[] = { "size", "bool (on/off)", "num", "str" };
    unsigned scope = (!strcmp(fmt, "raw") ? S_RAW : S_QCOW2) | (protocol ? S_FILE : 0);
    int keys[K_NUM], n = 0;

    for (int k = 0; k < K_NUM; k++)
        if (okeys[k].scope & scope)
            keys[n++] = k;
    qsort(keys, (size_t)n, sizeof(keys[0]), cmp_key);
    if (protocol)
        printf("Supported options:\n");
    else
        printf("Supported %s options:\n", fmt);
    for (int i = 0; i < n; i++) {
        const struct okey *o = &okeys[keys[i]];
        char left[64];
        const char *help = o->help;
        if (keys[i] == K_PREALLOC && !(scope & S_QCOW2))   /* the file's own */
            help = "Preallocation mode (allowed values: off, falloc, full)";
        snprintf(left, sizeof(left), "%s=<%s>", o->key, tname[o->type]);
        printf("  %-22s - %s\n", left, help);
    }
    if (!protocol)
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
}

int img_cspec_help(const struct args *a, const char *fmt, const char *file)
{
    bool help = false;

    for (int i = 0; i < a->nolist; i++) {
        /* a copy: the list is parsed again afterwards */
        char *l = strdup(a->olist[i]), *save = NULL;
        for (char *t = l ? strtok_r(l, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save))
            help |= !strcmp(t, "help") || !strcmp(t, "?");
        free(l);
    }
    if (!help)
        return 0;
    if (strcmp(fmt, "raw") && strcmp(fmt, "qcow2")) {
        tool_error("Unknown file format '%s'", fmt);
        return -1;
    }
    print_help(fmt, file && file[0]);
    return 1;
}

void img_cspec_num(struct cspec *c, int k, uint64_t v)
{
    c->num[k] = v;
    snprintf(c->norm[k], sizeof(c->norm[k]), "%" PRIu64, v);
    c->val[k] = c->norm[k];
}

/* Parse one -o list. Returns 0, 1 after printing help, -1 on error. */
static int cspec_parse(struct cspec *c, char *list)
{
    char *save = NULL, *end;

    for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *v = strchr(tok, '=');
        int k = 0;

        if (v)
            *v++ = '\0';
        while (k < K_NUM && (strcmp(tok, okeys[k].key) || !key_valid(c, k)))
            k++;
        if (k == K_NUM || !v) {
            tool_error("%s: Invalid parameter '%s'", c->file, tok);
            return -1;
        }
        c->val[k] = v;
        if (okeys[k].type == OT_SIZE && img_qsize(v, &c->num[k]) < 0) {
            tool_error("%s: Parameter '%s' expects a non-negative number below 2^64", c->file, tok);
            fprintf(stderr, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                    "and exabytes, respectively.\n");
            return -1;
        }
        if (okeys[k].type == OT_NUM) {
            errno = 0;
            c->num[k] = strtoull(v, &end, 0);
            if (!*v || *end || errno || *v == '-') {
                tool_error("%s: Parameter '%s' expects a number", c->file, tok);
                return -1;
            }
        }
        if (okeys[k].type == OT_SIZE || okeys[k].type == OT_NUM)
            img_cspec_num(c, k, c->num[k]);
        if (okeys[k].type == OT_BOOL) {
            c->on[k] = !strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes");
            if (!c->on[k] && strcmp(v, "off") && strcmp(v, "false") && strcmp(v, "no")) {
                tool_error("%s: Parameter '%s' expects 'on' or 'off'", c->file, tok);
                return -1;
            }
        }
    }
    return 0;
}

/* The qcow2 driver's checks, in qemu-img's words; NULL if all is well. */
static const char *qcow2_opts_error(const struct cspec *c, int *version)
{
    static const char v3[] = " (use version=v3 or greater)";
    static char msg[192];
    const char *compat = c->val[K_COMPAT], *ct = c->val[K_COMPR];
    uint64_t cs = c->val[K_CLUSTER] ? c->num[K_CLUSTER] : 65536;
    uint64_t rb = c->val[K_REFBITS] ? c->num[K_REFBITS] : 16;
    uint64_t per_l2 = cs / (c->on[K_EXTL2] ? 16 : 8) * cs;   /* guest bytes an L2 table maps */

    *version = compat && (!strcmp(compat, "0.10") || !strcmp(compat, "v2")) ? 2 : 3;
    msg[0] = '\0';
    if (compat && *version == 3 && strcmp(compat, "1.1") && strcmp(compat, "v3"))
        snprintf(msg, sizeof(msg), "Parameter 'version' does not accept value '%.60s'", compat);
    else if (cs < 512 || cs > (2u << 20) || (cs & (cs - 1)))
        snprintf(msg, sizeof(msg), "Cluster size must be a power of two between 512 and 2048k");
    else if (rb == 0 || rb > 64 || (rb & (rb - 1)))
        snprintf(msg, sizeof(msg), "Refcount width must be a power of two and may not exceed 64 bits");
    else if (*version == 2 && rb != 16)
        snprintf(msg, sizeof(msg), "Different refcount widths than 16 bits require compatibility "
                 "level 1.1 or above%s", v3);
    else if (*version == 2 && c->on[K_LAZY])
        snprintf(msg, sizeof(msg), "Lazy refcounts only supported with compatibility level 1.1 and above%s", v3);
    else if (*version == 2 && c->on[K_EXTL2])
        snprintf(msg, sizeof(msg), "Extended L2 entries are only supported with compatibility level "
                 "1.1 and above%s", v3);
    else if (c->on[K_EXTL2] && cs < 16384)
        snprintf(msg, sizeof(msg), "Extended L2 entries are only supported with cluster sizes of at "
                 "least 16384 bytes");
    else if (ct && strcmp(ct, "zlib") && strcmp(ct, "zstd"))
        snprintf(msg, sizeof(msg), "Parameter 'compression-type' does not accept value '%.60s'", ct);
    else if (ct && !strcmp(ct, "zstd") && *version == 2)
        snprintf(msg, sizeof(msg), "Non-zlib compression type is only supported with compatibility "
                 "level 1.1 and above%s", v3);
    else if (c->on[K_DATARAW] && !c->val[K_DATAFILE])
        snprintf(msg, sizeof(msg), "data-file-raw requires data-file");
    else if (c->val[K_DATAFILE] && *version == 2)
        snprintf(msg, sizeof(msg), "External data files are only supported with compatibility "
                 "level 1.1 and above%s", v3);
    else if (c->val[K_BFILE] && c->on[K_DATARAW])
        snprintf(msg, sizeof(msg), "Backing file and data-file-raw cannot be used at the same time");
    else if (c->num[K_SIZE] / per_l2 + 1 > (32u << 20) / 8)   /* the L1 table: at most 32 MiB */
        snprintf(msg, sizeof(msg), "The image size is too large for file format 'qcow2' (try using "
                 "a larger cluster size)");
    return msg[0] ? msg : NULL;
}

/* What is refused here (the legacy AES encryption), in qemu-img's words
 * where it has some; NULL if nothing. */
static const char *unsupported_error(const struct cspec *c)
{
    const char *ef = c->val[K_ENC_FORMAT];
    static char msg[128];
    size_t len;

    if ((c->on[K_ENCRYPTION] || ef) && !c->val[K_ENC_SECRET] && !tool_default_secret(&len))
        return "Parameter 'encrypt.key-secret' is required for cipher";
    if (c->on[K_ENCRYPTION] || (ef && !strcmp(ef, "aes")))
        return "The legacy AES encryption (encrypt.format=aes) is not supported for new images: "
               "use encrypt.format=luks";
    if (ef && strcmp(ef, "luks")) {
        snprintf(msg, sizeof(msg), "Parameter 'encrypt.format' does not accept value '%.60s'", ef);
        return msg;
    }
    if (c->val[K_EXTHINT] && c->num[K_EXTHINT] > UINT32_MAX)
        return "Extent size hint is too large";
    return NULL;
}

/* The file protocol's options, on the file before the image is written
 * to it as qemu does (on file systems that take them; silently not
 * elsewhere): no copy-on-write (btrfs) and the extent size hint (XFS),
 * 1 MiB unless given. Only new or empty regular files: an existing file
 * is emptied by the create itself, once it holds the image's lock (a file
 * another program uses is never touched). */
static void prepare_file(const struct cspec *c)
{
    uint64_t hint = c->val[K_EXTHINT] ? c->num[K_EXTHINT] : 1u << 20;
    struct stat st;
    int fd;

    if (!c->on[K_NOCOW] && !hint)
        return;
    if ((fd = open(c->file, O_WRONLY | O_CREAT | O_CLOEXEC, 0644)) < 0)
        return;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == 0) {
        int flags;
        struct fsxattr attr;
        if (c->on[K_NOCOW] && ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0) {
            flags |= FS_NOCOW_FL;
            ioctl(fd, FS_IOC_SETFLAGS, &flags);
        }
        if (hint && ioctl(fd, FS_IOC_FSGETXATTR, &attr) == 0 && attr.fsx_extsize == 0) {
            attr.fsx_xflags |= FS_XFLAG_EXTSIZE;
            attr.fsx_extsize = (uint32_t)hint;
            ioctl(fd, FS_IOC_FSSETXATTR, &attr);
        }
    }
    close(fd);
}

/* Append to a fixed buffer. */
static void cat(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cat(char *buf, size_t n, const char *fmt, ...)
{
    size_t used = strlen(buf);
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf + used, n - used, fmt, ap);
    va_end(ap);
}

const char *img_cspec_secret(const struct cspec *c, size_t *len)
{
    const char *id = c->val[K_ENC_SECRET];

    return id ? tool_secret(id, len) : tool_default_secret(len);
}

/* The encrypt.* keys into o: the secret the key-secret option names
 * (or the default secret of the environment), the algorithms, the time.
 * 0, or -1 with qemu's message in err. */
static int encrypt_opts(const struct cspec *c, struct fq_create_opts *o, char *err)
{
    const char *id = c->val[K_ENC_SECRET];

    o->encrypt.format = c->val[K_ENC_FORMAT];
    if (id)
        o->encrypt.key_secret = tool_secret_or_err(id, &o->encrypt.key_secret_len, err, FQ_ERR_MAX);
    else if (!(o->encrypt.key_secret = tool_default_secret(&o->encrypt.key_secret_len)))
        snprintf(err, FQ_ERR_MAX, "Parameter 'encrypt.key-secret' is required for cipher");
    if (!o->encrypt.key_secret)
        return -1;
    o->encrypt.cipher_alg = c->val[K_ENC_CALG];
    o->encrypt.cipher_mode = c->val[K_ENC_CMODE];
    o->encrypt.ivgen_alg = c->val[K_ENC_IVALG];
    o->encrypt.ivgen_hash_alg = c->val[K_ENC_IVHASH];
    o->encrypt.hash_alg = c->val[K_ENC_HASH];
    if (c->val[K_ENC_ITER])
        o->encrypt.iter_time = c->num[K_ENC_ITER];
    return 0;
}

int img_create(struct cspec *c)
{
    const char *pa = c->val[K_PREALLOC];
    char err[FQ_ERR_MAX] = "", list[256] = "", path[4096], detected[16] = "";
    struct fq_create_opts o;
    struct fq_open_opts oo;
    struct fq_image *b;
    int version = 3;

    if (!is_raw(c) && strcmp(c->fmt, "qcow2")) {
        tool_error("%s: Unknown file format '%s'", c->file, c->fmt);
        return -1;
    }
    if (c->val[K_BFILE] && is_raw(c)) {
        tool_error("%s: Backing file not supported for file format '%s'", c->file, c->fmt);
        return -1;
    }
    if (c->val[K_BFILE]) {
        /* the same name, or the same file under another name */
        struct stat sa, sb;
        img_path_combine(c->file, c->val[K_BFILE], path, sizeof(path));
        if (!strcmp(c->file, c->val[K_BFILE]) ||
            (stat(c->file, &sa) == 0 && stat(path, &sb) == 0 && sa.st_dev == sb.st_dev &&
             sa.st_ino == sb.st_ino)) {
            tool_error("%s: Error: Trying to create an image with the same filename as the "
                       "backing file", c->file);
            return -1;
        }
    }
    if (c->val[K_BFILE] && !c->unsafe) {   /* a size may come from the backing file */
        img_path_combine(c->file, c->val[K_BFILE], path, sizeof(path));
        tool_open_opts_init(&oo);
        oo.format = c->val[K_BFMT];
        oo.readonly = oo.no_backing = 1;
        if (fq_open(path, &oo, &b, err) < 0) {
            tool_error("%s: %s", c->file, err);
            fprintf(stderr, "Could not open backing image.\n");
            return -1;
        }
        snprintf(detected, sizeof(detected), "%s", fq_format(b));
        if (!c->val[K_SIZE])
            img_cspec_num(c, K_SIZE, fq_size(b));
        fq_close(b);
    }
    if (c->val[K_BFILE] && !c->val[K_BFMT]) {
        tool_error("%s: Backing file specified without backing format", c->file);
        if (detected[0])
            fprintf(stderr, "Detected format of %s.", detected);   /* no newline, as qemu-img */
        return -1;
    }
    if (!c->val[K_SIZE]) {
        tool_error("%s: Image creation needs a size parameter", c->file);
        return -1;
    }
    if (c->print && !c->quiet) {
        printf("Formatting '%s', fmt=%s", c->file, c->fmt);
        int nk = is_raw(c) ? (int)(sizeof(raw_keys) / sizeof(raw_keys[0])) : K_NUM;
        for (int i = 0; i < nk; i++) {
            int k = is_raw(c) ? raw_keys[i] : i;
            const char *v = c->val[k] ? c->val[k] : is_raw(c) ? NULL : okeys[k].def;
            if (v)
                printf(" %s=%s", okeys[k].key, v);
        }
        putchar('\n');
        fflush(stdout);
    }
    if (pa && strcmp(pa, "off") && strcmp(pa, "metadata") && strcmp(pa, "falloc") && strcmp(pa, "full")) {
        if (is_raw(c))
            tool_error("%s: invalid parameter value: %s", c->file, pa);
        else
            tool_error("%s: Parameter 'preallocation' does not accept value '%s'", c->file, pa);
        return -1;
    }
    const char *m = is_raw(c) ? NULL : qcow2_opts_error(c, &version);
    if (!m)
        m = unsupported_error(c);
    if (m) {
        tool_error("%s: %s", c->file, m);
        return -1;
    }
    prepare_file(c);
    /* Hand the library normalised values (it parses base 10 and on/off). */
    fq_create_opts_init(&o);
    o.format = c->fmt;
    o.size = ALIGN_UP512(c->num[K_SIZE]);   /* qemu sizes images in sectors */
    if (!is_raw(c)) {
        cat(list, sizeof(list), "compat=%s,lazy_refcounts=%s,extended_l2=%s,", version == 2 ? "0.10" : "1.1",
            c->on[K_LAZY] ? "on" : "off", c->on[K_EXTL2] ? "on" : "off");
        if (c->val[K_CLUSTER])
            cat(list, sizeof(list), "cluster_size=%" PRIu64 ",", c->num[K_CLUSTER]);
        if (c->val[K_REFBITS])
            cat(list, sizeof(list), "refcount_bits=%" PRIu64 ",", c->num[K_REFBITS]);
        if (c->val[K_COMPR])
            cat(list, sizeof(list), "compression_type=%s,", c->val[K_COMPR]);
        o.backing_file = c->val[K_BFILE];
        o.backing_format = c->val[K_BFMT];
        o.data_file = c->val[K_DATAFILE];
        o.data_file_raw = c->on[K_DATARAW];
    }
    if (pa)
        cat(list, sizeof(list), "preallocation=%s,", pa);
    if (c->val[K_ENC_FORMAT] && encrypt_opts(c, &o, err) < 0) {
        tool_error("%s: %s", c->file, err);
        return -1;
    }
    if ((list[0] && fq_create_opts_parse(&o, list, err) < 0) || fq_create(c->file, &o, err) < 0) {
        tool_error("%s: %s", c->file, err[0] ? err : "Could not create the image");
        return -1;
    }
    return 0;
}

int img_cspec_parse(struct cspec *c, const struct args *a)
{
    int r = img_cspec_help(a, c->fmt, c->file);

    if (r)
        return r;
    for (int i = 0; i < a->nolist && r == 0; i++)
        r = cspec_parse(c, a->olist[i]);   /* values point into argv */
    return r;
}
