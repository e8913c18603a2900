/* info.c: the qemu-img compatible subcommands that report on an
 * existing image: info (with --backing-chain), check (and repair with -r)
 * and map.
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
#include <sys/stat.h>

#include "common/args.h"
#include "common/image.h"
#include "common/output.h"
#include "subcommands.h"

#define MAX_CHAIN 256  /* longest backing chain that info and map follow */

/* ---- info ----------------------------------------------------------------- */

/* Print the info of one image. `next` receives the path of its backing
 * file as qemu opens it ("" = none), `next_fmt` that file's format.
 * Returns 0 or -1. */
static int info_one(const char *file, const char *fmt, bool json, struct jw *w,
                    char *next, size_t n, char *next_fmt)
{
    struct fq_open_opts o;
    struct fq_image *img;
    struct fq_info in;
    char vs[32], ds[32];
    int r;

    tool_open_opts_init(&o);
    o.format = fmt;
    o.readonly = o.check_mode = o.no_backing = 1;
    if (!(img = img_open(file, &o)))
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
    if (in.cluster_size)
        printf("cluster_size: %u\n", in.cluster_size);
    if (in.encrypted)
        printf("encrypted: yes\n");
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
    if (qcow2 && v3)
        printf("    corrupt: %s\n    extended l2: %s\n", in.corrupt ? "true" : "false",
               in.extended_l2 ? "true" : "false");
    return 0;
}

static bool chain_names(const char *file, const char *fmt, char (*names)[4096]);

int cmd_info(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow info [-f fmt] [--output=human|json] [--backing-chain] [-U] filename\n\n"
        "Show what an image is (qemu-img info).\n";
    static char name[MAX_CHAIN + 1][4096], fmt[MAX_CHAIN + 1][32];
    struct jw w = { 0 };
    struct args a;
    int r = img_parse_args(argc, argv, ":f:hU", "JK", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    snprintf(name[0], sizeof(name[0]), "%s", argv[optind]);
    snprintf(fmt[0], sizeof(fmt[0]), "%s", a.fmt ? a.fmt : "");
    if (a.chain && !chain_names(argv[optind], a.fmt, name)) {
        /* as qemu-img: nothing printed for a chain that loops */
        int d = 0;
        while (d < MAX_CHAIN && name[d + 1][0])
            d++;
        tool_error("Backing file '%s' creates an infinite loop.", name[d]);
        return 1;
    }
    snprintf(name[0], sizeof(name[0]), "%s", argv[optind]);
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
        if (info_one(name[n], fmt[n][0] ? fmt[n] : NULL, a.json, &w, name[n + 1],
                     sizeof(name[n + 1]), fmt[n + 1]) < 0)
            return 1;
    }
    if (a.chain && a.json)
        jw_close(&w, ']');
    return 0;
}

/* ---- check ---------------------------------------------------------------- */

static void check_msg(void *opaque, const char *line)
{
    size_t n = strlen(line);

    fprintf(stderr, "%.*s\n", (int)(n && line[n - 1] == '\n' ? n - 1 : n), line);
}

static void check_json(const struct fq_check_result *res, const char *file, const char *format)
{
    struct jw w = { 0 };

    jw_open(&w, NULL, '{');
    if (res->image_end_offset)
        jw_int(&w, "image-end-offset", (int64_t)res->image_end_offset);
    if (res->compressed_clusters)
        jw_int(&w, "compressed-clusters", (int64_t)res->compressed_clusters);
    if (res->total_clusters)
        jw_int(&w, "total-clusters", (int64_t)res->total_clusters);
    if (res->corruptions)
        jw_int(&w, "corruptions", res->corruptions);
    if (res->corruptions_fixed)
        jw_int(&w, "corruptions-fixed", res->corruptions_fixed);
    jw_int(&w, "check-errors", res->check_errors);
    if (res->leaks)
        jw_int(&w, "leaks", res->leaks);
    if (res->leaks_fixed)
        jw_int(&w, "leaks-fixed", res->leaks_fixed);
    if (res->allocated_clusters)
        jw_int(&w, "allocated-clusters", (int64_t)res->allocated_clusters);
    jw_str(&w, "filename", file);
    jw_str(&w, "format", format);
    if (res->fragmented_clusters)
        jw_int(&w, "fragmented-clusters", (int64_t)res->fragmented_clusters);
    jw_close(&w, '}');
}

