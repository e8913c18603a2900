/* libnbd_dl.c: libnbd, loaded on first use.
 *
 * The nbd driver is the only user of libnbd, and libnbd pulls in
 * GnuTLS, libxml2 and ICU: megabytes of resident pages in every process
 * that links the library, although most never open an NBD name. So the
 * library does not link libnbd; the driver calls through a table of
 * pointers (nbd.h) that is filled here, once, when an NBD name is first
 * opened. A missing or too old libnbd fails that open with a message;
 * every other name is unaffected.
 * SPDX-License-Identifier: MIT
 */
#define FQ_LIBNBD_DL_IMPL
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>

#include "driver.h"
#include "nbd.h"
#include "util.h"

struct fq_libnbd fq_libnbd;

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static char load_msg[256];
static int load_ret;

/* Open libnbd and resolve every symbol of the table (run once). */
static void load(void)
{
    void *h = dlopen("libnbd.so.0", RTLD_NOW | RTLD_LOCAL);

    if (!h) {
        snprintf(load_msg, sizeof(load_msg), "libnbd cannot be loaded (%s)", dlerror());
        load_ret = -ENOTSUP;
        return;
    }
#define FQ_LIBNBD_RESOLVE(f)                                                           \
    if (load_ret == 0 && !(*(void **)&fq_libnbd.f = dlsym(h, #f))) {                  \
        snprintf(load_msg, sizeof(load_msg), "libnbd lacks %s (too old a version)", #f); \
        load_ret = -ENOTSUP;                                                          \
    }
    FQ_LIBNBD_SYMS(FQ_LIBNBD_RESOLVE)
#undef FQ_LIBNBD_RESOLVE
    /* the handle stays open: the table points into it */
}

int fq_libnbd_load(const char *name, char *err)
{
    pthread_once(&load_once, load);
    if (load_ret < 0)
        fq_seterr(err, "Could not open '%s': %s", name, load_msg);
    return load_ret;
}
