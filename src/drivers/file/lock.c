/* lock.c: image locking, so that two programs never write one image at
 * once (a running VM and a tool, or two tools), in the byte-range locks
 * that QEMU's programs take on image files, so that they and fastqcow see
 * each other.
 *
 * An open of an image uses some permissions (consistent read, write,
 * write unchanged, resize) and denies others some of them. It holds a
 * shared (read) open-file-description lock on byte 100 + p for each
 * permission p it uses, and on byte 200 + p for each permission it does
 * not share. It may open when no other open description holds byte 200 + p
 * for a permission p it uses ("Failed to get "write" lock"), nor byte
 * 100 + p for one it does not share ("Failed to get shared "write" lock").
 * Every byte is a shared lock, so the bytes are taken first and the
 * conflicts tested after (a test for a write lock on a byte sees only
 * other descriptions' locks); two opens racing may both refuse, never
 * both succeed in a conflicting way.
 *
 *   read-write open:       uses consistent read, write, resize; shares
 *                          consistent read and write unchanged
 *   read-only open (also   uses consistent read; shares all but write and
 *   every backing file):   resize (the image must not change under it)
 *   read-only, force share uses consistent read; shares everything
 *   creating an image:     uses write and resize; shares all but resize
 *
 * These are open-file-description locks: they belong to the descriptor
 * (not to the process, so a second open in one process conflicts like
 * another process), go with its close, and with the process when it dies
 * however it dies. They are held on a description of their own
 * (file_lock_fd), not on the one the I/O goes through: the I/O engine may
 * keep that one a moment longer than the process (io_uring drops its
 * registered files when it tears the ring down, after the process is
 * gone), and a program started right after a killed one must find the
 * image free, as it finds it after a killed qemu-io. A file system
 * without them (F_OFD_SETLK fails with EINVAL, ENOLCK or EOPNOTSUPP) is
 * said once, and the image opened without a lock.
 * SPDX-License-Identifier: MIT
 */
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "driver.h"
#include "lock.h"
#include "util.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200
#define LOCK_NPERMS 4

static const char *const perm_names[LOCK_NPERMS] = {
    "consistent read", "write", "write unchanged", "resize",
};

/* Lock (F_RDLCK) or unlock (F_UNLCK) one byte. Returns 0 or -errno. */
static int lock_byte(int fd, short type, int byte)
{
    struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };

    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Whether another open file description holds a lock on `byte`.
 * Returns 1, 0 or -errno. */
static int byte_held(int fd, int byte)
{
    struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = byte, .l_len = 1 };

    if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
        return -errno;
    return fl.l_type != F_UNLCK;
}

static void unlock_all(int fd)
{
    for (int b = 0; b < LOCK_NPERMS; b++) {
        (void)lock_byte(fd, F_UNLCK, LOCK_PERM_BASE + b);
        (void)lock_byte(fd, F_UNLCK, LOCK_SHARED_BASE + b);
    }
}

/* Whether an error of F_OFD_SETLK / F_OFD_GETLK says that the file
 * system (or the kernel) has no such locks. */
static bool unsupported(int r)
{
    return r == -EINVAL || r == -ENOLCK || r == -EOPNOTSUPP || r == -ENOSYS;
}

/* Say once per process that images are opened without a lock. */
static void note_unsupported(const char *name, int r)
{
    static atomic_bool said;

    if (!atomic_exchange(&said, true))
        fprintf(stderr, "fastqcow: warning: '%s': the file system has no open file description "
                "locks (%s); images are opened without a lock, so another program may open "
                "them at the same time\n", name, strerror(-r));
}

int file_lock_fd(int fd)
{
    struct stat a, b;
    char path[48];
    int l;

    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    l = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (l < 0)
        return fd;
    if (fstat(l, &a) < 0 || fstat(fd, &b) < 0 || a.st_dev != b.st_dev || a.st_ino != b.st_ino ||
        a.st_rdev != b.st_rdev) {
        close(l);   /* not the same file after all */
        return fd;
    }
    return l;
}

int file_lock(int fd, unsigned flags, const char *name, char *err)
{
    bool create = flags & FQ_FILE_CREATE;
    unsigned perm, unshared;
    int r = 0;

    if (create) {
        perm = PERM_WRITE | PERM_RESIZE;
        unshared = PERM_RESIZE;
    } else if (!(flags & FQ_FILE_RDONLY)) {
        perm = PERM_CONSISTENT_READ | PERM_WRITE | PERM_RESIZE;
        unshared = PERM_WRITE | PERM_RESIZE;
    } else {
        perm = PERM_CONSISTENT_READ;
        unshared = (flags & FQ_FILE_SHARE) ? 0 : PERM_WRITE | PERM_RESIZE;
    }
    for (int b = 0; b < LOCK_NPERMS * 2 && r == 0; b++) {
        int byte = b < LOCK_NPERMS ? LOCK_PERM_BASE + b : LOCK_SHARED_BASE + b - LOCK_NPERMS;
        if (!((b < LOCK_NPERMS ? perm : unshared) & (1u << (b % LOCK_NPERMS))))
            continue;
        r = lock_byte(fd, F_RDLCK, byte);
        if (r == -EAGAIN || r == -EACCES) {
            /* someone holds an exclusive lock there */
            fq_seterr(err, "%s%s%sFailed to lock byte %d\n"
                      "Is another process using the image [%s]?", create ? "" : "Could not open '",
                      create ? "" : name, create ? "" : "': ", byte, name);
            r = -EAGAIN;
        }
    }
    /* what we use, against what others deny; then what we deny, against
     * what others use */
    for (int pass = 0; pass < 2 && r == 0; pass++)
        for (int b = 0; b < LOCK_NPERMS && r == 0; b++) {
            if (!((pass ? unshared : perm) & (1u << b)))
                continue;
            r = byte_held(fd, (pass ? LOCK_PERM_BASE : LOCK_SHARED_BASE) + b);
            if (r == 1) {
                /* creating: the caller names the file, as qemu-img does */
                fq_seterr(err, "%s%s%sFailed to get %s\"%s\" lock\n"
                          "Is another process using the image [%s]?",
                          create ? "" : "Could not open '", create ? "" : name,
                          create ? "" : "': ", pass ? "shared " : "", perm_names[b], name);
                r = -EAGAIN;
            }
        }
    if (r == 0)
        return 1;
    unlock_all(fd);
    if (unsupported(r)) {
        note_unsupported(name, r);
        return 0;
    }
    if (r != -EAGAIN)
        fq_seterr(err, "Could not lock '%s': %s", name, strerror(-r));
    return r;
}
