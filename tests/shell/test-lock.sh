#!/bin/bash
# test-lock.sh: image locking against real processes, both ways.
#  - qemu-io holding an image (read-write, interactive, as a running VM)
#    refuses fastqcow io / convert / resize / snapshot / commit / amend /
#    check -r / create with qemu-img's message, and the image is left
#    untouched; -U reads it;
#  - fastqcow holding an image (a long `io` session reading commands from
#    a fifo) holds the same lock bytes as qemu-io in the same mode
#    (/proc/locks), and qemu-io, qemu-img and a second fastqcow are refused
#    as they refuse each other;
#  - read-only opens share with each other, -U is for reads only, the
#    backing file of an open overlay is locked as a reader locks it;
#  - the locks are gone after close, after kill -9 and after a failed open;
#  - where the file system has no such locks (simulated with an
#    LD_PRELOAD shim when a C compiler is at hand) fastqcow says so once
#    and goes on.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
[ -r /proc/locks ] || { echo "SKIP: no /proc/locks"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/lock.XXXXXX") || exit 1
HOLD_PID=
cleanup() {
    exec 8>&- 2>/dev/null
    [ -n "$HOLD_PID" ] && kill -9 "$HOLD_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$T"
}
trap cleanup EXIT
cd "$T" || exit 1
F=$FASTQCOW
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# hold CMD...: run CMD with its stdin on a fifo, kept open until unhold
hold() {
    rm -f fifo && mkfifo fifo
    "$@" <fifo >hold.out 2>&1 &
    HOLD_PID=$!
    exec 8>fifo
    # wait until it holds a lock on the image (its last argument)
    local img=${!#} i
    for i in $(seq 100); do
        [ -n "$(lockbytes "$img")" ] && return 0
        kill -0 "$HOLD_PID" 2>/dev/null || break
        sleep 0.05
    done
    bad "hold $*: no lock taken"; cat hold.out
}
unhold() {
    exec 8>&-
    wait "$HOLD_PID" 2>/dev/null
    HOLD_PID=
}

# lockbytes FILE: the bytes locked on FILE by anyone, sorted, one line
lockbytes() {
    local ino
    ino=$(stat -c %i "$1") || return
    awk -v ino="$ino" '$2 == "OFDLCK" { split($6, d, ":"); if (d[3] == ino) for (b = $7; b <= $8; b++) print b }' \
        /proc/locks | sort -n | uniq | tr '\n' ' '
}

# refused EXPECTED-PHRASE CMD...: CMD fails and says EXPECTED-PHRASE and
# qemu's "Is another process using the image" line
refused() {
    local want=$1
    shift
    "$@" >out 2>err </dev/null && { bad "$* succeeded beside a holder"; return; }
    grep -qF "$want" err || { bad "$*: no '$want' in:"; cat err; }
    grep -q "Is another process using the image \[" err || { bad "$*: no 'Is another process using the image'"; cat err; }
}
works() {
    "$@" >out 2>err </dev/null || { bad "$* failed:"; cat err; }
}

qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 0x22 1M 64k' top.qcow2 >/dev/null
cp base.qcow2 img.qcow2

# ---- 1. qemu-io holds img.qcow2 read-write ----
hold qemu-io img.qcow2
qemu_rw=$(lockbytes img.qcow2)
sum=$(md5sum <img.qcow2)
refused 'Failed to get "write" lock' "$F" io -c 'write 0 512' img.qcow2
refused 'Failed to get shared "write" lock' "$F" io -r -c 'read 0 512' img.qcow2
works "$F" io -r -U -c 'read -P 0x11 0 64k' img.qcow2
refused 'Failed to get shared "write" lock' "$F" info img.qcow2
works "$F" info -U img.qcow2
refused 'Failed to get shared "write" lock' "$F" check img.qcow2
works "$F" check -U img.qcow2
refused 'Failed to get "write" lock' "$F" check -r all img.qcow2
refused 'Failed to get shared "write" lock' "$F" convert -O raw img.qcow2 conv.raw
works "$F" convert -U -O raw img.qcow2 conv.raw
refused 'Failed to get "write" lock' "$F" convert -O qcow2 base.qcow2 img.qcow2
refused 'Failed to get "write" lock' "$F" resize img.qcow2 8M
refused 'Failed to get "write" lock' "$F" snapshot -c s1 img.qcow2
refused 'Failed to get shared "write" lock' "$F" snapshot -l img.qcow2
works "$F" snapshot -U -l img.qcow2
refused 'Failed to get "write" lock' "$F" amend -o lazy_refcounts=on img.qcow2
refused 'Failed to get "write" lock' "$F" create -f qcow2 img.qcow2 1M
refused 'Failed to get shared "write" lock' "$F" map img.qcow2
refused 'Failed to get shared "write" lock' "$F" compare img.qcow2 base.qcow2
refused 'Failed to get "write" lock' "$F" bench -w -c 1 img.qcow2
# -U is for reads only
"$F" io -U -c 'read 0 512' img.qcow2 >out 2>err && bad "io -U read-write opened"
grep -q "force-share=on can only be used with read-only images" err || { bad "io -U: message"; cat err; }
"$F" check -U -r all img.qcow2 >out 2>err && bad "check -U -r all opened"
grep -q "force-share=on can only be used with read-only images" err || { bad "check -U -r: message"; cat err; }
[ "$(md5sum <img.qcow2)" = "$sum" ] || bad "an operation refused beside qemu-io changed the image"
unhold
qemu-img check -q img.qcow2 || bad "img.qcow2 does not check clean after the refusals"

# commit: the overlay held, then its base held
hold qemu-io top.qcow2
refused 'lock' "$F" commit top.qcow2
unhold
hold qemu-io base.qcow2
refused 'lock' "$F" commit top.qcow2
refused 'Failed to get shared "write" lock' "$F" io -c 'read 0 512' top.qcow2
unhold
qemu-io -c 'read -P 0x11 0 1M' -c 'read -P 0x22 1M 64k' top.qcow2 >/dev/null ||
    bad "top.qcow2 changed while its commit was refused"

# ---- 2. fastqcow holds img.qcow2: the same bytes as qemu-io ----
hold "$F" io img.qcow2
[ "$(lockbytes img.qcow2)" = "$qemu_rw" ] ||
    bad "read-write locks: fastqcow holds '$(lockbytes img.qcow2)', qemu-io '$qemu_rw'"
refused 'Failed to get "write" lock' qemu-io -c 'write 0 512' img.qcow2
refused 'Failed to get shared "write" lock' qemu-io -r -c 'read 0 512' img.qcow2
works qemu-io -r -U -c 'read 0 512' img.qcow2
refused 'Failed to get shared "write" lock' qemu-img info img.qcow2
works qemu-img info -U img.qcow2
refused 'Failed to get "write" lock' qemu-img create -f qcow2 img.qcow2 1M
refused 'Failed to get "write" lock' qemu-img check -r all img.qcow2
refused 'Failed to get "write" lock' "$F" io -c 'read 0 512' img.qcow2
echo 'write -P 0x33 0 4k' >&8
echo 'flush' >&8
unhold
qemu-io -c 'read -P 0x33 0 4k' img.qcow2 >/dev/null || bad "the holding io session's write is lost"
grep -q "wrote 4096/4096" hold.out || { bad "the holding io session did not write"; cat hold.out; }

# ---- 3. read-only holders: the same bytes; readers share, writers wait ----
hold qemu-io -r img.qcow2
qemu_ro=$(lockbytes img.qcow2)
works "$F" io -r -c 'read 0 512' img.qcow2
works "$F" info img.qcow2
refused 'Failed to get "write" lock' "$F" io -c 'write 0 512' img.qcow2
unhold
hold "$F" io -r img.qcow2
[ "$(lockbytes img.qcow2)" = "$qemu_ro" ] ||
    bad "read-only locks: fastqcow holds '$(lockbytes img.qcow2)', qemu-io '$qemu_ro'"
works qemu-io -r -c 'read 0 512' img.qcow2
works "$F" io -r -c 'read 0 512' img.qcow2
refused 'Failed to get "write" lock' qemu-io -c 'write 0 512' img.qcow2
unhold
# a forced share holds only what it reads with, and lets writers in
hold qemu-io -r -U img.qcow2
qemu_u=$(lockbytes img.qcow2)
works "$F" io -c 'write -P 0x44 0 512' img.qcow2
unhold
hold "$F" io -r -U img.qcow2
[ "$(lockbytes img.qcow2)" = "$qemu_u" ] ||
    bad "forced-share locks: fastqcow holds '$(lockbytes img.qcow2)', qemu-io '$qemu_u'"
works qemu-io -c 'write -P 0x55 0 512' img.qcow2
unhold

# ---- 4. the backing file of an open overlay is locked as a reader ----
hold qemu-io top.qcow2
for i in $(seq 100); do [ -n "$(lockbytes base.qcow2)" ] && break; sleep 0.05; done
qemu_back=$(lockbytes base.qcow2)
unhold
hold "$F" io top.qcow2
for i in $(seq 100); do [ -n "$(lockbytes base.qcow2)" ] && break; sleep 0.05; done
[ "$(lockbytes base.qcow2)" = "$qemu_back" ] ||
    bad "backing file locks: fastqcow holds '$(lockbytes base.qcow2)', qemu-io '$qemu_back'"
refused 'Failed to get "write" lock' qemu-io -c 'write 0 512' base.qcow2
works qemu-io -r -c 'read -P 0x11 0 64k' base.qcow2
unhold

# ---- 5. the locks go: after close, kill -9, a failed open ----
hold "$F" io img.qcow2
unhold
[ -z "$(lockbytes img.qcow2)" ] || bad "locks left after close: $(lockbytes img.qcow2)"
# the locks go with the process, at once: they are not held on the
# descriptor io_uring registers (its ring is torn down a moment after the
# process is reaped), so a program started right after a killed session
# finds the image free, every time (a script that kills qemu-io and goes
# on relies on it)
for i in $(seq 12); do
    "$F" io -c 'write -P 0x55 0 64k' -c 'aio_write -P 0x56 64k 64k' -c 'sigraise 9' img.qcow2 \
        >/dev/null 2>&1
    [ -z "$(lockbytes img.qcow2)" ] || { bad "locks left after kill -9 ($i): $(lockbytes img.qcow2)"; break; }
    "$F" io -c 'read -P 0x55 0 64k' img.qcow2 >out 2>err ||
        { bad "open right after kill -9 ($i):"; cat err; break; }
done
works qemu-io -c 'write -P 0x66 0 512' img.qcow2
# (a failed open inside a process that goes on: tests/unit/test-lock-api.c)

# ---- 6. no such locks: said once, and the image opens ----
if command -v cc >/dev/null; then
    cat >shim.c <<'EOF'
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
static int fake(int fd, int cmd, void *arg, const char *sym)
{
    if (cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW || cmd == F_OFD_GETLK) {
        errno = ENOLCK;
        return -1;
    }
    int (*real)(int, int, ...) = (int (*)(int, int, ...))dlsym(RTLD_NEXT, sym);
    return real(fd, cmd, arg);
}
int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fake(fd, cmd, arg, "fcntl");
}
int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fake(fd, cmd, arg, "fcntl64");
}
EOF
    if cc -shared -fPIC -o shim.so shim.c -ldl 2>cc.err; then
        # a sanitizer's runtime must come first in the preload list
        pre=$(ldd "$F" 2>/dev/null | awk '/libasan|libubsan/ { printf "%s:", $3 }')
        LD_PRELOAD=$pre$PWD/shim.so "$F" io -c 'read -P 0x22 1M 64k' top.qcow2 >out 2>err ||
            { bad "io without OFD locks failed"; cat err; }
        n=$(grep -c "warning:.*no open file description locks" err)
        [ "$n" = 1 ] || { bad "without OFD locks: $n warnings (one expected)"; cat err; }
        echo "no-lock file systems: simulated"
    else
        echo "no-lock file systems: not simulated (cc failed: $(head -1 cc.err))"
    fi
else
    echo "no-lock file systems: not simulated (no C compiler)"
fi

[ $fail = 0 ] && echo "PASS: image locking beside qemu-io and qemu-img"
exit $fail
