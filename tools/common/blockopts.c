/* common/blockopts.c: qemu's block option lists in the tool
 * (blockopts.h): the short-form warnings, the secrets they name
 * (--object secret), and the --image-opts of the
 * qemu-img compatible subcommands: an image name that is a list, opened
 * and checked by the library (fq_open_blockopts).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockopts.h"
#include "object.h"

bool tool_image_opts;
bool tool_target_image_opts;

/* Parse `list`, warning of short-form booleans if `warn`. */
static int parse(const char *list, struct fq_blockopts *o, bool warn, char *err)
{
    int r = fq_blockopts_parse(list, o, err);
    const char *v;

    /* the secret named (--object secret,id=...), as qemu looks it up */
    if (r == 0 &&
        ((v = fq_blockopts_get(o, "encrypt.key-secret")) || (v = fq_blockopts_get(o, "key-secret"))) &&
        !(o->caches.key_secret = tool_secret_or_err(v, &o->caches.key_secret_len, err, FQ_ERR_MAX)))
        return -1;

    for (int i = 0; warn && i < o->n && i < 64; i++) {
        if (!(o->short_form >> i & 1))
            continue;
        bool off = !strcmp(o->val[i], "off");
        tool_error("warning: short-form boolean option '%s%s' deprecated", off ? "no" : "",
                   o->key[i]);
        fprintf(stderr, "Please use %s=%s instead\n", o->key[i], o->val[i]);
    }
    return r < 0 ? -1 : 0;
}

int tool_blockopts_parse(const char *list, struct fq_blockopts *o, char *err)
{
    return parse(list, o, true, err);
}

/* Parse an image name given under --image-opts. A subcommand may parse
 * one name twice (for its file, then to open it): its warnings are said
 * once. */
static int parse_name(const char *name, struct fq_blockopts *o, char *err)
{
    static const char *warned;   /* the last name warned of (an argv string) */
    bool warn = name != warned;

    warned = name;
    return parse(name, o, warn, err);
}

int tool_open_image(const char *name, const struct fq_open_opts *o, struct fq_image **out,
                    char *err)
{
    struct fq_blockopts spec;
    int r;

    err[0] = '\0';
    if (!tool_image_opts)
        return fq_open(name, o, out, err);
    if (parse_name(name, &spec, err) < 0) {
        fq_blockopts_free(&spec);
        return -EINVAL;
    }
    r = fq_open_blockopts(&spec, o, out, err);
    fq_blockopts_free(&spec);
    return r;
}

int tool_image_name(const char *name, struct fq_blockopts *spec, const char **file,
                    const char **fmt, char *err)
{
    fq_blockopts_init(spec);
    *file = name;
    if (!tool_image_opts && !strncmp(name, "file:", 5)) {
        /* "file:NAME" is NAME; qemu shows "./x:y" for a NAME "x:y" */
        const char *colon = strchr(name + 5, ':'), *slash = strchr(name + 5, '/');
        bool dot = colon && (!slash || colon < slash);
        if ((spec->name = malloc(strlen(name) + 3)))
            sprintf(spec->name, "%s%s", dot ? "./" : "", name + 5);
        *file = spec->name ? spec->name : name;
        return 0;
    }
    if (!tool_image_opts && !fq_blockopts_is_name(name))
        return 0;
    if (parse_name(name, spec, err) < 0)
        return -1;
    if (!spec->filename)
        return fq_blockopts_no_file(spec, err) < 0 ? -1 : 0;
    *file = spec->name;
    if (fmt && spec->driver && !spec->top_protocol)
        *fmt = spec->driver;
    return 0;
}
