/* info.c: `fastqcow info`, qemu-img info: what an image is, in human
 * or JSON form, alone or with its whole backing chain (--backing-chain).
 *
 * Output text, options and exit codes follow qemu-img 7.2, learnt by
 * running it, so that scripts keep working and the tests can diff both
 * tools on the same image. JSON members come in qemu's order (that of its
 * hash table). Backing files are named as qemu names them, relative to
 * their overlay (img_path_combine).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/args.h"
#include "common/blockopts.h"
#include "common/image.h"
#include "common/output.h"
#include "subcommands.h"

/* Print the info of one image. `next` receives the path of its backing
 * file as qemu opens it ("" = none), `next_fmt` that file's format.
 * Returns 0 or -1. */
/* The "encrypt" block of qemu-img info's format-specific information, in
 * its order: JSON into w, else human text. */
static void print_encrypt(const struct fq_encrypt_info *e, struct jw *w)
{
    if (w) {
        jw_open(w, "encrypt", '{');
        jw_str(w, "ivgen-alg", e->ivgen_alg);
        jw_str(w, "hash-alg", e->hash_alg);
        jw_str(w, "cipher-alg", e->cipher_alg);
        jw_str(w, "uuid", e->uuid);
        if (e->ivgen_hash_alg[0])
            jw_str(w, "ivgen-hash-alg", e->ivgen_hash_alg);
        jw_str(w, "format", e->format);
        jw_str(w, "cipher-mode", e->cipher_mode);
        jw_open(w, "slots", '[');
        for (int i = 0; i < 8; i++) {
            jw_open(w, NULL, '{');
            jw_bool(w, "active", e->slots[i].active);
            if (e->slots[i].active)
                jw_int(w, "iters", e->slots[i].iters);
            jw_int(w, "key-offset", (int64_t)e->slots[i].key_offset);
            if (e->slots[i].active)
                jw_int(w, "stripes", e->slots[i].stripes);
            jw_close(w, '}');
        }
        jw_close(w, ']');
        jw_int(w, "payload-offset", (int64_t)e->payload_offset);
        jw_int(w, "master-key-iters", e->master_key_iters);
        jw_close(w, '}');
        return;
    }
    printf("    encrypt:\n        ivgen alg: %s\n        hash alg: %s\n        cipher alg: %s\n"
           "        uuid: %s\n", e->ivgen_alg, e->hash_alg, e->cipher_alg, e->uuid);
    if (e->ivgen_hash_alg[0])
        printf("        ivgen hash alg: %s\n", e->ivgen_hash_alg);
    printf("        format: %s\n        cipher mode: %s\n        slots:\n", e->format, e->cipher_mode);
    for (int i = 0; i < 8; i++) {
        printf("            [%d]:\n                active: %s\n", i, e->slots[i].active ? "true" : "false");
        if (e->slots[i].active)
            printf("                iters: %u\n", e->slots[i].iters);
        printf("                key offset: %" PRIu64 "\n", e->slots[i].key_offset);
        if (e->slots[i].active)
            printf("                stripes: %u\n", e->slots[i].stripes);
    }
    printf("        payload offset: %" PRIu64 "\n        master key iters: %u\n", e->payload_offset,
           e->master_key_iters);
}

