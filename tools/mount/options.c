/* options.c: the command lines of `fastqcow mount` and `fastqcow umount`,
 * the checks made on FILE before anything is mounted, and going to the
 * background.
 *
 * mount checks what it can before it forks (so its messages reach the
 * terminal): FILE a regular file or absent (then created, and removed
 * again at the end), not already a mount point, /dev/fuse present. The
 * child then opens the image and mounts; the parent exits 0 once the file
 * is served, or with the child's exit code and message when that failed.
 *
 * umount asks the server its process id (an ioctl on the file), unmounts,
 * then waits until that process has exited, that is until the image is
 * flushed and closed: a script can use the image right after.
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mount.h"
#include "../common/cli.h"
#include "../subcommands.h"

static void mount_usage(FILE *f)
{
    fprintf(f,
"usage: fastqcow mount [options] IMAGE FILE\n"
"\n"
"Serve the guest view of IMAGE as the regular file FILE (FUSE) until FILE is\n"
"unmounted (fastqcow umount FILE, fusermount3 -u FILE) or the server gets\n"
"SIGTERM; then the image is flushed and closed. FILE must be a regular file;\n"
"if it does not exist it is created, and removed at the end.\n"
"\n"
"  -f, --format FMT      image format (qcow2, raw; default: probe)\n"
"  -r, --read-only       serve read-only (writes fail with EROFS)\n"
"  -t, --cache MODE      none, writeback (default), writethrough, directsync,\n"
"                        unsafe\n"
"  -i, --aio ENGINE      io_uring (default), threads, sync\n"
"      --image-opts      IMAGE is qemu's option syntax: driver=FMT,\n"
"                        file.filename=PATH[,cache.direct=on|off]\n"
"                        [,cache.no-flush=on|off][,file.aio=ENGINE]\n"
"                        [,read-only=on|off][,l2-cache-size=SIZE]...\n"
"      --growable        writes past the end and truncate resize the image\n"
"                        (without it the size is fixed: truncate fails with\n"
"                        EPERM, writes past the end with EFBIG)\n"
"      --allow-other     let other users access FILE (FUSE allow_other)\n"
"      --direct-io       bypass the kernel's page cache for every open\n"
"                        (O_DIRECT opens bypass it anyway)\n"
"      --foreground      do not go to the background\n"
"      --pid-file PATH   write the server's process id to PATH\n"
"  -h, --help            this help\n");
}

int mount_find(const char *path, char *type, size_t typelen, char *dev, size_t devlen)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char *line = NULL;
    size_t cap = 0;
    int found = 0;

    if (!f)
        return -errno;
    while (getline(&line, &cap, f) > 0) {
        char mp[4096], fstype[256], majmin[64];
        /* id parent maj:min root mountpoint options ... - type source ... */
        if (sscanf(line, "%*s %*s %63s %*s %4095s", majmin, mp) != 2)
            continue;
        char *dash = strstr(line, " - ");
        if (!dash || sscanf(dash + 3, "%255s", fstype) != 1)
            continue;
        char *w = mp;
        for (const char *p = mp; *p; p++) {
            if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
                p[3] >= '0' && p[3] <= '7') {
                *w++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
                p += 3;
            } else {
                *w++ = *p;
            }
        }
        *w = 0;
        if (!strcmp(mp, path)) {
            /* the last one is on top */
            found = 1;
            if (type)
                snprintf(type, typelen, "%s", fstype);
            if (dev)
                snprintf(dev, devlen, "%s", majmin);
        }
    }
    free(line);
    fclose(f);
    return found;
}

/* The absolute path of FILE, resolving its directory only (FILE itself
 * may not exist yet, or be a dead mount). NULL with errno on failure. */
static char *abs_path(const char *file)
{
    char *dup = strdup(file), *dir, *base, *res = NULL;

    if (!dup)
        return NULL;
    char *slash = strrchr(dup, '/');
    if (slash == dup) {
        dir = "/";
        base = dup + 1;
    } else if (slash) {
        *slash = 0;
        dir = dup;
        base = slash + 1;
    } else {
        dir = ".";
        base = dup;
    }
    char *rdir = realpath(dir, NULL);
    if (rdir && *base && strcmp(base, ".") && strcmp(base, "..") &&
        asprintf(&res, "%s/%s", strcmp(rdir, "/") ? rdir : "", base) < 0)
        res = NULL;
    else if (rdir && (!*base || !strcmp(base, ".") || !strcmp(base, "..")))
        errno = EISDIR;
    free(rdir);
    free(dup);
    return res;
}

/* The checks on FILE and on FUSE before forking; creates FILE if absent
 * (*created). Returns 0 or prints a message and returns -1. */
