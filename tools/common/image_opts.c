/* common/image_opts.c: --image-opts, the image named by qemu's option syntax
 * ("driver=qcow2,file.filename=disk.qcow2,cache.direct=on,..."), turned
 * into fq_open_opts. The keys are those fq_open_opts can express; any
 * other key is refused by name, so that nothing asked is silently ignored.
 * SPDX-License-Identifier: MIT
 */
#include <stdbool.h>
#include <string.h>

#include "cli.h"
#include "image_opts.h"

/* A boolean value as qemu spells them; -1 if it is none. */
static int parse_bool(const char *v)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes"))
        return 1;
    if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "no"))
        return 0;
    return -1;
}

int tool_image_opts(char *spec, struct fq_open_opts *o, const char **file)
{
    char *save = NULL;
    int direct = -1, noflush = -1;

    *file = NULL;
    for (char *t = strtok_r(spec, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        char *v = strchr(t, '=');
        if (!v) {
            tool_error("--image-opts: '%s' is not key=value", t);
            return -1;
        }
        *v++ = '\0';
        int b = parse_bool(v);
        if (!strcmp(t, "driver") || !strcmp(t, "format")) {
            o->format = v;
        } else if (!strcmp(t, "file.filename") || !strcmp(t, "filename") ||
                   !strcmp(t, "file")) {
            *file = v;
        } else if (!strcmp(t, "file.driver")) {
            if (strcmp(v, "file")) {
                tool_error("--image-opts: file.driver=%s is not supported (file only)", v);
                return -1;
            }
        } else if (!strcmp(t, "file.aio") || !strcmp(t, "aio")) {
            if (tool_parse_engine(v, &o->engine) < 0)
                return -1;
        } else if (!strcmp(t, "cache-size")) {
            if (tool_parse_size(v, &o->cache_size, "cache-size") < 0)
                return -1;
        } else if (!strcmp(t, "read-only") || !strcmp(t, "cache.direct") ||
                   !strcmp(t, "cache.no-flush")) {
            if (b < 0) {
                tool_error("--image-opts: %s takes on or off, not '%s'", t, v);
                return -1;
            }
            if (!strcmp(t, "read-only"))
                o->readonly = b;
            else if (!strcmp(t, "cache.direct"))
                direct = b;
            else
                noflush = b;
        } else {
            tool_error("--image-opts: unknown key '%s'", t);
            return -1;
        }
    }
    if (!*file) {
        tool_error("--image-opts: no file.filename");
        return -1;
    }
    if (noflush == 1)
        o->cache = FQ_CACHE_UNSAFE;
    else if (direct == 1)
        o->cache = FQ_CACHE_NONE;
    else if (direct == 0)
        o->cache = FQ_CACHE_WRITEBACK;
    return 0;
}
