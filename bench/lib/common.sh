# shellcheck shell=bash
# bench/lib/common.sh: helpers shared by bench/seed-table, bench/random-table,
# bench/feature-table and bench/workers-sweep. Sourced, not run. Every timed
# run appends one line to $RAW (CSV, header in raw_header) so that
# bench/lib/table.py can take medians afterwards:
#   table,row,mode,tool,run,seconds,user_s,sys_s,rss_kb,ops
# seconds is what the tool itself reports for the I/O phase ("Run completed
# in X seconds." for fastqcow/qemu-img bench, the job runtime for fio);
# user_s/sys_s/rss_kb are the whole process as /usr/bin/time sees it.
# SPDX-License-Identifier: MIT

BENCH_LIB=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_LIB/../.." && pwd)

die() { echo "${0##*/}: $*" >&2; exit 1; }
note() { echo "${0##*/}: $*" >&2; }

# Check that every tool the benchmarks call is there.
need_tools() {
    local t
    for t in "$@"; do
        case "$t" in
            /*|./*|*/*) [ -x "$t" ] || die "$t not found or not executable (build first: scripts/build.sh)" ;;
            *) command -v "$t" >/dev/null || die "$t not installed (scripts/setup.sh installs it)" ;;
        esac
    done
    [ -x /usr/bin/time ] || die "/usr/bin/time not installed (apt-get install time)"
}

# Bytes from a size with an optional K/M/G/T suffix (binary units).
to_bytes() {
    local s=${1^^} n m=1
    s=${s%IB}; s=${s%B}
    case "$s" in
        *K) m=$((1 << 10)); n=${s%K} ;;
        *M) m=$((1 << 20)); n=${s%M} ;;
        *G) m=$((1 << 30)); n=${s%G} ;;
        *T) m=$((1 << 40)); n=${s%T} ;;
        *) n=$s ;;
    esac
    [[ "$n" =~ ^[0-9]+$ ]] || die "bad size: $1"
    echo $((n * m))
}

# A scratch directory on the filesystem of the repo, never on tmpfs: the
# benchmarks use O_DIRECT, which tmpfs does not take, and a RAM-backed file
# would measure memory, not the disk. $TMPDIR (or /tmp) is used when it is
# on the same device as the repo; otherwise bench/out/ in the repo.
scratch_dir() {
    local base=${TMPDIR:-/tmp} fstype
    fstype=$(stat -f -c %T "$base" 2>/dev/null || echo unknown)
    if [ "$fstype" = tmpfs ] || [ "$fstype" = ramfs ] ||
       [ "$(stat -c %d "$base" 2>/dev/null)" != "$(stat -c %d "$REPO")" ]; then
        base=$REPO/bench/out
        mkdir -p "$base"
    fi
    mktemp -d "$base/fastqcow-bench.XXXXXX"
}

# A directory given with --dir must take O_DIRECT (the benchmarks run
# with -t none): probed with a 4 KiB direct write. tmpfs takes it on
# recent kernels, and is then the stand-in for memory-speed storage
# (a very fast NVMe device, where software cost decides); say so.
check_dir_fs() {
    local fstype probe
    fstype=$(stat -f -c %T "$1")
    probe=$(mktemp "$1/.odirect-probe.XXXXXX")
    if ! dd if=/dev/zero of="$probe" bs=4096 count=1 oflag=direct status=none 2>/dev/null; then
        rm -f "$probe"
        die "$1 ($fstype) does not take O_DIRECT, which the benchmarks use (-t none): use --dir elsewhere"
    fi
    rm -f "$probe"
    case "$fstype" in
        tmpfs|ramfs) echo "note: $1 is on $fstype: memory-speed storage, the figures measure software cost, not a disk" >&2 ;;
    esac
}

raw_header() { echo "table,row,mode,tool,run,seconds,user_s,sys_s,rss_kb,ops"; }

# timed_bench TABLE ROW MODE TOOL RUN OPS -- CMD...
# Runs a fastqcow or qemu-img bench command line under /usr/bin/time and
# appends its line to $RAW. A failed run is reported and recorded as NA.
timed_bench() {
    local table=$1 row=$2 mode=$3 tool=$4 run=$5 ops=$6
    [ "$7" = -- ] || die "timed_bench: -- expected"
    shift 7
    local out="$WORK/last.out" tf="$WORK/last.time" secs u s m
    if ! /usr/bin/time -o "$tf" -f '%U %S %M' "$@" >"$out" 2>&1; then
        note "FAILED ($tool $row $mode run $run): $*"
        sed 's/^/    /' "$out" >&2
        echo "$table,$row,$mode,$tool,$run,NA,NA,NA,NA,$ops" >>"$RAW"
        return 0
    fi
    secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p' "$out")
    read -r u s m < <(tail -n 1 "$tf")
    echo "$table,$row,$mode,$tool,$run,${secs:-NA},$u,$s,$m,$ops" >>"$RAW"
    [ -n "$VERBOSE" ] && echo "  $tool $row $mode run $run: ${secs:-NA} s (cpu $u+$s s, rss $m KB)" >&2
    return 0
}