static int info_one(const char *spec, const char *file, const char *fmt, bool json, bool frag,
                    bool from_image, struct jw *w, char *next, size_t n, char *next_fmt)
{
    struct fq_open_opts o;
    struct fq_image *img;
    struct fq_info in;
    struct fq_check_result res = { 0 };
    bool has_frag = false;
    char vs[32], ds[32];
    int r;

    tool_open_opts_init(&o);
    o.format = fmt;
    o.readonly = o.check_mode = o.no_backing = 1;
    o.no_data_file = 1;               /* metadata only, as qemu-img info */
    o.name_from_image = from_image;   /* a backing file: no protocol unasked */
    if (!(img = img_open(spec, &o)))
        return -1;
    r = fq_get_info(img, &in);
    struct fq_snapshot *sn = NULL;
    int nsn = 0;
    if (r == 0 && in.nb_snapshots)
        fq_snapshot_list(img, &sn, &nsn);   /* as qemu-img: a bad table is not fatal */
    struct fq_bitmap *bm = NULL;
    int nbm = 0;
    char berr[FQ_ERR_MAX] = "";
    if (r == 0 && fq_bitmap_list(img, &bm, &nbm, berr) < 0) {
        tool_error("Could not open '%s': %s", file, berr);   /* as qemu: unusable */
        fq_snapshot_list_free(sn, nsn);
        fq_close(img);
        return -1;
    }
    /* --fragmentation: what check counts (qcow2 only; not qemu-img's) */
    if (r == 0 && frag && !strcmp(in.format, "qcow2"))
        has_frag = fq_check(img, 0, &res, NULL, NULL) == 0;
    fq_close(img);
    if (r < 0) {
        tool_error("%s: Could not get the image information: %s", file, strerror(-r));
        return -1;
    }
    bool qcow2 = !strcmp(in.format, "qcow2"), v3 = in.version >= 3;
    const char *compat = v3 ? "1.1" : "0.10", *ct = in.compression_type ? "zstd" : "zlib";
    uint64_t vsize = ALIGN_UP512(in.virtual_size);   /* qemu counts in sectors */

    next[0] = '\0';
    if (in.backing_file[0])
        img_path_combine(file, in.backing_file, next, n);
    snprintf(next_fmt, 32, "%s", in.backing_format);
    if (json) {
        jw_open(w, NULL, '{');
        if (in.backing_format[0])
            jw_str(w, "backing-filename-format", in.backing_format);
        if (nsn) {
            jw_open(w, "snapshots", '[');
            for (int i = 0; i < nsn; i++) {
                jw_open(w, NULL, '{');
                if (sn[i].icount != UINT64_MAX)
                    jw_int(w, "icount", (int64_t)sn[i].icount);
                jw_int(w, "vm-clock-nsec", (int64_t)(sn[i].vm_clock_nsec % 1000000000));
                jw_str(w, "name", sn[i].name);
                jw_int(w, "date-sec", sn[i].date_sec);
                jw_int(w, "date-nsec", sn[i].date_nsec);
                jw_int(w, "vm-clock-sec", (int64_t)(sn[i].vm_clock_nsec / 1000000000));
                jw_str(w, "id", sn[i].id);
                jw_int(w, "vm-state-size", (int64_t)sn[i].vm_state_size);
                jw_close(w, '}');
            }
            jw_close(w, ']');
        }
        jw_int(w, "virtual-size", (int64_t)vsize);
        jw_str(w, "filename", file);
        if (in.cluster_size)
            jw_int(w, "cluster-size", in.cluster_size);
        jw_str(w, "format", in.format);
        jw_int(w, "actual-size", (int64_t)in.actual_size);
        if (qcow2) {
            jw_open(w, "format-specific", '{');
            jw_str(w, "type", "qcow2");
            jw_open(w, "data", '{');
            jw_str(w, "compat", compat);
            jw_str(w, "compression-type", ct);
            if (v3)
                jw_bool(w, "lazy-refcounts", in.lazy_refcounts);
            if (nbm) {
                jw_open(w, "bitmaps", '[');
                for (int i = 0; i < nbm; i++) {
                    jw_open(w, NULL, '{');
                    jw_open(w, "flags", '[');
                    if (bm[i].flags & FQ_BITMAP_IN_USE)
                        jw_str(w, NULL, "in-use");
                    if (bm[i].flags & FQ_BITMAP_AUTO)
                        jw_str(w, NULL, "auto");
                    jw_close(w, ']');
                    jw_str(w, "name", bm[i].name);
                    jw_int(w, "granularity", (int64_t)bm[i].granularity);
                    jw_close(w, '}');
                }
                jw_close(w, ']');
            }
            jw_int(w, "refcount-bits", in.refcount_bits);
            if (in.data_file[0])
                jw_str(w, "data-file", in.data_file);
            if (in.incompatible_features & 4)   /* the data file bit */
                jw_bool(w, "data-file-raw", in.data_file_raw);
            if (in.encrypt.format[0])
                print_encrypt(&in.encrypt, w);
            if (v3) {
                jw_bool(w, "corrupt", in.corrupt);
                jw_bool(w, "extended-l2", in.extended_l2);
            }
            jw_close(w, '}');
            jw_close(w, '}');
        }
        if (next[0])
            jw_str(w, "full-backing-filename", next);
        if (in.encrypted)
            jw_bool(w, "encrypted", true);
        if (next[0])
            jw_str(w, "backing-filename", in.backing_file);
        if (has_frag) {
            jw_int(w, "allocated-clusters", (int64_t)res.allocated_clusters);
            jw_int(w, "total-clusters", (int64_t)res.total_clusters);
            jw_int(w, "fragmented-clusters", (int64_t)res.fragmented_clusters);
            jw_int(w, "compressed-clusters", (int64_t)res.compressed_clusters);
        }
        jw_bool(w, "dirty-flag", in.dirty);
        jw_close(w, '}');
        fq_snapshot_list_free(sn, nsn);
        free(bm);
        return 0;
    }
    img_size_str(vsize, vs, sizeof(vs));
    img_size_str(in.actual_size, ds, sizeof(ds));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\ndisk size: %s\n",
           file, in.format, vs, vsize, ds);
    if (in.encrypted)
        printf("encrypted: yes\n");
    if (in.cluster_size)
        printf("cluster_size: %u\n", in.cluster_size);
    if (in.dirty)
        printf("cleanly shut down: no\n");
    if (next[0] && strcmp(next, in.backing_file))
        printf("backing file: %s (actual path: %s)\n", in.backing_file, next);
    else if (next[0])
        printf("backing file: %s\n", in.backing_file);
    if (next[0] && in.backing_format[0])
        printf("backing file format: %s\n", in.backing_format);
    if (nsn)
        img_snapshot_dump(sn, nsn);
    fq_snapshot_list_free(sn, nsn);
    if (qcow2)
        printf("Format specific information:\n    compat: %s\n    compression type: %s\n", compat, ct);
    if (qcow2 && v3)
        printf("    lazy refcounts: %s\n", in.lazy_refcounts ? "true" : "false");
    if (nbm)
        printf("    bitmaps:\n");
    for (int i = 0; i < nbm; i++) {
        int k = 0;
        printf("        [%d]:\n            flags:\n", i);
        if (bm[i].flags & FQ_BITMAP_IN_USE)
            printf("                [%d]: in-use\n", k++);
        if (bm[i].flags & FQ_BITMAP_AUTO)
            printf("                [%d]: auto\n", k++);
        printf("            name: %s\n            granularity: %" PRIu64 "\n", bm[i].name,
               bm[i].granularity);
    }
    free(bm);
    if (qcow2)
        printf("    refcount bits: %d\n", in.refcount_bits);
    if (qcow2 && in.data_file[0])
        printf("    data file: %s\n", in.data_file);
    if (qcow2 && (in.incompatible_features & 4))   /* the data file bit */
        printf("    data file raw: %s\n", in.data_file_raw ? "true" : "false");
    if (qcow2 && in.encrypt.format[0])
        print_encrypt(&in.encrypt, NULL);
    if (qcow2 && v3)
        printf("    corrupt: %s\n    extended l2: %s\n", in.corrupt ? "true" : "false",
               in.extended_l2 ? "true" : "false");
    if (has_frag) {
        char f[160];
        img_frag_str(&res, f, sizeof(f));
        printf("fragmentation: %s\n", f);
    }
    return 0;
}

