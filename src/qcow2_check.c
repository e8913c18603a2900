#include "qcow2.h"
int qcow2_check(struct fq_bdev *bs, unsigned repair, struct fq_check_result *res, fq_msg_fn *msg, void *opaque) { return -ENOTSUP; }
