// Attention kernel benchmark (not a test): times loom's public fast::scaled_dot_product_attention on the
// CUDA device, bf16, batch 1, Hq 32 / Hkv 8 (GQA 4) at head dims 128 and 64, causal, with the keys and
// values held as 256-position blocks (KV-cache pages). Cases: prefill L = 512 at depth 0 and 4096,
// L = 4096 at depth 0, and decode L = 1 at depths 4096 and 32768 (depth = keys already cached; the
// kv length is depth + L). One line per case:
//   <case> <microseconds per call> us <TFLOP/s> TFLOP/s <GB/s of K/V read>
// FLOPs count the visible (query, key) pairs only: 4 * D * Hq * (L * depth + L * (L + 1) / 2)
// (2 D for Q K^T and 2 D for P V per pair); K/V bytes are the kv length's keys and values, read once.
//   kernel_bench_attention [--only SUBSTRING] [--min-ms 30]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/kernel_bench_util.h"
#include "loom/core/device.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "loom/ops/random.h"

namespace {

using namespace loom;

const Device kDev = Device::cuda(0);
double g_min_ms = 30.0;

// Mean seconds per call of f (bench/kernel_bench_util.h).
double time_call(const std::function<void()>& f) { return kbench::time_call(f, kDev, g_min_ms); }

// Values in [-1, 1) as bf16 on the device.
Array values(const Shape& shape, uint64_t key) {
  return astype((random_uniform(shape, key, kDev) - 0.5) * 2.0, Dtype::bf16);
}

void bench(int64_t D, int64_t L, int64_t depth) {
  constexpr int64_t kHq = 32, kHkv = 8, kPage = 256;
  const int64_t kv_len = depth + L;
  Array q = values({1, kHq, L, D}, 1);
  fast::KVBlocks kv;
  for (int64_t at = 0, i = 0; at < kv_len; at += kPage, ++i) {
    kv.keys.push_back(values({1, kHkv, kPage, D}, 100 + 2 * i));
    kv.values.push_back(values({1, kHkv, kPage, D}, 101 + 2 * i));
  }
  kv.length = kv_len;
  AttentionSpec spec;
  spec.mode = AttentionMode::causal;
  const double sec = time_call([&] { (void)fast::scaled_dot_product_attention(q, kv, spec); });
  const double pairs = static_cast<double>(L) * depth + static_cast<double>(L) * (L + 1) / 2;
  const double flops = 4.0 * D * kHq * pairs;
  const double kv_bytes = 2.0 * kv_len * kHkv * D * 2;
  char name[96];
  std::snprintf(name, sizeof(name), "bf16 D=%lld %s L=%lld depth=%lld", static_cast<long long>(D),
                L == 1 ? "decode" : "prefill", static_cast<long long>(L), static_cast<long long>(depth));
  std::printf("%-40s %10.2f us %8.2f TFLOP/s %8.1f GB/s\n", name, sec * 1e6, flops / sec / 1e12, kv_bytes / sec / 1e9);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::string only;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else if (!std::strcmp(argv[i], "--min-ms") && i + 1 < argc)
      g_min_ms = std::stod(argv[++i]);
  }
  struct Case {
    int64_t L, depth;
  };
  const Case cases[] = {{512, 0}, {512, 4096}, {4096, 0}, {1, 4096}, {1, 32768}};
  for (int64_t D : {128, 64}) {
    for (const Case& c : cases) {
      std::string tag = "D=" + std::to_string(D) + " L=" + std::to_string(c.L) + " depth=" + std::to_string(c.depth);
      if (!only.empty() && tag.find(only) == std::string::npos) continue;
      bench(D, c.L, c.depth);
    }
  }
  return 0;
}
