# Numbers as qemu parses them: suffixes, fractions, hex, '+', tabs, and the
# messages for what does not parse or is too large.
truncate -s 64M n.raw
c=()
for x in 512 1k 1K 1.5k 0.5k .5k 1.k 0x1k 0X200 +512 -1 1e3 512b 1B 1kB 0x 08 010 \
    1.9999999b 0.5 00x10 9223372036854775807 9223372036854775808 8E 7E 1e 0.1b \
    0x1.5k 0.00001M 1.0 0.0 1.5M 0x7fffffffffffffff 0xffffffffffffffff \
    18446744073709551616 1.1111111111111111111111111k "	7" "	+7" "7	" 0x1p3 \
    inf nan 1.5e3k 0x1e 1,5k 0.9999999999999999999999k 0.00048828125k \
    0.00048828124k +0x10 -0 1.5E 8.0E "	-1" 0.1e 0.5.5k 0x0.5k 0X1K 0.99k 0.00244140625k; do
    c+=(-c "alloc 0 $x")
done
qemu-io -f raw "${c[@]}" n.raw; echo "rc=$?"
qemu-io -f raw -c "read 0x10 0x20" -c "read 1.5k 1" -c "write -P 1 0x1000 0x1000" \
    -c "read -P 1 4k 4k" -c "discard 0 1.5G" -c "sigraise 1k" -c "truncate 1.5x" n.raw
