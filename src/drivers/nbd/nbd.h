/* nbd.h: the nbd protocol driver's private declarations: which names are
 * NBD names and how a libnbd handle connects to the server one names
 * (name.c); the device itself is nbd.c.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_DRIVERS_NBD_H
#define FQ_DRIVERS_NBD_H

#include <stdbool.h>
#include <libnbd.h>

/* libnbd is loaded when the first NBD name is opened (libnbd_dl.c), not
 * at program start: it brings TLS, XML and Unicode libraries that every
 * other use of the library would carry in memory for nothing. The calls
 * below go through this table; FQ_LIBNBD_SYMS lists every one used. */
#define FQ_LIBNBD_SYMS(X) \
    X(nbd_add_meta_context) \
    X(nbd_aio_flush) \
    X(nbd_aio_get_direction) \
    X(nbd_aio_get_fd) \
    X(nbd_aio_is_closed) \
    X(nbd_aio_is_dead) \
    X(nbd_aio_notify_read) \
    X(nbd_aio_notify_write) \
    X(nbd_aio_pread) \
    X(nbd_aio_pwrite) \
    X(nbd_aio_trim) \
    X(nbd_aio_zero) \
    X(nbd_block_status) \
    X(nbd_can_flush) \
    X(nbd_can_meta_context) \
    X(nbd_can_trim) \
    X(nbd_can_zero) \
    X(nbd_close) \
    X(nbd_connect_tcp) \
    X(nbd_connect_unix) \
    X(nbd_connect_uri) \
    X(nbd_create) \
    X(nbd_flush) \
    X(nbd_get_block_size) \
    X(nbd_get_errno) \
    X(nbd_get_error) \
    X(nbd_get_size) \
    X(nbd_is_read_only) \
    X(nbd_pread) \
    X(nbd_pwrite) \
    X(nbd_set_export_name) \
    X(nbd_shutdown) \
    X(nbd_supports_uri) \
    X(nbd_trim) \
    X(nbd_zero)

struct fq_libnbd {
#define FQ_LIBNBD_PTR(f) __typeof__(f) *f;
    FQ_LIBNBD_SYMS(FQ_LIBNBD_PTR)
#undef FQ_LIBNBD_PTR
};
extern struct fq_libnbd fq_libnbd;

/* Load libnbd and resolve the table, once per process. Returns 0, or
 * -ENOTSUP with a message (naming `name`) in err when libnbd cannot be
 * loaded. */
int fq_libnbd_load(const char *name, char *err);

#ifndef FQ_LIBNBD_DL_IMPL
#define nbd_add_meta_context fq_libnbd.nbd_add_meta_context
#define nbd_aio_flush fq_libnbd.nbd_aio_flush
#define nbd_aio_get_direction fq_libnbd.nbd_aio_get_direction
#define nbd_aio_get_fd fq_libnbd.nbd_aio_get_fd
#define nbd_aio_is_closed fq_libnbd.nbd_aio_is_closed
#define nbd_aio_is_dead fq_libnbd.nbd_aio_is_dead
#define nbd_aio_notify_read fq_libnbd.nbd_aio_notify_read
#define nbd_aio_notify_write fq_libnbd.nbd_aio_notify_write
#define nbd_aio_pread fq_libnbd.nbd_aio_pread
#define nbd_aio_pwrite fq_libnbd.nbd_aio_pwrite
#define nbd_aio_trim fq_libnbd.nbd_aio_trim
#define nbd_aio_zero fq_libnbd.nbd_aio_zero
#define nbd_block_status fq_libnbd.nbd_block_status
#define nbd_can_flush fq_libnbd.nbd_can_flush
#define nbd_can_meta_context fq_libnbd.nbd_can_meta_context
#define nbd_can_trim fq_libnbd.nbd_can_trim
#define nbd_can_zero fq_libnbd.nbd_can_zero
#define nbd_close fq_libnbd.nbd_close
#define nbd_connect_tcp fq_libnbd.nbd_connect_tcp
#define nbd_connect_unix fq_libnbd.nbd_connect_unix
#define nbd_connect_uri fq_libnbd.nbd_connect_uri
#define nbd_create fq_libnbd.nbd_create
#define nbd_flush fq_libnbd.nbd_flush
#define nbd_get_block_size fq_libnbd.nbd_get_block_size
#define nbd_get_errno fq_libnbd.nbd_get_errno
#define nbd_get_error fq_libnbd.nbd_get_error
#define nbd_get_size fq_libnbd.nbd_get_size
#define nbd_is_read_only fq_libnbd.nbd_is_read_only
#define nbd_pread fq_libnbd.nbd_pread
#define nbd_pwrite fq_libnbd.nbd_pwrite
#define nbd_set_export_name fq_libnbd.nbd_set_export_name
#define nbd_shutdown fq_libnbd.nbd_shutdown
#define nbd_supports_uri fq_libnbd.nbd_supports_uri
#define nbd_trim fq_libnbd.nbd_trim
#define nbd_zero fq_libnbd.nbd_zero
#endif

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