static int check_file(const char *file, bool *created)
{
    char *path = abs_path(file);
    char type[256];
    struct stat st;
    int r = -1;

    *created = false;
    if (!path) {
        if (errno == ENOENT || errno == ENOTDIR)
            tool_error("Could not create '%s': %s", file, strerror(errno));
        else
            tool_error("%s: %s", file, strerror(errno));
        return -1;
    }
    int mp = mount_find(path, type, sizeof(type), NULL, 0);
    if (mp > 0) {
        tool_error("%s is already a mount point (%s); unmount it first", file, type);
        goto out;
    }
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            tool_error("%s is a directory; the mount point must be a regular file", file);
            goto out;
        }
        if (!S_ISREG(st.st_mode)) {
            tool_error("%s is not a regular file", file);
            goto out;
        }
    } else if (errno == ENOENT) {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            tool_error("Could not create '%s': %s", file, strerror(errno));
            goto out;
        }
        close(fd);
        *created = true;
    } else {
        tool_error("%s: %s", file, strerror(errno));
        goto out;
    }
    if (stat("/dev/fuse", &st) < 0) {
        tool_error("FUSE is not available: /dev/fuse: %s", strerror(errno));
        goto fail;
    }
    if (!S_ISCHR(st.st_mode)) {
        tool_error("FUSE is not available: /dev/fuse is not a character device");
        goto fail;
    }
    if (geteuid() == 0) {
        int fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            tool_error("FUSE is not available: /dev/fuse: %s", strerror(errno));
            goto fail;
        }
        close(fd);
    }
    r = 0;
    goto out;
fail:
    if (*created)
        unlink(path);
    *created = false;
out:
    free(path);
    return r;
}

struct bg {
    int fd;                    /* the pipe to the waiting parent */
    const char *pid_file;
};

/* The file is served (code 0) or serving failed: tell the parent; once
 * served, leave the terminal. */
static void ready(void *opaque, int code)
{
    struct bg *b = opaque;

    if (code == 0 && b->pid_file) {
        FILE *f = fopen(b->pid_file, "we");
        if (f) {
            fprintf(f, "%d\n", (int)getpid());
            fclose(f);
        } else {
            tool_error("%s: %s", b->pid_file, strerror(errno));
        }
    }
    if (b->fd < 0)
        return;
    if (write(b->fd, &code, sizeof(code)) != (ssize_t)sizeof(code)) {
        /* the parent is gone: nothing to tell */
    }
    close(b->fd);
    b->fd = -1;
    if (code == 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
            if (null > 2)
                close(null);
        }
        if (chdir("/") < 0) {
            /* stays where it was */
        }
    }
}

/* Fork; the parent waits for the child's verdict and returns it. The
 * child returns -1 and serves. */
static int go_background(struct bg *b)
{
    int p[2];

    if (pipe2(p, O_CLOEXEC) < 0) {
        tool_error("pipe: %s", strerror(errno));
        return 1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        tool_error("fork: %s", strerror(errno));
        return 1;
    }
    if (pid == 0) {
        close(p[0]);
        b->fd = p[1];
        setsid();
        return -1;
    }
    close(p[1]);
    int code = 1;
    ssize_t n;
    do {
        n = read(p[0], &code, sizeof(code));
    } while (n < 0 && errno == EINTR);
    close(p[0]);
    if (n != (ssize_t)sizeof(code)) {
        tool_error("the server exited before the file was served");
        code = 1;
    }
    if (code != 0)
        waitpid(pid, NULL, 0);
    return code;
}

/* Check the files of `o` and mount its image (in the background unless
 * --foreground); returns the exit code. */
static int mount_image(struct mount_opts *o)
{
    o->open.readonly = o->readonly;
    if (o->growable && o->readonly) {
        tool_error("--growable and --read-only exclude each other");
        return 1;
    }
    if (check_file(o->file, &o->created) < 0)
        return 1;
    struct bg b = { .fd = -1, .pid_file = o->pid_file };
    if (!o->foreground) {
        int code = go_background(&b);
        if (code >= 0)
            return code;
    }
    int code = mount_serve(o, ready, &b);
    if (o->pid_file && code == 0)
        unlink(o->pid_file);
    return code;
}