static void check_human(const struct fq_check_result *res)
{
    if (res->corruptions_fixed || res->leaks_fixed)
        printf("The following inconsistencies were found and repaired:\n\n    %" PRId64 " leaked clusters\n"
               "    %" PRId64 " corruptions\n\nDouble checking the fixed image now...\n",
               res->leaks_fixed, res->corruptions_fixed);
    if (!res->corruptions && !res->leaks && !res->check_errors)
        printf("No errors were found on the image.\n");
    if (res->corruptions)
        printf("\n%" PRId64 " errors were found on the image.\nData may be corrupted, or further "
               "writes to the image may corrupt it.\n", res->corruptions);
    if (res->leaks)
        printf("\n%" PRId64 " leaked clusters were found on the image.\nThis means waste of disk "
               "space, but no harm to data.\n", res->leaks);
    if (res->check_errors)
        printf("\n%" PRId64 " internal errors have occurred during the check.\n", res->check_errors);
    if (res->total_clusters && res->allocated_clusters) {
        double alloc = (double)res->allocated_clusters;
        printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed "
               "clusters\n", res->allocated_clusters, res->total_clusters,
               alloc * 100 / (double)res->total_clusters, (double)res->fragmented_clusters * 100 / alloc,
               (double)res->compressed_clusters * 100 / alloc);
    }
    if (res->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", res->image_end_offset);
}

int cmd_check(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow check [-q] [-f fmt] [--output=human|json] [-r leaks|all] [-T cache] filename\n\n"
        "Check, and with -r repair, an image (qemu-img check). Exit codes: 0 consistent,\n"
        "1 check not completed, 2 corrupted, 3 leaked clusters only, 63 no checks.\n";
    struct fq_check_result res, again;
    struct fq_open_opts o;
    struct fq_image *img;
    struct args a;
    char format[16];
    int r = img_parse_args(argc, argv, ":f:r:T:qhU", "J", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    tool_open_opts_init(&o);
    o.format = a.fmt;
    o.cache = a.src_cache;
    o.readonly = !a.repair;   /* repair needs a read-write open */
    o.check_mode = o.no_backing = 1;
    if (!(img = img_open(argv[optind], &o)))
        return 1;
    snprintf(format, sizeof(format), "%s", fq_format(img));
    r = fq_check(img, a.repair, &res, check_msg, NULL);
    if (r == 0 && (res.corruptions_fixed || res.leaks_fixed)) {
        /* as qemu-img: report what a second, read-only pass still finds */
        r = fq_check(img, 0, &again, check_msg, NULL);
        again.corruptions_fixed = res.corruptions_fixed;
        again.leaks_fixed = res.leaks_fixed;
        res = again;
    }
    int cr = fq_close(img);
    if (r == 0 && a.repair)
        r = cr;
    if (r == -ENOTSUP) {
        tool_error("This image format does not support checks");
        return 63;
    }
    if (r < 0) {
        tool_error("Check failed: %s", strerror(-r));
        return 1;
    }
    if (!a.quiet && a.json)
        check_json(&res, argv[optind], format);
    else if (!a.quiet)
        check_human(&res);
    return res.check_errors ? 1 : res.corruptions ? 2 : res.leaks ? 3 : 0;
}

/* ---- map ------------------------------------------------------------------ */

#define MAP_FLAGS (FQ_MAP_DATA | FQ_MAP_ZERO | FQ_MAP_ALLOCATED | FQ_MAP_OFFSET)

/* qemu-img map merges entries equal in all but length whose host ranges
 * (if any) continue each other; 7.2 knows no "compressed". */
static bool map_mergeable(const struct fq_map_entry *a, const struct fq_map_entry *b)
{
    return a->length && (a->flags & MAP_FLAGS) == (b->flags & MAP_FLAGS) && a->depth == b->depth &&
           (!(a->flags & FQ_MAP_OFFSET) || a->host_offset + a->length == b->host_offset);
}

/* Print a merged entry. Returns 0, or -1 where human output cannot show
 * data without a host offset (compressed clusters). */
static int map_dump(const struct fq_map_entry *e, bool json, bool first, char (*names)[4096])
{
    bool off = e->flags & FQ_MAP_OFFSET, data = e->flags & FQ_MAP_DATA, zero = e->flags & FQ_MAP_ZERO;

    if (json) {
        printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, \"present\": %s, "
               "\"zero\": %s, \"data\": %s", first ? "[" : ",\n", e->start, e->length, e->depth,
               e->flags & FQ_MAP_ALLOCATED ? "true" : "false", zero ? "true" : "false",
               data ? "true" : "false");
        if (off)
            printf(", \"offset\": %" PRIu64, e->host_offset);
        putchar('}');
    } else if (data && !off) {
        tool_error("File contains external, encrypted or compressed clusters.");
        return -1;
    } else if (data && !zero) {
        char col[3][24];   /* qemu's "%#-16"PRIx64: 0 has no 0x */
        const uint64_t v[3] = { e->start, e->length, e->host_offset };
        for (int i = 0; i < 3; i++)
            snprintf(col[i], sizeof(col[i]), v[i] ? "%#" PRIx64 : "0", v[i]);
        printf("%-16s%-16s%-16s%s\n", col[0], col[1], col[2], names[e->depth]);
    }
    return 0;
}

