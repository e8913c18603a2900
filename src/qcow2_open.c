/* temporary */
#include "bdev.h"
#include "util.h"
int fq_qcow2_open(struct fq_bdev *child, const struct fq_open_opts *opts, struct fq_bdev **out, char *err)
{ fq_seterr(err, "qcow2 not built yet"); return -ENOTSUP; }
bool fq_qcow2_probe(struct fq_bdev *child) { return false; }
int fq_qcow2_create(struct fq_bdev *child, const struct fq_create_opts *o, char *err) { return -ENOTSUP; }
