/* request.c: the transmission phase's wire format (see proto.h): a
 * request header decoded and checked in the order the specification
 * gives its errors (unknown command or flag: EINVAL; a write of any kind
 * on a read-only export: EPERM; past the end: ENOSPC for writes, EINVAL
 * otherwise; a payload over the advertised maximum: EINVAL), and the
 * reply headers encoded.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <string.h>

#include "proto.h"

/* The command flags a command accepts, given what was negotiated. */
static uint16_t allowed_flags(uint16_t type, const struct nbd_xmit *x)
{
    uint16_t f = (x->tflags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;

    switch (type) {
    case NBD_CMD_READ:
        return (uint16_t)(f | (x->structured ? NBD_CMD_FLAG_DF : 0));
    case NBD_CMD_WRITE_ZEROES:
        return (uint16_t)(f | NBD_CMD_FLAG_NO_HOLE |
                          ((x->tflags & NBD_FLAG_SEND_FAST_ZERO) ? NBD_CMD_FLAG_FAST_ZERO : 0));
    case NBD_CMD_BLOCK_STATUS:
        return (uint16_t)(f | NBD_CMD_FLAG_REQ_ONE);
    default:
        return f;
    }
}

int nbd_request_decode(const uint8_t *hdr, const struct nbd_xmit *x,
                       struct nbd_request *rq, uint32_t *payload)
{
    *payload = 0;
    if (nbd_get32(hdr) != NBD_REQUEST_MAGIC)
        return -1;
    rq->flags = nbd_get16(hdr + 4);
    rq->type = nbd_get16(hdr + 6);
    rq->handle = nbd_get64(hdr + 8);
    rq->offset = nbd_get64(hdr + 16);
    rq->length = nbd_get32(hdr + 24);
    if (rq->type == NBD_CMD_WRITE)
        *payload = rq->length;

    bool ro = x->tflags & NBD_FLAG_READ_ONLY;
    bool past_end = rq->offset > x->size || rq->length > x->size - rq->offset;
    switch (rq->type) {
    case NBD_CMD_READ:
    case NBD_CMD_CACHE:
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
    case NBD_CMD_BLOCK_STATUS:
        break;
    case NBD_CMD_FLUSH:
    case NBD_CMD_DISC:
        if (rq->flags & ~allowed_flags(rq->type, x))
            return NBD_EINVAL;
        return rq->offset || rq->length ? NBD_EINVAL : 0;
    default:
        return NBD_EINVAL;
    }
    if (rq->flags & ~allowed_flags(rq->type, x))
        return NBD_EINVAL;
    if (rq->type == NBD_CMD_TRIM && !(x->tflags & NBD_FLAG_SEND_TRIM))
        return ro ? NBD_EPERM : NBD_EINVAL;
    if (rq->type == NBD_CMD_WRITE_ZEROES && !(x->tflags & NBD_FLAG_SEND_WRITE_ZEROES))
        return ro ? NBD_EPERM : NBD_EINVAL;
    if (ro && (rq->type == NBD_CMD_WRITE || rq->type == NBD_CMD_TRIM ||
               rq->type == NBD_CMD_WRITE_ZEROES))
        return NBD_EPERM;
    if (rq->type == NBD_CMD_BLOCK_STATUS && (!x->structured || !x->meta_sel))
        return NBD_EINVAL;
    if ((rq->type == NBD_CMD_READ || rq->type == NBD_CMD_WRITE || rq->type == NBD_CMD_CACHE) &&
        rq->length > x->max_payload)
        return NBD_EINVAL;
    if (past_end)
        return rq->type == NBD_CMD_WRITE || rq->type == NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC
                                                                           : NBD_EINVAL;
    if (rq->type == NBD_CMD_BLOCK_STATUS && rq->length == 0)
        return NBD_EINVAL;
    return 0;
}

size_t nbd_simple_reply(uint8_t p[NBD_SIMPLE_REPLY_SIZE], uint64_t handle, uint32_t error)
{
    nbd_put32(p, NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(p + 4, error);
    nbd_put64(p + 8, handle);
    return NBD_SIMPLE_REPLY_SIZE;
}

size_t nbd_chunk_header(uint8_t p[NBD_CHUNK_HEADER_SIZE], uint64_t handle, uint16_t flags,
                        uint16_t type, uint32_t length)
{
    nbd_put32(p, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put16(p + 4, flags);
    nbd_put16(p + 6, type);
    nbd_put64(p + 8, handle);
    nbd_put32(p + 16, length);
    return NBD_CHUNK_HEADER_SIZE;
}

size_t nbd_error_chunk(uint8_t *p, uint64_t handle, uint32_t error, const char *msg)
{
    size_t ml = msg ? strlen(msg) : 0;

    if (ml > 255)
        ml = 255;
    nbd_chunk_header(p, handle, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, (uint32_t)(6 + ml));
    nbd_put32(p + NBD_CHUNK_HEADER_SIZE, error);
    nbd_put16(p + NBD_CHUNK_HEADER_SIZE + 4, (uint16_t)ml);
    if (ml)
        memcpy(p + NBD_CHUNK_HEADER_SIZE + 6, msg, ml);
    return NBD_CHUNK_HEADER_SIZE + 6 + ml;
}

uint32_t nbd_errno(int err)
{
    switch (-err) {
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}