/* names[d]: the file of layer d of the chain, named as qemu names it.
 * Returns false if the chain comes back to a file already in it (the same
 * file under any name); names[d] of the last layer is then that file. */
static bool chain_names(const char *file, const char *fmt, char (*names)[4096])
{
    static struct stat seen[MAX_CHAIN + 1];

    snprintf(names[0], 4096, "%s", file);
    for (int d = 0; d < MAX_CHAIN; d++) {
        struct fq_open_opts o;
        struct fq_image *img;
        struct fq_info in;

        names[d + 1][0] = '\0';
        if (stat(names[d], &seen[d]) == 0)
            for (int i = 0; i < d; i++)
                if (seen[i].st_dev == seen[d].st_dev && seen[i].st_ino == seen[d].st_ino)
                    return false;
        tool_open_opts_init(&o);
        o.format = d == 0 ? fmt : NULL;
        o.readonly = o.no_backing = o.check_mode = 1;
        if (fq_open(names[d], &o, &img, NULL) < 0)
            return true;
        int r = fq_get_info(img, &in);
        fq_close(img);
        if (r < 0 || !in.backing_file[0])
            return true;
        img_path_combine(names[d], in.backing_file, names[d + 1], 4096);
    }
    return true;
}

int cmd_map(int argc, char **argv)
{
    static const char usage[] =
        "usage: fastqcow map [-f fmt] [--output=human|json] [--start-offset=N] [--max-length=N] filename\n\n"
        "Show where the guest data of an image lives (qemu-img map).\n";
    static char names[MAX_CHAIN + 1][4096];
    struct fq_map_entry cur, next;
    struct fq_open_opts o;
    struct fq_image *img;
    struct args a;
    bool first = true;
    int r = img_parse_args(argc, argv, ":f:hU", "JXY", usage, &a);

    if (r)
        return r < 0 ? 0 : r;
    if (optind != argc - 1)
        return img_usage_err("Expecting one image file name");
    tool_open_opts_init(&o);
    o.format = a.fmt;
    o.readonly = 1;
    if (!(img = img_open(argv[optind], &o)))
        return 1;
    uint64_t size = fq_size(img), end = a.maxlen > size - MIN(a.start, size) ? size : a.start + a.maxlen;
    if (!a.json) {
        chain_names(argv[optind], a.fmt, names);
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    }
    cur = (struct fq_map_entry){ .start = a.start };
    while (r == 0 && cur.start + cur.length < end) {
        uint64_t off = cur.start + cur.length;
        if ((r = fq_map(img, off, end - off, &next)) < 0 || next.length == 0) {
            tool_error("Could not read the image metadata: %s", strerror(r < 0 ? -r : EIO));
            r = -1;
        } else if (map_mergeable(&cur, &next)) {
            cur.length += MIN(next.length, end - off);
        } else {
            if (cur.length && (r = map_dump(&cur, a.json, first, names)) == 0)
                first = false;
            cur = next;
            cur.length = MIN(next.length, end - off);
        }
    }
    if (r == 0)   /* the last entry is printed even if empty */
        r = map_dump(&cur, a.json, first, names);
    if (r == 0 && a.json)
        printf("]\n");
    fq_close(img);
    return r < 0;
}
