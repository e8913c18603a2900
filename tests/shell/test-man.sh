#!/bin/bash
# test-man.sh: the manual pages cannot drift from the tool. Every subcommand
# `fastqcow --help` lists has a page source (tools/NAME.1.scd, or
# tools/NAME/NAME.1.scd for a subcommand of several files) named in the main
# page, and the options its --help mentions are exactly those the OPTIONS
# section of its page describes (and likewise for `fastqcow --help` and
# fastqcow.1). With scdoc installed, every source renders, and the build
# made the pages `meson install` installs.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
: "${TEST_SRCDIR:?TEST_SRCDIR must point at the tests}"
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
TOOLS=$(cd "$TEST_SRCDIR/../tools" && pwd) || exit 1
BUILD=$(dirname "$FASTQCOW")
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/man.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }

# The options named in a text: -x and --long-name tokens.
cat >"$T/opts.py" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
if len(sys.argv) > 2:   # a page source: its OPTIONS section only
    m = re.search(r'^# OPTIONS\n(.*?)(?=^# |\Z)', text, re.M | re.S)
    text = m.group(1) if m else ''
opts = set(re.findall(r'(?<![\w-])(--[a-z][a-z0-9-]*|-[A-Za-z])(?![\w])', text))
print('\n'.join(sorted(opts)))
EOF
opts() { python3 "$T/opts.py" "$@"; }

# same WHAT HELPFILE PAGE: the options of both agree
same() {
    opts "$2" >"$T/h.opts"
    opts "$3" page >"$T/p.opts"
    [ -s "$T/h.opts" ] || bad "$1: --help names no option"
    if ! cmp -s "$T/h.opts" "$T/p.opts"; then
        bad "$1: --help and the manual page name different options"
        diff "$T/h.opts" "$T/p.opts" | sed 's/^</  only in --help:/; s/^>/  only in the page:/' | grep only
    fi
}

"$FASTQCOW" --help >"$T/main.help" || bad "fastqcow --help"
same fastqcow "$T/main.help" "$TOOLS/fastqcow.1.scd"
subs=$(awk '/^Subcommands:/ { on = 1; next } on && /^  [a-z]/ { print $1 } on && /^$/ { exit }' "$T/main.help")
[ -n "$subs" ] || bad "no subcommands in fastqcow --help"
for s in $subs; do
    src=$TOOLS/$s.1.scd
    [ -e "$src" ] || src=$TOOLS/$s/$s.1.scd
    if [ ! -e "$src" ]; then
        bad "$s: no manual page source (tools/$s.1.scd or tools/$s/$s.1.scd)"
        continue
    fi
    "$FASTQCOW" "$s" --help >"$T/$s.help" 2>&1 || bad "$s --help: exit $?"
    same "$s" "$T/$s.help" "$src"
    head -1 "$src" | grep -qx "fastqcow-$s(1)" || bad "$s: the page is not fastqcow-$s(1)"
    grep -q "\*fastqcow-$s\*(1)" "$TOOLS/fastqcow.1.scd" || bad "$s: fastqcow(1) does not name its page"
    if command -v scdoc >/dev/null; then
        scdoc <"$src" >"$T/$s.1" 2>"$T/$s.err" || { bad "$s: scdoc"; cat "$T/$s.err"; }
        [ -e "$BUILD/fastqcow-$s.1" ] || bad "$s: the build made no fastqcow-$s.1 (meson.build's list)"
    fi
done
if command -v scdoc >/dev/null; then
    scdoc <"$TOOLS/fastqcow.1.scd" >/dev/null || bad "fastqcow.1: scdoc"
    [ -e "$BUILD/fastqcow.1" ] || bad "the build made no fastqcow.1"
fi

[ $fail = 0 ] && echo "PASS: man pages agree with --help"
exit $fail
