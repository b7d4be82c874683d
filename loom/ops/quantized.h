// Quantization ops with MLX's names, formats and algorithms (see loom/core/quant.h for layouts):
// quantize, dequantize and quantized_matmul. Affine needs biases; the fp modes (mxfp4, nvfp4, mxfp8)
// take none and keep uint8 scales. nvfp4 accepts an optional f32 global scale (size 1).
#pragma once

#include <atomic>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "loom/common/error.h"
#include "loom/core/array.h"
#include "loom/core/quant.h"

namespace loom {

// The three arrays of a quantized matrix w [..., K]: wq uint32 [..., K*bits/32], scales [..., K/gs]
// (w's dtype for affine, uint8 for the fp modes) and biases (affine only, else invalid).
struct QuantizedArrays {
  Array wq, scales, biases;
};

// Quantizes the last axis of w (floating, ndim >= 2, K divisible by group_size), as mx.quantize.
QuantizedArrays quantize(const Array& w, const QuantSpec& spec, const Array& global_scale = {}, StreamOrDevice s = {});

// Inverse of quantize. Output dtype: `dtype` when given, else the scales' dtype for affine and
// bfloat16 for the fp modes (MLX's defaults).
Array dequantize(const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec,
                 std::optional<Dtype> dtype = std::nullopt, const Array& global_scale = {}, StreamOrDevice s = {});

// x [..., K] @ W.T (transpose, W [N, K] quantized along K) or x @ W (W [K, N] quantized along N),
// with W 2-d. Output dtype: promote(x, scales) for affine, x's dtype for the fp modes. The precision
// follows qmm_precision() (below); the exact tier equals dequantize + matmul up to f32
// summation order.
Array quantized_matmul(const Array& x, const Array& wq, const Array& scales, const Array& biases, bool transpose,
                       const QuantSpec& spec, const Array& global_scale = {}, StreamOrDevice s = {});

// A quantized matrix W [N, K] (quantized along K) as the Linear layers hold it.
struct QuantizedMatrix {
  Array wq, scales, biases;
  QuantSpec spec;
  Array global_scale;  // optional (nvfp4)
};

// x @ W_i.T for several matrices read with one input (a layer's q/k/v projections): each result as
// quantized_matmul(x, W_i, transpose=true) gives it. Products of one format (spec, K, scale dtype) may run
// as one pass (CUDA: one decode-GEMV launch for up to 3 matrices); others run one by one.
std::vector<Array> quantized_matmuls(const Array& x, const std::vector<QuantizedMatrix>& ws, StreamOrDevice s = {});

// fast::swiglu(x @ gate.T, x @ up.T) with each product in its output dtype first (a gated MLP's first
// half); one pass where the backend can (CUDA decode: the GEMV's epilogue applies the swiglu).
Array quantized_swiglu(const Array& x, const QuantizedMatrix& gate, const QuantizedMatrix& up, StreamOrDevice s = {});

// Precision tier of quantized_matmul and gather_qmm:
//  - exact: f32 activations; equals dequantize + matmul up to f32 summation order (within 1e-5).
//  - fast: each activation row is quantized to int8 per block of 32 (llama.cpp's Q8_0: d = max|x| / 127,
//    q = round-to-nearest-even of x / d) and the codes are multiplied as integers (the bias term uses the
//    quantized x's block sums). CPU: affine 4- and 8-bit with W transposed (every Linear layer) at any
//    number of rows; single rows also of affine 2/3/5/6 bits, mxfp4, nvfp4. CUDA: the decode GEMV (up to
//    8 rows, W transposed) of affine 4 and 8 bits; prefill stays exact there (dequantized panels on
//    tensor cores). Both devices quantize alike, so their fast tiers agree up to f32 summation order.
//    Other formats and shapes use exact.
// Process-wide; the default is fast, or LOOM_QMM=exact|fast read on first use.
enum class QmmPrecision { exact, fast };

// "exact" / "fast"; anything else throws ValueError naming `what` (e.g. "--qmm").
inline QmmPrecision parse_qmm_precision(std::string_view s, std::string_view what) {
  if (s == "exact") return QmmPrecision::exact;
  if (s == "fast") return QmmPrecision::fast;
  throw ValueError(format_error("quantized_matmul", std::string(what) + " must be exact or fast, got '" + std::string(s) + "'"));
}

namespace detail {
inline std::atomic<int> qmm_precision_state{-1};  // -1: not yet set (read LOOM_QMM)
}  // namespace detail

inline void set_qmm_precision(QmmPrecision p) { detail::qmm_precision_state.store(static_cast<int>(p)); }

inline QmmPrecision qmm_precision() {
  int v = detail::qmm_precision_state.load(std::memory_order_relaxed);
  if (v >= 0) return static_cast<QmmPrecision>(v);
  const char* env = std::getenv("LOOM_QMM");
  QmmPrecision p = env && *env ? parse_qmm_precision(env, "LOOM_QMM") : QmmPrecision::fast;
  int expected = -1;  // a concurrent set_qmm_precision wins over the environment
  detail::qmm_precision_state.compare_exchange_strong(expected, static_cast<int>(p));
  return static_cast<QmmPrecision>(detail::qmm_precision_state.load());
}

// Sets the precision for its lifetime and restores the previous one (tests).
class ScopedQmmPrecision {
 public:
  explicit ScopedQmmPrecision(QmmPrecision p) : prev_(qmm_precision()) { set_qmm_precision(p); }
  ~ScopedQmmPrecision() { set_qmm_precision(prev_); }
  ScopedQmmPrecision(const ScopedQmmPrecision&) = delete;
  ScopedQmmPrecision& operator=(const ScopedQmmPrecision&) = delete;

 private:
  QmmPrecision prev_;
};

namespace detail {
// Slow twin of quantized_matmul: dequantize to f32, then matmul (the test oracle).
Array quantized_matmul_reference(const Array& x, const Array& wq, const Array& scales, const Array& biases,
                                 bool transpose, const QuantSpec& spec, const Array& global_scale = {});
}  // namespace detail

}  // namespace loom
