#!/usr/bin/env bash
# Print the function names declared in the public header, one per line.
hdr=${1:-$(dirname "$0")/../include/fastqcow.h}
grep -E '^[a-z][a-z0-9_ ]*[ *]fq_[a-z0-9_]+\(' "$hdr" | grep -v '^typedef' |
  sed -E 's/.*[ *](fq_[a-z0-9_]+)\(.*/\1/' | sort -u
