#!/usr/bin/env bash
# Builds a fully static tokenizer_bench (glibc, libstdc++, PCRE2, utf8proc linked in) so it runs on
# another machine, e.g. the GPU machine next to HF tokenizers:  bench/tokenizer_bench_static.sh OUT
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-"$root/.devtmp/tokenizer_bench"}
srcs=$(find "$root/loom/tokenizer" -name '*.cpp' ! -name sentencepiece.cpp)
g++ -std=c++20 -O2 -DNDEBUG -static -I"$root" \
  "$root/bench/tokenizer_bench.cpp" "$root/bench/tokenizer_bench_nospm.cpp" \
  "$root/loom/common/error.cpp" "$root/loom/common/strings.cpp" $srcs \
  /usr/lib/x86_64-linux-gnu/libpcre2-8.a /usr/lib/x86_64-linux-gnu/libutf8proc.a -o "$out"
echo "$out"
