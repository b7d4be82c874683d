// quantize / dequantize / quantized_matmul: validation with MLX's rules and messages, output
// allocation, device switch. The kernels live in backend/cpu/quantized.cpp.
#include "loom/ops/quantized.h"

#include "loom/backend/cpu/kernels.h"
#include "loom/common/error.h"
#include "loom/ops/dispatch.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"

namespace loom {
using ops_detail::device_of;

namespace {

void check_spec(const QuantSpec& q, const char* op) {
  if (quant_spec_valid(q)) return;
  if (q.mode == QuantMode::affine)
    throw ValueError(format_error(op, "affine quantization supports bits 2, 3, 4, 5, 6, 8 and group sizes 32, 64, 128; got " +
                                          quant_spec_str(q)));
  QuantSpec d = default_quant_spec(q.mode);
  throw ValueError(format_error(op, std::string(quant_mode_name(q.mode)) + " requires bits=" + std::to_string(d.bits) +
                                        " and group_size=" + std::to_string(d.group_size) + "; got " + quant_spec_str(q)));
}

float global_scale_value(const Array& g, const QuantSpec& q, const char* op) {
  if (!g.valid()) return 0.0f;
  if (q.mode != QuantMode::nvfp4) throw ValueError(format_error(op, "a global scale is only supported for nvfp4"));
  if (g.size() != 1 || g.dtype() != Dtype::f32)
    throw ValueError(format_error(op, "the global scale must be a float32 scalar, got " + std::string(name(g.dtype())) +
                                          " " + shape_str(g.shape())));
  return g.item<float>();
}

// Checks wq/scales/biases against each other and the spec (MLX's validate_quantized_input).
void check_packed(const Array& wq, const Array& scales, const Array& biases, const QuantSpec& q, const char* op) {
  ops_detail::require_valid(wq, op, "the packed matrix");
  ops_detail::require_valid(scales, op, "scales");
  check_spec(q, op);
  if (wq.dtype() != Dtype::u32)
    throw ValueError(format_error(op, "the packed matrix must be uint32, got " + std::string(name(wq.dtype()))));
  if (wq.ndim() < 2) throw ValueError(format_error(op, "the packed matrix must have at least 2 dimensions, got " + shape_str(wq.shape())));
  if (q.mode == QuantMode::affine) {
    if (!biases.valid()) throw ValueError(format_error(op, "biases must be provided for affine quantization"));
    if (!is_floating(scales.dtype()) || !is_floating(biases.dtype()))
      throw ValueError(format_error(op, "affine scales and biases must be floating, got " + std::string(name(scales.dtype())) +
                                            " and " + std::string(name(biases.dtype()))));
    if (biases.shape() != scales.shape())
      throw ValueError(format_error(op, "scales and biases must have the same shape, got " + shape_str(scales.shape()) +
                                            " and " + shape_str(biases.shape())));
  } else {
    if (biases.valid())
      throw ValueError(format_error(op, "biases must be empty for " + std::string(quant_mode_name(q.mode)) + " quantization"));
    if (scales.dtype() != Dtype::u8)
      throw ValueError(format_error(op, "scales must be uint8 for " + std::string(quant_mode_name(q.mode)) + ", got " +
                                            std::string(name(scales.dtype()))));
  }
  Shape ws(wq.shape().begin(), wq.shape().end() - 1), ss(scales.shape().begin(), scales.shape().end() - 1);
  if (scales.ndim() != wq.ndim() || ws != ss || wq.shape(-1) * 32 != scales.shape(-1) * q.group_size * q.bits)
    throw ValueError(format_error(op, "packed matrix " + shape_str(wq.shape()) + " and scales " + shape_str(scales.shape()) +
                                          " do not fit " + quant_spec_str(q) + " (expected scales [..., " +
                                          std::to_string(wq.shape(-1) * 32 / q.bits / q.group_size) + "])"));
  device_of({&wq, &scales, &biases}, op);
}

}  // namespace

QuantizedArrays quantize(const Array& w_in, const QuantSpec& spec, const Array& global_scale, StreamOrDevice) {
  ops_detail::require_valid(w_in, "quantize", "the matrix");
  check_spec(spec, "quantize");
  device_of({&w_in}, "quantize");
  if (!is_floating(w_in.dtype()))
    throw ValueError(format_error("quantize", "only floating point matrices can be quantized, got " + std::string(name(w_in.dtype()))));
  if (w_in.ndim() < 2)
    throw ValueError(format_error("quantize", "the matrix must have at least 2 dimensions, got " + shape_str(w_in.shape())));
  if (w_in.shape(-1) % spec.group_size != 0)
    throw ValueError(format_error("quantize", "the last dimension of " + shape_str(w_in.shape()) +
                                                  " is not divisible by the group size " + std::to_string(spec.group_size)));
  float g = global_scale_value(global_scale, spec, "quantize");
  Array w = is_compute_dtype(w_in.dtype()) ? contiguous(w_in) : astype(w_in, Dtype::f32);
  Shape wqs = w.shape(), ss = w.shape();
  wqs.back() = w.shape(-1) * spec.bits / 32;
  ss.back() = w.shape(-1) / spec.group_size;
  QuantizedArrays out;
  out.wq = Array::empty(wqs, Dtype::u32, w.device());
  bool affine = spec.mode == QuantMode::affine;
  out.scales = Array::empty(ss, affine ? w.dtype() : Dtype::u8, w.device());
  if (affine) out.biases = Array::empty(ss, w.dtype(), w.device());
  LOOM_KERNEL(w.device(), quantize)(w, spec, g, out.wq, out.scales, out.biases);
  return out;
}

Array dequantize(const Array& wq, const Array& scales_in, const Array& biases_in, const QuantSpec& spec,
                 std::optional<Dtype> dtype, const Array& global_scale, StreamOrDevice) {
  check_packed(wq, scales_in, biases_in, spec, "dequantize");
  float g = global_scale_value(global_scale, spec, "dequantize");
  bool affine = spec.mode == QuantMode::affine;
  Dtype sdt = affine ? promote_types(scales_in.dtype(), biases_in.dtype()) : Dtype::bf16;
  Dtype odt = dtype.value_or(sdt);
  if (!is_floating(odt) || !is_compute_dtype(odt))
    throw ValueError(format_error("dequantize", "output dtype must be float32, float16 or bfloat16, got " + std::string(name(odt))));
  Array scales = affine ? contiguous(astype(scales_in, sdt)) : contiguous(scales_in);
  Array biases = affine ? contiguous(astype(biases_in, sdt)) : Array();
  Shape os = wq.shape();
  os.back() = wq.shape(-1) * 32 / spec.bits;
  Array out = Array::empty(os, odt, wq.device());
  LOOM_KERNEL(out.device(), dequantize)(contiguous(wq), scales, biases, spec, g, out);
  return out;
}

namespace {

// quantized_matmul's operands validated and made ready for the kernel, with the output's shape and dtype.
struct QmmCall {
  Array x;
  QuantizedOperand w;
  Shape out_shape;
  Dtype out_dtype;
};

QmmCall prepare_qmm(const Array& x_in, const Array& wq_in, const Array& scales_in, const Array& biases_in, bool transpose,
                    const QuantSpec& spec, const Array& global_scale, const char* op) {
  ops_detail::require_valid(x_in, op, "x");
  check_packed(wq_in, scales_in, biases_in, spec, op);
  device_of({&x_in, &wq_in}, op);
  float g = global_scale_value(global_scale, spec, op);
  if (wq_in.ndim() != 2)
    throw NotSupportedError(format_error(op, "only a 2-d quantized matrix is supported, got " + shape_str(wq_in.shape()) +
                                                 " (use gather_qmm for stacks)"));
  if (x_in.ndim() < 1) throw ValueError(format_error(op, "x must have at least 1 dimension"));
  int64_t k_full = wq_in.shape(-1) * 32 / spec.bits;
  int64_t inner = transpose ? k_full : wq_in.shape(0), outer = transpose ? wq_in.shape(0) : k_full;
  if (x_in.shape(-1) != inner)
    throw ValueError(format_error(op, "last dimension of x " + shape_str(x_in.shape()) + " does not match the expanded quantized matrix (" +
                                          std::to_string(inner) + ", " + std::to_string(outer) + ") of packed shape " +
                                          shape_str(wq_in.shape()) + " with " + quant_spec_str(spec) +
                                          " and transpose=" + (transpose ? "true" : "false")));
  Dtype odt = spec.mode == QuantMode::affine ? promote_types(x_in.dtype(), promote_types(scales_in.dtype(), biases_in.dtype()))
                                             : x_in.dtype();
  if (!is_floating(odt) || !is_compute_dtype(odt))
    throw ValueError(format_error(op, "only floating point activations are supported, got " + std::string(name(x_in.dtype()))));
  bool affine = spec.mode == QuantMode::affine;
  // The kernels take f32/bf16/f16 activations and scales as stored (no per-call conversion of the
  // model's scales); affine scales and biases share one dtype.
  if (!is_floating(x_in.dtype()) || !is_compute_dtype(x_in.dtype()))
    throw ValueError(format_error(op, "activations must be float32, bfloat16 or float16, got " + std::string(name(x_in.dtype()))));
  Dtype sdt = affine && is_compute_dtype(scales_in.dtype()) && is_floating(scales_in.dtype()) ? scales_in.dtype() : Dtype::f32;
  QmmCall c;
  c.x = contiguous(x_in);
  c.w.wq = contiguous(wq_in);
  c.w.scales = affine ? contiguous(astype(scales_in, sdt)) : contiguous(scales_in);
  c.w.biases = affine ? contiguous(astype(biases_in, sdt)) : Array();
  c.w.spec = spec;
  c.w.global_scale = g;
  c.out_shape = x_in.shape();
  c.out_shape.back() = outer;
  c.out_dtype = odt;
  return c;
}

QmmCall prepare_qmm_t(const Array& x, const QuantizedMatrix& w, const char* op) {
  return prepare_qmm(x, w.wq, w.scales, w.biases, /*transpose=*/true, w.spec, w.global_scale, op);
}

// Whether the products can go to the kernel as one group: one spec, K, scale dtype and output dtype.
bool same_format(const std::vector<QmmCall>& calls) {
  for (const QmmCall& c : calls) {
    const QmmCall& f = calls.front();
    if (!(c.w.spec == f.w.spec) || c.w.wq.shape(-1) != f.w.wq.shape(-1) || c.w.scales.dtype() != f.w.scales.dtype() ||
        c.out_dtype != f.out_dtype)
      return false;
  }
  return true;
}

}  // namespace

Array quantized_matmul(const Array& x_in, const Array& wq_in, const Array& scales_in, const Array& biases_in, bool transpose,
                       const QuantSpec& spec, const Array& global_scale, StreamOrDevice) {
  QmmCall c = prepare_qmm(x_in, wq_in, scales_in, biases_in, transpose, spec, global_scale, "quantized_matmul");
  Array out = Array::empty(c.out_shape, c.out_dtype, c.w.wq.device());
  LOOM_KERNEL(out.device(), quantized_matmul)(c.x, c.w.wq, c.w.scales, c.w.biases, transpose, spec, c.w.global_scale, out);
  return out;
}

std::vector<Array> quantized_matmuls(const Array& x, const std::vector<QuantizedMatrix>& ws, StreamOrDevice) {
  std::vector<QmmCall> calls;
  for (const QuantizedMatrix& w : ws) calls.push_back(prepare_qmm_t(x, w, "quantized_matmul"));
  std::vector<Array> outs;
  for (const QmmCall& c : calls) outs.push_back(Array::empty(c.out_shape, c.out_dtype, c.w.wq.device()));
  if (calls.empty()) return outs;
  if (!same_format(calls)) {
    for (size_t i = 0; i < calls.size(); ++i)
      LOOM_KERNEL(outs[i].device(), quantized_matmul)(calls[i].x, calls[i].w.wq, calls[i].w.scales, calls[i].w.biases,
                                                     true, calls[i].w.spec, calls[i].w.global_scale, outs[i]);
    return outs;
  }
  std::vector<QuantizedOperand> ops;
  for (const QmmCall& c : calls) ops.push_back(c.w);
  LOOM_KERNEL(outs[0].device(), quantized_matmul_group)(calls[0].x, ops, false, outs);
  return outs;
}

Array quantized_swiglu(const Array& x, const QuantizedMatrix& gate, const QuantizedMatrix& up, StreamOrDevice) {
  std::vector<QmmCall> calls{prepare_qmm_t(x, gate, "quantized_swiglu"), prepare_qmm_t(x, up, "quantized_swiglu")};
  if (calls[0].out_shape != calls[1].out_shape)
    throw ValueError(format_error("quantized_swiglu", "gate " + shape_str(calls[0].out_shape) + " and up " +
                                                          shape_str(calls[1].out_shape) + " products differ in shape"));
  if (!same_format(calls)) {
    std::vector<Array> gu = quantized_matmuls(x, {gate, up});
    return fast::swiglu(gu[0], gu[1]);
  }
  std::vector<Array> outs{Array::empty(calls[0].out_shape, calls[0].out_dtype, calls[0].w.wq.device())};
  LOOM_KERNEL(outs[0].device(), quantized_matmul_group)(calls[0].x, {calls[0].w, calls[1].w}, true, outs);
  return outs[0];
}

namespace detail {
Array quantized_matmul_reference(const Array& x, const Array& wq, const Array& scales, const Array& biases, bool transpose,
                                 const QuantSpec& spec, const Array& global_scale) {
  Array w = dequantize(wq, spec.mode == QuantMode::affine ? astype(scales, Dtype::f32) : scales,
                       spec.mode == QuantMode::affine ? astype(biases, Dtype::f32) : biases, spec, Dtype::f32, global_scale);
  Array y = matmul(astype(x, Dtype::f32), transpose ? loom::transpose(w) : w);
  Dtype odt = spec.mode == QuantMode::affine ? promote_types(x.dtype(), promote_types(scales.dtype(), biases.dtype())) : x.dtype();
  return odt == Dtype::f32 ? y : astype(y, odt);
}
}  // namespace detail

}  // namespace loom
