// Decode GEMV benchmark (not a test): times loom's public ops on the CUDA device for one activation row
// (M = 1, bf16) against the weight matrices of a Llama-3.1-8B and a Qwen3-30B-A3B decode step, plain bf16
// matmul (the reference) and quantized_matmul at 4-bit g64, 8-bit g64 (MLX affine, bf16 scales) and mxfp4,
// plus gather_qmm over 128 experts of 768x2048 / 2048x768 with top-8 for one token. One line per case:
//   <case> <N>x<K> <format> <microseconds per call> us <GB/s of bytes read>
// where the bytes read are the weights the call must stream (packed words + scales + biases, or the bf16
// matrix; for gather_qmm the 8 selected experts) plus x. Compare with the card's copy bandwidth.
//   kernel_bench_qmv [--only SUBSTRING] [--min-ms 30]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "bench/kernel_bench_util.h"
#include "loom/core/device.h"
#include "loom/core/quant.h"
#include "loom/ops/device.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"
#include "loom/ops/quantized.h"
#include "loom/ops/random.h"

namespace {

using namespace loom;

const Device kDev = Device::cuda(0);
double g_min_ms = 30.0;

// Mean seconds per call of f (bench/kernel_bench_util.h).
double time_call(const std::function<void()>& f) { return kbench::time_call(f, kDev, g_min_ms); }

void report(const std::string& name, int64_t n, int64_t k, const std::string& fmt, double sec, double bytes) {
  std::printf("%-22s %6lldx%-6lld %-10s %9.2f us %8.1f GB/s\n", name.c_str(), static_cast<long long>(n),
              static_cast<long long>(k), fmt.c_str(), sec * 1e6, bytes / sec / 1e9);
  std::fflush(stdout);
}

double nbytes(const Array& a) { return a.valid() ? static_cast<double>(a.nbytes()) : 0.0; }

// Weights in [-0.05, 0.05) as bf16 on the device.
Array weights(const Shape& shape, uint64_t key) {
  return astype((random_uniform(shape, key, kDev) - 0.5) * 0.1, Dtype::bf16);
}

struct Format {
  std::string name;
  QuantSpec spec;
};

const std::vector<Format>& formats() {
  static const std::vector<Format> f = {{"q4g64", {QuantMode::affine, 4, 64}},
                                        {"q8g64", {QuantMode::affine, 8, 64}},
                                        {"mxfp4", default_quant_spec(QuantMode::mxfp4)}};
  return f;
}

void bench_dense(const std::string& name, int64_t n, int64_t k, uint64_t key) {
  Array w = weights({n, k}, key);
  Array x = weights({1, k}, key + 1);
  {
    Array wt = swapaxes(w, 0, 1);
    const double sec = time_call([&] { (void)matmul(x, wt); });
    report(name, n, k, "bf16", sec, nbytes(w) + nbytes(x));
  }
  for (const Format& f : formats()) {
    QuantizedArrays q = quantize(w, f.spec);
    const double sec =
        time_call([&] { (void)quantized_matmul(x, q.wq, q.scales, q.biases, true, f.spec); });
    report(name, n, k, f.name, sec, nbytes(q.wq) + nbytes(q.scales) + nbytes(q.biases) + nbytes(x));
  }
}

void bench_moe(const std::string& name, int64_t n, int64_t k, uint64_t key) {
  constexpr int64_t kExperts = 128, kTop = 8;
  Array w = weights({kExperts, n, k}, key);
  Array x = weights({1, 1, 1, k}, key + 1);  // one token, broadcast over its 8 experts
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < kTop; ++i) ids.push_back(static_cast<int32_t>((i * 37 + 5) % kExperts));  // distinct
  Array rhs = to_device(Array::from(ids, {1, kTop}), kDev);
  const double per_expert = static_cast<double>(kTop) / static_cast<double>(kExperts);
  for (const Format& f : formats()) {
    QuantizedArrays q = quantize(w, f.spec);
    const double sec =
        time_call([&] { (void)gather_qmm(x, q.wq, q.scales, q.biases, Array(), rhs, true, f.spec); });
    report(name, n, k, f.name, sec,
           per_expert * (nbytes(q.wq) + nbytes(q.scales) + nbytes(q.biases)) + nbytes(x));
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string only;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--only")) only = argv[i + 1];
    if (!std::strcmp(argv[i], "--min-ms")) g_min_ms = std::atof(argv[i + 1]);
  }
  if (!device_available(kDev)) {
    std::fprintf(stderr, "kernel_bench_qmv: no usable CUDA device\n");
    return 1;
  }
  struct Dense {
    const char* name;
    int64_t n, k;
  };
  const std::vector<Dense> dense = {
      {"llama8b.q/o_proj", 4096, 4096},   {"llama8b.k/v_proj", 1024, 4096},  {"llama8b.gate/up", 14336, 4096},
      {"llama8b.down", 4096, 14336},      {"llama8b.lm_head", 128256, 4096}, {"qwen30b.q_proj", 4096, 2048},
      {"qwen30b.k/v_proj", 512, 2048},    {"qwen30b.o_proj", 2048, 4096},    {"qwen30b.router", 128, 2048},
      {"qwen30b.lm_head", 151936, 2048},
  };
  uint64_t key = 1;
  for (const Dense& d : dense) {
    key += 2;
    if (!only.empty() && std::string(d.name).find(only) == std::string::npos) continue;
    bench_dense(d.name, d.n, d.k, key);
  }
  for (const Dense& d : std::vector<Dense>{{"qwen30b.moe_gate/up", 768, 2048}, {"qwen30b.moe_down", 2048, 768}}) {
    key += 2;
    if (!only.empty() && std::string(d.name).find(only) == std::string::npos) continue;
    bench_moe(d.name, d.n, d.k, key);
  }
  return 0;
}
