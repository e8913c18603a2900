#!/bin/bash
# test-luks.sh: LUKS encrypted qcow2 images both ways with qemu. An image
# qemu-img creates (its defaults) and qemu-io writes reads back equal
# through fastqcow (io -P, convert -O raw against qemu-img's); what
# fastqcow writes (aligned, unaligned, zeros, over many clusters) reads
# back equal through qemu-io with the same secret, and images fastqcow
# creates (each cipher, mode, IV generator and hash it offers) are read by
# qemu-io and pass qemu-img check. The secret is given as qemu takes it
# (--object secret data=, file=, base64 with --image-opts
# ...,encrypt.key-secret=) and in fastqcow's own form (FASTQCOW_SECRET,
# FASTQCOW_SECRET_FILE). A wrong or missing secret is refused with qemu's
# message; the ciphertext on disk is not the data. Bare LUKS containers
# both ways. PBKDF2 runs ~10 ms (encrypt.iter-time=10) to keep it quick.
# SPDX-License-Identifier: MIT
set -u
: "${FASTQCOW:?FASTQCOW must point at the fastqcow tool}"
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null ||
    { echo "SKIP: qemu-img/qemu-io not installed"; exit 77; }
T=$(mktemp -d "${TEST_TMPDIR:-/tmp}/luks.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1
fail=0
bad() { echo "FAIL: $*"; fail=1; }
SEC="--object secret,id=sec0,data=s3cr3t"
opts() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=sec0"; }
# qemu-io / fastqcow io on an encrypted image, the secret given qemu's way
qio() { local i=$1; shift; qemu-io $SEC --image-opts "$(opts "$i")" "$@"; }
fio() { local i=$1; shift; "$FASTQCOW" io $SEC --image-opts "$(opts "$i")" "$@"; }
# run `io` commands, fail (with the output) unless all of them passed
# qemu-img create of a LUKS image measures PBKDF2 on the CPU, and gives up
# ("Unable to get accurate CPU usage") on a busy machine: a few tries
qcreate() {
    local t
    for t in 1 2 3 4 5; do
        qemu-img create "$@" 2>qcreate.err && return 0
        grep -q 'accurate CPU usage' qcreate.err || break
        sleep 1
    done
    cat qcreate.err
    return 1
}
ok() {
    local what=$1; shift
    "$@" >out 2>&1 && ! grep -q -E "failed|error|Error" out || { bad "$what"; head -5 out; }
}
ENC="encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"
W=(-c 'write -P 0x5a 0 192k' -c 'write -P 0x11 1M 64k' -c 'write -P 0x22 333 1000'
   -c 'write -P 0x33 2097000 5000' -c 'write -z 3M 128k' -c 'write -P 0x44 4M 2M'
   -c 'write -z 4100k 513')
R=(-c 'read -P 0x5a 0 333' -c 'read -P 0x22 333 1000' -c 'read -P 0x5a 1333 195275'
   -c 'read -P 0x11 1M 64k' -c 'read -P 0 1114112 982888' -c 'read -P 0x33 2097000 5000'
   -c 'read -P 0 3M 128k' -c 'read -P 0x44 4M 4k' -c 'read -P 0 4100k 513'
   -c 'read -P 0x44 4198913 1896191' -c 'read -P 0 6M 1M')

# ---- qemu writes, fastqcow reads ----
# (one image: qemu-img create spends seconds measuring PBKDF2, whatever
# the iter-time; the other algorithms are read by qemu below)
for c in ""; do
    rm -f q.qcow2 q.raw f.raw
    qcreate -q -f qcow2 $SEC -o "$ENC$c" q.qcow2 8M || { bad "qemu-img create$c"; continue; }
    ok "qemu-io writes$c" qio q.qcow2 "${W[@]}"
    ok "fastqcow reads what qemu wrote$c" fio q.qcow2 "${R[@]}"
    qemu-img convert $SEC --image-opts "$(opts q.qcow2)" -O raw q.raw
    "$FASTQCOW" convert $SEC --image-opts "$(opts q.qcow2)" -O raw f.raw || bad "convert$c"
    cmp -s q.raw f.raw || bad "convert -O raw$c differs from qemu-img's"
    "$FASTQCOW" check q.qcow2 >out 2>&1 || { bad "check of qemu's image$c"; cat out; }
    for o in human json; do   # encrypted data has no offset to show
        qemu-img map --output=$o $SEC --image-opts "$(opts q.qcow2)" 2>&1 | sed 's/^qemu-img: /fastqcow: /' >q.map
        "$FASTQCOW" map --output=$o $SEC --image-opts "$(opts q.qcow2)" >f.map 2>&1
        cmp -s q.map f.map || { bad "map --output=$o differs from qemu-img's"; diff q.map f.map | head -5; }
    done
done

# ---- fastqcow creates and writes, qemu reads ----
for c in "" ",encrypt.cipher-alg=aes-128" ",encrypt.cipher-alg=aes-192" \
         ",encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256" \
         ",encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain64" ",encrypt.ivgen-alg=plain,encrypt.hash-alg=sha1" \
         ",encrypt.hash-alg=sha384" ",encrypt.cipher-mode=cbc,encrypt.hash-alg=sha512"; do
    rm -f f.qcow2
    "$FASTQCOW" create -q -f qcow2 $SEC -o "$ENC$c" f.qcow2 8M || { bad "create$c"; continue; }
    ok "fastqcow writes$c" fio f.qcow2 "${W[@]}"
    ok "qemu-io reads what fastqcow wrote$c" qio f.qcow2 "${R[@]}"
    qemu-img check $SEC --image-opts "$(opts f.qcow2)" >out 2>&1 || { bad "qemu-img check$c"; cat out; }
    "$FASTQCOW" check f.qcow2 >out 2>&1 || { bad "check$c"; cat out; }
    qemu-img info f.qcow2 >info 2>&1
    want=$(echo "$c" | sed -n 's/.*cipher-alg=\([a-z0-9-]*\).*/\1/p')
    grep -q "cipher alg: ${want:-aes-256}" info || { bad "qemu-img info$c: cipher"; cat info; }
    for o in human json; do   # the encryption header's details, no secret needed
        qemu-img info --output=$o f.qcow2 >q.info 2>&1
        "$FASTQCOW" info --output=$o f.qcow2 >f.info 2>&1
        cmp -s q.info f.info || { bad "info --output=$o$c"; diff q.info f.info | head -5; }
    done
done

for o in human json; do
    qemu-img info --output=$o q.qcow2 >q.info 2>&1
    "$FASTQCOW" info --output=$o q.qcow2 >f.info 2>&1
    cmp -s q.info f.info || { bad "info --output=$o of qemu's image"; diff q.info f.info | head -5; }
done

# ---- the ciphertext is not the data (a 512-byte run of the pattern) ----
python3 - f.qcow2 <<'EOF' || bad "the data is on disk in clear"
import sys
d = open(sys.argv[1], 'rb').read()
sys.exit(1 if bytes([0x5a]) * 512 in d or bytes([0x44]) * 512 in d else 0)
EOF

# ---- other ways to give the secret ----
printf s3cr3t >pw.txt
ok "secret file=" "$FASTQCOW" io --object secret,id=k,file=pw.txt \
    --image-opts driver=qcow2,file.filename=f.qcow2,encrypt.key-secret=k -c 'read -P 0x11 1M 64k'
ok "secret format=base64" "$FASTQCOW" io --object secret,id=k,data=czNjcjN0,format=base64 \
    --image-opts driver=qcow2,file.filename=f.qcow2,encrypt.key-secret=k -c 'read -P 0x11 1M 64k'
ok "FASTQCOW_SECRET" env FASTQCOW_SECRET=s3cr3t "$FASTQCOW" io f.qcow2 -c 'read -P 0x11 1M 64k'
ok "FASTQCOW_SECRET_FILE" env FASTQCOW_SECRET_FILE=pw.txt "$FASTQCOW" io f.qcow2 -c 'read -P 0x11 1M 64k'
rm -f e.qcow2
FASTQCOW_SECRET=s3cr3t "$FASTQCOW" create -q -f qcow2 -o encrypt.format=luks,encrypt.iter-time=10 e.qcow2 1M ||
    bad "create with FASTQCOW_SECRET"
ok "qemu reads an image created with FASTQCOW_SECRET" qio e.qcow2 -c 'read -P 0 0 1M'

# ---- wrong and missing secrets ----
for i in q.qcow2 f.qcow2; do
    cp $i before
    "$FASTQCOW" io --object secret,id=sec0,data=wrong --image-opts "$(opts $i)" -c 'read 0 4k' >out 2>&1 &&
        bad "$i: a wrong secret opened the image"
    grep -q "Invalid password, cannot unlock any keyslot" out || { bad "$i: wrong secret message"; cat out; }
    "$FASTQCOW" io $i -c 'read 0 4k' >out 2>&1 && bad "$i: opened without a secret"
    grep -q "Parameter 'encrypt.key-secret' is required for cipher" out || { bad "$i: no secret message"; cat out; }
    "$FASTQCOW" io --image-opts "$(opts $i)" -c 'read 0 4k' >out 2>&1 && bad "$i: an unknown secret id"
    grep -q "No secret with id 'sec0'" out || { bad "$i: unknown secret message"; cat out; }
    cmp -s $i before || bad "$i: changed by refused opens"
done

# ---- what encrypted images cannot do: said, image untouched ----
"$FASTQCOW" convert -c $SEC --image-opts "$(opts f.qcow2)" -O qcow2 -o "$ENC" c.qcow2 >out 2>&1 &&
    bad "compressed encrypted convert"
grep -q "Compression and encryption not supported at the same time" out || { bad "convert -c message"; cat out; }
FASTQCOW_SECRET=s3cr3t "$FASTQCOW" defrag f.qcow2 >out 2>&1 && bad "defrag of an encrypted image"
grep -q -i "encrypted" out || { bad "defrag message"; cat out; }
"$FASTQCOW" create -q -f qcow2 $SEC -o encrypt.format=aes,encrypt.key-secret=sec0 a.qcow2 1M >out 2>&1 &&
    bad "legacy AES created"
grep -q -i "luks" out || { bad "legacy AES message"; cat out; }
"$FASTQCOW" create -q -f qcow2 $SEC -o "$ENC,encrypt.cipher-alg=twofish-128" a.qcow2 1M >out 2>&1 &&
    bad "an unknown cipher accepted"
grep -q "twofish-128" out || { bad "unknown cipher message"; cat out; }
"$FASTQCOW" create -q -f qcow2 $SEC -o "$ENC,encrypt.cipher-alg=aes-192,encrypt.cipher-mode=cbc" a.qcow2 1M \
    >out 2>&1 && bad "aes-192 cbc (key material of part of a sector) accepted"

# ---- amend to compat 0.10: zero clusters become encrypted zeros ----
rm -f v.qcow2
"$FASTQCOW" create -q -f qcow2 $SEC -o "$ENC" v.qcow2 1M
ok "writes before amend" fio v.qcow2 -c 'write -P 0x31 0 256k' -c 'write -z 64k 64k'
FASTQCOW_SECRET=s3cr3t "$FASTQCOW" amend -o compat=0.10 v.qcow2 || bad "amend of an encrypted image"
ok "qemu-io reads an amended image" qio v.qcow2 -c 'read -P 0x31 0 64k' -c 'read -P 0 64k 64k' \
    -c 'read -P 0x31 128k 128k'
qemu-img check $SEC --image-opts "$(opts v.qcow2)" >out 2>&1 || { bad "qemu-img check after amend"; cat out; }

# ---- convert into a new encrypted image ----
rm -f c.qcow2
"$FASTQCOW" convert $SEC --image-opts "$(opts q.qcow2)" -O qcow2 -o "$ENC" c.qcow2 || bad "convert to luks"
qemu-img compare $SEC --image-opts "$(opts q.qcow2)" "$(opts c.qcow2)" >out 2>&1 || { bad "converted image"; cat out; }

# ---- bare LUKS containers ----
qcreate -q -f luks $SEC -o key-secret=sec0,iter-time=10 b.luks 4M || bad "qemu-img create -f luks"
L="driver=luks,file.filename=b.luks,key-secret=sec0"
ok "qemu-io writes a LUKS container" qemu-io $SEC --image-opts "$L" -c 'write -P 0x61 0 64k' -c 'write -P 0x62 1M 1k'
ok "fastqcow reads and writes a LUKS container" "$FASTQCOW" io $SEC --image-opts "$L" \
    -c 'read -P 0x61 0 64k' -c 'read -P 0x62 1M 1k' -c 'write -P 0x63 2M 100' -c 'write -P 0x64 3M 64k' \
    -c 'write -z 2097252 412'
ok "qemu-io reads what fastqcow wrote to a LUKS container" qemu-io $SEC --image-opts "$L" \
    -c 'read -P 0x63 2M 100' -c 'read -P 0 2097252 412' -c 'read -P 0x64 3M 64k' -c 'read -P 0x61 0 64k'
FASTQCOW_SECRET=wrong "$FASTQCOW" io b.luks -c 'read 0 4k' >out 2>&1 && bad "LUKS container: wrong secret"
grep -q "Invalid password, cannot unlock any keyslot" out || { bad "LUKS container: wrong secret message"; cat out; }

[ $fail = 0 ] && echo "PASS"
exit $fail