static int info_run(int argc, char **argv, char (*name)[4096], char (*fmt)[32])
{
    static const char usage[] =
        "usage: fastqcow info [--object objectdef] [-f fmt] [--output=human|json] [--backing-chain]\n"
        "                     [-U] [--fragmentation] [--image-opts] filename\n"
        "\n"
        "Show what an image is (qemu-img info).\n"
        "\n"
        "  -f fmt               the image's format (qcow2, raw; probed by default)\n"
        "  --output=human|json  human-readable (default) or JSON output\n"
        "  --backing-chain      every image of the backing chain\n"
        "  -U, --force-share    read the image while other programs write it\n"
        "  --fragmentation      also what qemu-img check reports: clusters allocated,\n"
        "                       fragmented and compressed (a line, or json keys, that\n"
        "                       qemu-img info does not print)\n"
        "  --image-opts         the image is named by qemu's option list\n"
        "  --object objectdef   define an object (secret)\n"
        "  -h, --help           this help\n";
    struct jw w = { 0 };
    struct args a;
    int r = img_parse_args(argc, argv, ":f:hU", "JKG", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    /* under --image-opts the top image is an option list: its file, and
     * its format if it names one, for the names of the chain */
    const char *spec = argv[optind], *file0, *fmt0 = a.fmt;
    struct fq_blockopts top;
    char err[FQ_ERR_MAX];
    if (tool_image_name(spec, &top, &file0, &fmt0, err) < 0) {
        tool_error("Could not open '%s': %s", spec, err);
        fq_blockopts_free(&top);
        return 1;
    }
    snprintf(name[0], sizeof(name[0]), "%s", file0);
    snprintf(fmt[0], sizeof(fmt[0]), "%s", fmt0 ? fmt0 : "");
    bool chain_ok = !a.chain || img_chain_names(file0, fmt0, name);
    snprintf(name[0], sizeof(name[0]), "%s", file0);
    fq_blockopts_free(&top);
    if (!chain_ok) {
        /* as qemu-img: nothing printed for a chain that loops */
        int d = 0;
        while (d < MAX_CHAIN && name[d + 1][0])
            d++;
        tool_error("Backing file '%s' creates an infinite loop.", name[d]);
        return 1;
    }
    bool spec_top = tool_image_opts;
    if (a.chain && a.json)
        jw_open(&w, NULL, '[');
    for (int n = 0; n == 0 || (a.chain && name[n][0]); n++) {
        if (n == MAX_CHAIN) {
            tool_error("Backing file '%s' creates an infinite loop.", name[n]);
            return 1;
        }
        /* backing files: the format recorded, or given (--backing-format
         * overrides the first); never probed unless asked for */
        bool probe = n > 0 && tool_backing_format && !strcmp(tool_backing_format, "probe");
        if (n == 1 && tool_backing_format && !probe)
            snprintf(fmt[n], sizeof(fmt[n]), "%s", tool_backing_format);
        if (n > 0 && !fmt[n][0] && !probe) {
            tool_error("Could not open backing file '%s': the image records no backing format; "
                       "give it explicitly (--backing-format FMT) or ask for probing "
                       "(--backing-format probe)", name[n]);
            return 1;
        }
        if (n > 0 && !a.json)
            putchar('\n');
        tool_image_opts = spec_top && n == 0;   /* backing files are plain names */
        if (info_one(n == 0 ? spec : name[n], name[n], fmt[n][0] ? fmt[n] : NULL, a.json, a.frag,
                     n > 0, &w, name[n + 1], sizeof(name[n + 1]), fmt[n + 1]) < 0)
            return 1;
    }
    if (a.chain && a.json)
        jw_close(&w, ']');
    return 0;
}

/* the chain's names live on the heap, not in static arrays: a megabyte of
 * zeros in every process's data segment is memory each start pays for */
int cmd_info(int argc, char **argv)
{
    char (*name)[4096] = calloc(MAX_CHAIN + 1, sizeof(*name));
    char (*fmt)[32] = calloc(MAX_CHAIN + 1, sizeof(*fmt));
    int r = 1;

    if (name && fmt)
        r = info_run(argc, argv, name, fmt);
    else
        tool_error("Could not allocate memory");
    free(name);
    free(fmt);
    return r;
}
