# serve-lib.sh: what the tests of `fastqcow serve` share (sourced, not a
# test): a scratch directory, servers (fastqcow serve and qemu-nbd) started
# on Unix sockets and always stopped when the test exits, NBD URIs, and a
# Python that has libnbd's bindings.
# SPDX-License-Identifier: MIT
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/${0##*/}.XXXXXX") || exit 1
SERVER_PIDS=()
fail=0

# Stop every server still running, then remove the scratch directory.
serve_cleanup() {
    local p
    for p in "${SERVER_PIDS[@]}"; do
        kill "$p" 2>/dev/null
    done
    for p in "${SERVER_PIDS[@]}"; do
        wait_gone "$p" || kill -9 "$p" 2>/dev/null
    done
    rm -rf "$T"
}
trap serve_cleanup EXIT

bad() { echo "FAIL: $*"; fail=1; }

# gone PID: the process ended (a zombie counts: forked servers are not
# our children, and whoever inherits them may reap them late).
gone() {
    local st
    st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 0
    [ "${st%% *}" = Z ]
}

# wait_gone PID: wait (up to 10 s) until the process ends.
wait_gone() {
    local i
    for i in $(seq 1 500); do
        gone "$1" && return 0
        sleep 0.02
    done
    return 1
}

# uri NAME: the URI of the server NAME listens as.
uri() { echo "nbd+unix:///${2:-}?socket=$T/$1.sock"; }

# start_fq NAME ARGS...: fastqcow serve on $T/NAME.sock (forks once it
# listens; its pid file says so).
start_fq() {
    local n=$1
    shift
    rm -f "$T/$n.pid" "$T/$n.sock"
    "$FASTQCOW" serve --fork --pid-file "$T/$n.pid" -k "$T/$n.sock" "$@" || return 1
    SERVER_PIDS+=("$(cat "$T/$n.pid")")
}

# start_qemu NAME ARGS...: qemu-nbd the same way.
start_qemu() {
    local n=$1
    shift
    rm -f "$T/$n.pid" "$T/$n.sock"
    qemu-nbd --fork --pid-file "$T/$n.pid" -k "$T/$n.sock" "$@" || return 1
    SERVER_PIDS+=("$(cat "$T/$n.pid")")
}

# stop NAME: SIGTERM the server NAME and wait for it to end.
stop() {
    local p
    p=$(cat "$T/$1.pid" 2>/dev/null) || return 0
    kill "$p" 2>/dev/null
    wait_gone "$p" || { bad "server $1 did not stop"; kill -9 "$p"; }
}

# A Python 3 that can import libnbd's bindings (nbd), or "".
NBDPY=
for py in /usr/bin/python3 python3; do
    if "$py" -c 'import nbd' 2>/dev/null; then
        NBDPY=$py
        break
    fi
done
