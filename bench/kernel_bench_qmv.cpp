// Decode GEMV benchmark (not a test): times loom's public ops for one activation row (M = 1; bf16 on
// CUDA, f32 on the CPU) against the weight matrices of a Llama-3.1-8B and a Qwen3-30B-A3B decode step (or,
// with --shapes llama1b, a Llama-3.2-1B one), plain bf16 matmul (the reference) and quantized_matmul at
// 4-bit g64, 8-bit g64 (MLX affine, bf16 scales) and mxfp4, plus gather_qmm over 128 experts of 768x2048 /
// 2048x768 with top-8 for one token. One line per case:
//   <case> <N>x<K> <format> <microseconds per call> us <GB/s of bytes read>
// where the bytes read are the weights the call must stream (packed words + scales + biases, or the bf16
// matrix; for gather_qmm the 8 selected experts) plus x. Compare with the device's copy bandwidth. On
// the CPU each case cycles through random matrices of its shape totalling >= 256 MB, so no call finds its
// weights in the last-level cache (a decode step never does).
//   kernel_bench_qmv [--device cuda|cpu] [--shapes default|llama1b] [--formats default|all] [--only SUBSTRING]
//                    [--min-ms 30]
#include <algorithm>
#include <chrono>
#include <cmath>
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

Device kDev = Device::cuda(0);
double g_min_ms = 30.0;

// Copies of a case's weights to cycle through: enough to exceed the CPU's last-level cache.
int copies_for(double bytes) {
  if (kDev.is_cuda()) return 1;
  return static_cast<int>(std::max(1.0, std::ceil(256e6 / bytes)));
}

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

// The formats timed: --formats all adds every other affine width and the remaining fp modes.
bool g_all_formats = false;
const std::vector<Format>& formats() {
  static const std::vector<Format> f = {{"q4g64", {QuantMode::affine, 4, 64}},
                                        {"q8g64", {QuantMode::affine, 8, 64}},
                                        {"mxfp4", default_quant_spec(QuantMode::mxfp4)}};
  static const std::vector<Format> all = {
      {"q2g64", {QuantMode::affine, 2, 64}},           {"q3g64", {QuantMode::affine, 3, 64}},
      {"q4g64", {QuantMode::affine, 4, 64}},           {"q5g64", {QuantMode::affine, 5, 64}},
      {"q6g64", {QuantMode::affine, 6, 64}},           {"q8g64", {QuantMode::affine, 8, 64}},
      {"mxfp4", default_quant_spec(QuantMode::mxfp4)}, {"nvfp4", default_quant_spec(QuantMode::nvfp4)},
      {"mxfp8", default_quant_spec(QuantMode::mxfp8)}};
  return g_all_formats ? all : f;
}

// The activation row: bf16 on CUDA (its compute dtype there), f32 on the CPU.
Array activation(int64_t k, uint64_t key) {
  Array x = weights({1, k}, key);
  return kDev.is_cuda() ? x : astype(x, Dtype::f32);
}

void bench_dense(const std::string& name, int64_t n, int64_t k, uint64_t key) {
  Array w = weights({n, k}, key);
  Array x = activation(k, key + 1);
  const int copies = copies_for(nbytes(w));
  {
    std::vector<Array> wt;
    for (int c = 0; c < copies; ++c) wt.push_back(swapaxes(c == 0 ? w : weights({n, k}, key + 1000 * c), 0, 1));
    size_t i = 0;
    const double sec = time_call([&] { (void)matmul(x, wt[i++ % wt.size()]); });
    report(name, n, k, "bf16", sec, nbytes(w) + nbytes(x));
  }
  for (const Format& f : formats()) {
    std::vector<QuantizedArrays> qs;
    qs.push_back(quantize(w, f.spec));
    const double qbytes = nbytes(qs[0].wq) + nbytes(qs[0].scales) + nbytes(qs[0].biases);
    for (int c = 1; c < copies_for(qbytes); ++c) qs.push_back(quantize(weights({n, k}, key + 1000 * c), f.spec));
    size_t i = 0;
    const double sec = time_call([&] {
      const QuantizedArrays& q = qs[i++ % qs.size()];
      (void)quantized_matmul(x, q.wq, q.scales, q.biases, true, f.spec);
    });
    report(name, n, k, f.name, sec, qbytes + nbytes(x));
  }
}

void bench_moe(const std::string& name, int64_t n, int64_t k, uint64_t key) {
  constexpr int64_t kExperts = 128, kTop = 8;
  Array w = weights({kExperts, n, k}, key);
  Array x = reshape(activation(k, key + 1), {1, 1, 1, k});  // one token, broadcast over its 8 experts
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
  std::string only, shapes = "default";
  auto usage = [](const std::string& why) {
    std::fprintf(stderr,
                 "kernel_bench_qmv: %s\n  usage: kernel_bench_qmv [--device cuda|cpu] [--shapes default|llama1b] "
                 "[--formats default|all] [--only SUBSTRING] [--min-ms MS]\n",
                 why.c_str());
    return 2;
  };
  for (int i = 1; i < argc; i += 2) {
    const std::string flag = argv[i];
    if (i + 1 >= argc) return usage(flag + " needs a value");
    const std::string value = argv[i + 1];
    if (flag == "--only") {
      only = value;
    } else if (flag == "--min-ms") {
      g_min_ms = std::atof(value.c_str());
    } else if (flag == "--device") {
      kDev = parse_device(value);
    } else if (flag == "--shapes" && (value == "default" || value == "llama1b")) {
      shapes = value;
    } else if (flag == "--formats" && (value == "default" || value == "all")) {
      g_all_formats = value == "all";
    } else {
      return usage("unknown argument " + flag + " " + value);
    }
  }
  if (!device_available(kDev)) {
    std::fprintf(stderr, "kernel_bench_qmv: device %s is not usable\n", kDev.str().c_str());
    return 1;
  }
  struct Dense {
    const char* name;
    int64_t n, k;
  };
  const std::vector<Dense> llama1b = {
      {"llama1b.q/o_proj", 2048, 2048}, {"llama1b.k/v_proj", 512, 2048},   {"llama1b.gate/up", 8192, 2048},
      {"llama1b.down", 2048, 8192},     {"llama1b.lm_head", 128256, 2048},
  };
  std::vector<Dense> dense = {
      {"llama8b.q/o_proj", 4096, 4096},  {"llama8b.k/v_proj", 1024, 4096},  {"llama8b.gate/up", 14336, 4096},
      {"llama8b.down", 4096, 14336},     {"llama8b.lm_head", 128256, 4096}, {"qwen30b.q_proj", 4096, 2048},
      {"qwen30b.k/v_proj", 512, 2048},   {"qwen30b.o_proj", 2048, 4096},    {"qwen30b.router", 128, 2048},
      {"qwen30b.lm_head", 151936, 2048},
  };
  if (shapes == "llama1b") dense = llama1b;
  uint64_t key = 1;
  for (const Dense& d : dense) {
    key += 2;
    if (!only.empty() && std::string(d.name).find(only) == std::string::npos) continue;
    bench_dense(d.name, d.n, d.k, key);
  }
  for (const Dense& d : shapes == "llama1b"
                            ? std::vector<Dense>{}
                            : std::vector<Dense>{{"qwen30b.moe_gate/up", 768, 2048}, {"qwen30b.moe_down", 2048, 768}}) {
    key += 2;
    if (!only.empty() && std::string(d.name).find(only) == std::string::npos) continue;
    bench_moe(d.name, d.n, d.k, key);
  }
  return 0;
}