# timed_fio TABLE ROW MODE TOOL RUN OPS -- FIO-ARGS...
# Runs fio with JSON output; seconds = job runtime, ops = I/Os completed.
timed_fio() {
    local table=$1 row=$2 mode=$3 tool=$4 run=$5
    [ "$6" = -- ] || die "timed_fio: -- expected"
    shift 6
    local js="$WORK/last.json" tf="$WORK/last.time" line u s m
    if ! /usr/bin/time -o "$tf" -f '%U %S %M' fio --output-format=json --output="$js" "$@" >/dev/null 2>"$WORK/last.err"; then
        note "FAILED (fio $row $mode run $run): fio $*"
        sed 's/^/    /' "$WORK/last.err" >&2
        echo "$table,$row,$mode,$tool,$run,NA,NA,NA,NA,NA" >>"$RAW"
        return 0
    fi
    line=$(python3 - "$js" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] else j["write"]
secs = d["runtime"] / 1000.0            # ms -> s
print("%.3f %d" % (secs, d["total_ios"]))
PY
)
    read -r u s m < <(tail -n 1 "$tf")
    set -- $line
    echo "$table,$row,$mode,$tool,$run,$1,$u,$s,$m,$2" >>"$RAW"
    [ -n "$VERBOSE" ] && echo "  $tool $row $mode run $run: $1 s, $2 I/Os" >&2
    return 0
}

# A raw file of BYTES for fio, fully written (reads of unwritten extents
# would not touch the disk), reused when it already has the size.
make_raw() {
    local f=$1 bytes=$2
    if [ -f "$f" ] && [ "$(stat -c %s "$f")" = "$bytes" ]; then
        return 0
    fi
    rm -f "$f"
    dd if=/dev/zero of="$f" bs=1M count=$((bytes >> 20)) oflag=direct status=none
    sync "$f"
}

# rotate N ITEMS...: the items rotated left by N (interleave fairly: the
# tool that runs first after a change of row is not always the same one).
rotate() {
    local n=$1; shift
    local a=("$@")
    local k=${#a[@]} i
    for ((i = 0; i < k; i++)); do echo "${a[$(((i + n) % k))]}"; done
}

# steady_memory: keep the guest's free memory backed for the whole run.
# In a VM with free page reporting (virtio-balloon), the pages a run frees
# (a 1 GiB output deleted, a cache dropped) are handed back to the host
# within seconds, and the next process to allocate them pays the host's
# page faults on first touch: writing a 1 GiB tmpfs file then takes
# 0.9-3.6 s of system time instead of 0.8-1.0, whichever tool runs. The
# tables would measure which tool the host made wait. When
# /sys/module/page_reporting/parameters/page_reporting_order is writable
# (root), it is raised above the largest page order for the run (nothing
# is reported) and put back when the script exits, however it exits (a
# watcher process waits for it). Pages reported before that are touched
# once (BYTES, default 4 GiB, written to a tmpfs file and deleted, at
# most half the free memory), so that the first runs do not pay for them
# either. Prints what it did, for the header.
steady_memory() {
    local p=/sys/module/page_reporting/parameters/page_reporting_order old
    local bytes=${1:-$((4 << 30))} free
    [ -n "${FQ_BENCH_KEEP_REPORTING:-}" ] && { echo "free page reporting left as is"; return 0; }
    old=$(cat "$p" 2>/dev/null) || { echo "no free page reporting"; return 0; }
    if [ "$old" -gt 10 ] 2>/dev/null; then echo "free page reporting already off"; return 0; fi
    if ! (echo 11 >"$p") 2>/dev/null && ! (echo 10 >"$p") 2>/dev/null; then
        echo "free page reporting on (order $old; not writable here)"
        return 0
    fi
    local me=$$
    # the watcher ignores the signals that end the script, holds none of
    # its output, and restores the setting once the script is gone
    (trap '' INT TERM HUP
     while kill -0 "$me" 2>/dev/null; do sleep 1; done
     echo "$old" >"$p") </dev/null >/dev/null 2>&1 &
    disown $! 2>/dev/null || true
    free=$(awk '/^MemAvailable:/ { printf "%.0f", $2 * 1024 }' /proc/meminfo)
    ((bytes > free / 2)) && bytes=$((free / 2))
    if [ -d /dev/shm ] && ((bytes >= 1 << 20)); then
        local f
        f=$(mktemp /dev/shm/fastqcow-touch.XXXXXX)
        dd if=/dev/zero of="$f" bs=1M count=$((bytes >> 20)) status=none 2>/dev/null || true
        rm -f "$f"
    fi
    echo "free page reporting off for the run (order $old -> $(cat "$p"), $((bytes >> 20)) MiB touched)"
}