int cmd_mount(int argc, char **argv)
{
    enum { O_GROWABLE = 256, O_ALLOW_OTHER, O_FOREGROUND, O_PID_FILE, O_DIRECT_IO,
           O_IMAGE_OPTS };
    static const struct option lopts[] = {
        { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },
        { "cache", required_argument, NULL, 't' },
        { "aio", required_argument, NULL, 'i' },
        { "growable", no_argument, NULL, O_GROWABLE },
        { "allow-other", no_argument, NULL, O_ALLOW_OTHER },
        { "foreground", no_argument, NULL, O_FOREGROUND },
        { "pid-file", required_argument, NULL, O_PID_FILE },
        { "direct-io", no_argument, NULL, O_DIRECT_IO },
        { "image-opts", no_argument, NULL, O_IMAGE_OPTS },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct mount_opts o;
    bool image_opts = false;
    int c;

    memset(&o, 0, sizeof(o));
    tool_open_opts_init(&o.open);
    optind = 1;
    while ((c = getopt_long(argc, argv, "f:rt:i:h", lopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            o.open.format = optarg;
            break;
        case 'r':
            o.readonly = true;
            break;
        case 't':
            if (tool_parse_cache(optarg, &o.open.cache, "cache") < 0)
                return 1;
            break;
        case 'i':
            if (tool_parse_engine(optarg, &o.open.engine) < 0)
                return 1;
            break;
        case O_GROWABLE:
            o.growable = true;
            break;
        case O_ALLOW_OTHER:
            o.allow_other = true;
            break;
        case O_FOREGROUND:
            o.foreground = true;
            break;
        case O_PID_FILE:
            o.pid_file = optarg;
            break;
        case O_DIRECT_IO:
            o.direct_io = true;
            break;
        case O_IMAGE_OPTS:
            image_opts = true;
            break;
        case 'h':
            mount_usage(stdout);
            return 0;
        default:
            mount_usage(stderr);
            return 1;
        }
    }
    if (argc - optind != 2) {
        tool_error("mount needs IMAGE and FILE");
        mount_usage(stderr);
        return 1;
    }
    o.image = argv[optind];
    o.file = argv[optind + 1];
    fq_blockopts_init(&o.spec);
    if (image_opts) {
        /* o.spec holds the strings o.open points to: freed at the end */
        char err[FQ_ERR_MAX];
        if (tool_blockopts_parse(o.image, &o.spec, err) < 0 ||
            fq_blockopts_apply(&o.spec, &o.open, err) < 0) {
            tool_error("Could not open '%s': %s", o.image, err);
            fq_blockopts_free(&o.spec);
            return 1;
        }
        o.image = o.spec.filename;
        o.open.spec = &o.spec;   /* its protocol's options (read at open) */
        o.image_opts = true;
        o.readonly = o.readonly || o.open.readonly;
    }
    int code = mount_image(&o);
    fq_blockopts_free(&o.spec);
    return code;
}

static void umount_usage(FILE *f)
{
    fprintf(f,
"usage: fastqcow umount FILE\n"
"\n"
"Unmount a file served by fastqcow mount and wait until its server has\n"
"flushed and closed the image.\n"
"\n"
"  -h, --help  this help\n");
}

/* Run fusermount3 -u on path (unprivileged unmount). */
static int fusermount_u(const char *path)
{
    pid_t pid = fork();
    int st;

    if (pid < 0)
        return -errno;
    if (pid == 0) {
        execlp("fusermount3", "fusermount3", "-u", "--", path, (char *)NULL);
        _exit(127);
    }
    if (waitpid(pid, &st, 0) < 0)
        return -errno;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127)
        return -ENOENT;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EBUSY;
}

/* Wait until the server has exited: through its pidfd (opened before the
 * unmount, so that the pid cannot be reused meanwhile), else by polling. */
static void wait_exit(int pfd, pid_t pid)
{
    if (pfd >= 0) {
        struct pollfd p = { .fd = pfd, .events = POLLIN };
        while (poll(&p, 1, -1) < 0 && errno == EINTR)
            ;
        close(pfd);
        return;
    }
    while (pid > 0 && (kill(pid, 0) == 0 || errno == EPERM))
        usleep(10000);
}

int cmd_umount(int argc, char **argv)
{
    static const struct option lopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    char type[256];
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", lopts, NULL)) != -1) {
        if (c == 'h') {
            umount_usage(stdout);
            return 0;
        }
        umount_usage(stderr);
        return 1;
    }
    if (argc - optind != 1) {
        umount_usage(stderr);
        return 1;
    }
    const char *file = argv[optind];
    /* a dead mount cannot be resolved itself: then only its directory */
    char *path = realpath(file, NULL);
    if (!path)
        path = abs_path(file);
    if (!path) {
        tool_error("%s: %s", file, strerror(errno));
        return 1;
    }
    int mp = mount_find(path, type, sizeof(type), NULL, 0);
    if (mp <= 0 || strcmp(type, "fuse.fastqcow")) {
        if (mp < 0)
            tool_error("/proc/self/mountinfo: %s", strerror(-mp));
        else if (mp == 0)
            tool_error("%s is not mounted", file);
        else
            tool_error("%s is not served by fastqcow mount (%s)", file, type);
        free(path);
        return 1;
    }
    /* The server's pid; a server that is gone (ENOTCONN) leaves a mount
     * to remove and nothing to wait for. */
    pid_t pid = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        uint64_t v = 0;
        if (ioctl(fd, FQ_MOUNT_IOC_PID, &v) == 0 && v > 0 && v < INT32_MAX)
            pid = (pid_t)v;
        close(fd);
    }
    int pfd = -1;
#ifdef SYS_pidfd_open
    if (pid > 0)
        pfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    int r = 0;
    if (geteuid() == 0) {
        if (umount2(path, 0) < 0)
            r = -errno;
    } else {
        r = fusermount_u(path);
    }
    if (r < 0) {
        tool_error("Could not unmount '%s': %s", file, strerror(-r));
        if (pfd >= 0)
            close(pfd);
        free(path);
        return 1;
    }
    wait_exit(pfd, pid);
    free(path);
    return 0;
}
