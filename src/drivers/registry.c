/* registry.c: the one list of drivers. Adding a driver is adding its
 * table here; nothing else in the library names a driver. Probing asks
 * every format driver and takes the surest answer (raw, the fallback,
 * is surest of nothing).
 * SPDX-License-Identifier: MIT
 */
#include "driver.h"

extern const struct fq_driver fq_driver_qcow2;
extern const struct fq_driver fq_driver_raw;
extern const struct fq_driver fq_driver_luks;
extern const struct fq_driver fq_driver_file;
extern const struct fq_driver fq_driver_null;
extern const struct fq_driver fq_driver_blkdebug;
#ifdef FQ_HAVE_LIBNBD
extern const struct fq_driver fq_driver_nbd;
#endif

const struct fq_driver *const fq_drivers[] = {
    &fq_driver_qcow2,
    &fq_driver_raw,
    &fq_driver_luks,
    &fq_driver_file,
    &fq_driver_null,
    &fq_driver_blkdebug,
#ifdef FQ_HAVE_LIBNBD
    &fq_driver_nbd,
#endif
    NULL,
};
