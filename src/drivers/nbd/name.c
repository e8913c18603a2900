/* name.c: NBD image names. URIs (nbd://host[:port]/export,
 * nbd+unix:///export?socket=PATH, their TLS and vsock forms) go to
 * libnbd's URI parser as they are; qemu's older forms
 * nbd:unix:PATH[:exportname=NAME] and nbd:HOST:PORT[:exportname=NAME]
 * are taken apart here. Connecting is synchronous: opening an image
 * blocks until the handshake is over (requests afterwards never do).
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nbd.h"
#include "util.h"

#define NBD_DEFAULT_PORT "10809"

static const char *const uri_schemes[] = {
    "nbd://", "nbds://", "nbd+unix://", "nbds+unix://", "nbd+vsock://", "nbds+vsock://",
};

/* True if `name` starts with `prefix`. */
static bool starts(const char *name, const char *prefix)
{
    return !strncmp(name, prefix, strlen(prefix));
}

bool nbd_name_claims(const char *name)
{
    for (size_t i = 0; i < sizeof(uri_schemes) / sizeof(uri_schemes[0]); i++)
        if (starts(name, uri_schemes[i]))
            return true;
    return starts(name, "nbd:");
}

int nbd_last_errno(void)
{
    int e = nbd_get_errno();
    return e > 0 ? -e : -EIO;
}

/* The message and error of a failed libnbd call while opening `name`. */
static int nbd_fail(const char *name, char *err)
{
    int r = nbd_last_errno();
    const char *m = nbd_get_error();

    fq_seterr(err, "Could not open '%s': %s", name, m ? m : strerror(-r));
    return r;
}

/* qemu's "nbd:unix:PATH[:exportname=NAME]" and
 * "nbd:HOST:PORT[:exportname=NAME]" (HOST may be "[v6 address]"). */
static int connect_legacy(struct nbd_handle *h, const char *name, char *err)
{
    char *s = strdup(name + 4), *exp, *port = NULL;
    int r;

    if (!s)
        return -ENOMEM;
    if ((exp = strstr(s, ":exportname="))) {
        *exp = 0;
        exp += strlen(":exportname=");
    }
    if (nbd_set_export_name(h, exp ? exp : "") < 0) {
        r = nbd_fail(name, err);
        goto out;
    }
    if (starts(s, "unix:")) {
        if (!s[5]) {
            fq_seterr(err, "Could not open '%s': no socket path after nbd:unix:", name);
            r = -EINVAL;
            goto out;
        }
        r = nbd_connect_unix(h, s + 5) < 0 ? nbd_fail(name, err) : 0;
        goto out;
    }
    char *host = s;
    if (host[0] == '[') {             /* [v6]:port */
        char *close = strchr(host, ']');
        if (!close || (close[1] && close[1] != ':')) {
            fq_seterr(err, "Could not open '%s': bad address in brackets", name);
            r = -EINVAL;
            goto out;
        }
        *close = 0;
        port = close[1] ? close + 2 : NULL;
        host++;
    } else if ((port = strchr(host, ':'))) {
        *port++ = 0;
    }
    if (!host[0] || (port && (!port[0] || strchr(port, ':')))) {
        fq_seterr(err, "Could not open '%s': expected nbd:unix:PATH or nbd:HOST:PORT, "
                  "optionally followed by :exportname=NAME", name);
        r = -EINVAL;
        goto out;
    }
    r = nbd_connect_tcp(h, host, port ? port : NBD_DEFAULT_PORT) < 0 ? nbd_fail(name, err) : 0;
out:
    free(s);
    return r;
}

int nbd_name_connect(struct nbd_handle *h, const char *name, char *err)
{
    if (!strstr(name, "://"))
        return connect_legacy(h, name, err);
    if (!nbd_supports_uri(h)) {
        fq_seterr(err, "Could not open '%s': this libnbd cannot parse NBD URIs", name);
        return -ENOTSUP;
    }
    return nbd_connect_uri(h, name) < 0 ? nbd_fail(name, err) : 0;
}
