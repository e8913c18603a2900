/* lock.h: image locking of the file driver (lock.c).
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_FILE_LOCK_H
#define FQ_FILE_LOCK_H

#include <stdbool.h>

/* The permissions an open of an image uses or denies others, one bit
 * each (the byte of bit b is LOCK_PERM_BASE + b and LOCK_SHARED_BASE + b). */
enum {
    PERM_CONSISTENT_READ = 1u << 0,
    PERM_WRITE = 1u << 1,
    PERM_WRITE_UNCHANGED = 1u << 2,
    PERM_RESIZE = 1u << 3,
};

/* A second open file description of the file open as `fd`, used for the
 * locks alone, so that they go the moment the process does (see lock.c).
 * Returns the new descriptor, or `fd` itself when none can be made (no
 * /proc): the locks then share the I/O descriptor. */
int file_lock_fd(int fd);

/* Lock the file open as `fd` (named `name` in messages) for an open with
 * FQ_FILE_* `flags`. Returns 1 when locked, 0 when the file system has no
 * such locks (said once per process on stderr; the open goes on without
 * one), or -EAGAIN with a message in `err` when another open of the file
 * (in any process) holds it in a conflicting way; nothing stays locked
 * then. Closing `fd` releases the locks. */
int file_lock(int fd, unsigned flags, const char *name, char *err);

#endif
