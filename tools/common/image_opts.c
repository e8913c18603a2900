/* common/image_opts.c: qemu's --image-opts image specifications
 * ("driver=qcow2,file.filename=disk.qcow2,l2-cache-size=4M"; ",," is a
 * comma inside a value) for every subcommand that opens an image (cli.h):
 * the keys this tool knows are driver (qcow2, raw), read-only (on, off),
 * file.filename, file.driver (file), file.aio (an engine name),
 * cache.direct and cache.no-flush (on, off: the cache mode), and the metadata cache keys, which
 * the library takes by name (fq_open_opts_set) with qemu's syntax and
 * messages. Callers report a failure as qemu-img reports it: "Could not
 * open 'SPEC': why". Options a format does not have (the cache keys of a raw
 * image, unknown keys) are refused once the format is known, after the
 * image opened, as qemu does. More keys (json: specifications, the
 * protocol's options) can be added here.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

bool tool_image_opts;
bool tool_target_image_opts;

/* What a parsed specification left for after the open. */
struct spec_state {
    char *unknown;              /* first key no format here takes, or NULL */
    char *cache_key;            /* first qcow2-only key given, or NULL */
};

static struct spec_state last;

/* The next key=value of a list at *p (",," is a comma), unescaped into a
 * new string; *p moves past it. NULL at the end. */
static char *next_pair(const char **p)
{
    const char *s = *p;
    size_t n = 0;
    char *out;

    if (!*s)
        return NULL;
    if (!(out = malloc(strlen(s) + 1)))
        return NULL;
    while (*s) {
        if (s[0] == ',' && s[1] == ',') {
            out[n++] = ',';
            s += 2;
            continue;
        }
        if (*s == ',') {
            s++;
            break;
        }
        out[n++] = *s++;
    }
    out[n] = '\0';
    *p = s;
    return out;
}

/* Record why in err; returns -1. */
static int spec_fail(char *err, const char *fmt, const char *arg)
{
    snprintf(err, FQ_ERR_MAX, fmt, arg);
    return -1;
}

int tool_image_spec(const char **name, struct fq_open_opts *o, char *err)
{
    const char *p = *name, *file = NULL;
    int direct = -1, noflush = -1;
    char *kv;

    last = (struct spec_state){ 0 };
    while ((kv = next_pair(&p))) {
        char *eq = strchr(kv, '=');
        const char *key = kv, *val = eq ? eq + 1 : "on";   /* "key" alone means on */
        if (eq)
            *eq = '\0';
        if (!strcmp(key, "driver")) {
            if (strcmp(val, "qcow2") && strcmp(val, "raw"))
                return spec_fail(err, "Unknown driver '%s'", val);
            o->format = val;
        } else if (!strcmp(key, "file.filename")) {
            if (!*val)
                return spec_fail(err, "The 'file' block driver requires a file name%s", "");
            file = val;
        } else if (!strcmp(key, "file.driver")) {
            if (strcmp(val, "file"))
                return spec_fail(err, "Block protocol '%s' is not supported here", val);
        } else if (!strcmp(key, "file.aio")) {
            if (tool_parse_engine(val, &o->engine) < 0)
                return spec_fail(err, "Invalid aio option '%s'", val);
        } else if (!strcmp(key, "cache.direct") || !strcmp(key, "cache.no-flush")) {
            if (strcmp(val, "on") && strcmp(val, "off"))
                return spec_fail(err, "Parameter '%s' expects 'on' or 'off'", key);
            if (!strcmp(key, "cache.direct"))
                direct = !strcmp(val, "on");
            else
                noflush = !strcmp(val, "on");
        } else if (!strncmp(key, "file.", 5)) {
            return spec_fail(err, "Block protocol 'file' doesn't support the option '%s'", key + 5);
        } else if (!strcmp(key, "read-only")) {
            if (strcmp(val, "on") && strcmp(val, "off"))
                return spec_fail(err, "Parameter '%s' expects 'on' or 'off'", key);
            o->readonly |= !strcmp(val, "on");
        } else {
            int r = fq_open_opts_set(o, key, val, err);
            if (r == -ENOENT) {
                if (!last.unknown)
                    last.unknown = kv;   /* refused once the format is known */
                continue;
            }
            if (r < 0)
                return -1;       /* err holds the library's message */
            if (!last.cache_key)
                last.cache_key = kv;
        }
        /* values stay referenced by the options: kept for the run */
    }
    if (!file)
        return spec_fail(err, "A block device must be specified for \"%s\"", "file");
    /* qemu's cache modes as the two flags say them */
    if (noflush == 1)
        o->cache = direct == 1 ? FQ_CACHE_NONE : FQ_CACHE_UNSAFE;
    else if (direct == 1)
        o->cache = FQ_CACHE_NONE;
    else if (direct == 0)
        o->cache = FQ_CACHE_WRITEBACK;
    *name = file;
    return 0;
}

int tool_image_spec_check(struct fq_image *img, char *err)
{
    const char *fmt = fq_format(img);
    const char *bad = last.unknown ? last.unknown : strcmp(fmt, "qcow2") ? last.cache_key : NULL;

    if (!bad)
        return 0;
    snprintf(err, FQ_ERR_MAX, "Block format '%s' does not support the option '%s'", fmt, bad);
    return -1;
}

int tool_open_image(const char *name, const struct fq_open_opts *o, struct fq_image **out,
                    char *err)
{
    struct fq_open_opts oo = *o;
    int r;

    err[0] = '\0';
    if (tool_image_opts && tool_image_spec(&name, &oo, err) < 0)
        return -EINVAL;
    r = fq_open(name, &oo, out, err);
    if (r == 0 && tool_image_opts && tool_image_spec_check(*out, err) < 0) {
        fq_close(*out);
        *out = NULL;
        r = -EINVAL;
    }
    return r;
}

const char *tool_image_file(const char *name, const char **fmt)
{
    struct fq_open_opts o;
    char err[FQ_ERR_MAX];
    const char *file = name;

    if (!tool_image_opts)
        return name;
    fq_open_opts_init(&o);
    if (tool_image_spec(&file, &o, err) < 0)
        return name;
    if (fmt && o.format)
        *fmt = o.format;
    return file;
}
