/* nbd.h: the nbd protocol driver's private declarations: which names are
 * NBD names and how a libnbd handle connects to the server one names
 * (name.c); the device itself is nbd.c.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_DRIVERS_NBD_H
#define FQ_DRIVERS_NBD_H

#include <stdbool.h>
#include <libnbd.h>

/* True for the names this driver opens: URIs (nbd://, nbds://,
 * nbd+unix://, nbds+unix://, nbd+vsock://) and qemu's "nbd:" forms. */
bool nbd_name_claims(const char *name);
/* Connect `h` (created, meta contexts asked for) to the server `name`
 * names, blocking until the handshake is over. Returns 0, or -errno with
 * a message in err. */
int nbd_name_connect(struct nbd_handle *h, const char *name, char *err);
/* -errno of libnbd's last error on this thread (-EIO if it gave none). */
int nbd_last_errno(void);

#endif
