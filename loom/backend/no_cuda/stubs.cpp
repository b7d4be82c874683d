// CUDA entry points of a build without CUDA (LOOM_CUDA=OFF): no runtime, no
// devices, and every kernel throws NotSupportedError. loom_ops never reaches a
// kernel here, because no Array can live on a CUDA device without a runtime;
// the stubs only keep every folder outside backend/ free of #if.
#include "loom/backend/cuda/kernels.h"
#include "loom/backend/cuda/runtime.h"
#include "loom/common/error.h"

namespace loom::cuda {
namespace {
[[noreturn]] void unavailable(const char* op) {
  throw NotSupportedError(format_error(op, "this build has no CUDA backend (configure with -DLOOM_CUDA=ON)"));
}
}  // namespace

DeviceRuntime* runtime() { return nullptr; }
int device_count() { return 0; }
std::string device_name(int) { unavailable("cuda::device_name"); }
void memory_info(int, size_t&, size_t&) { unavailable("cuda::memory_info"); }

void copy(const Array& in, Array& out) { unavailable("copy"); }
void copy_into(const Array& in, Array& out) { unavailable("copy_into"); }
void copy_into_at(const Array&, Array&, const Array&, int64_t, int64_t, int64_t) { unavailable("copy_into_at"); }
void fill(Array& out, double value) { unavailable("fill"); }
void arange(Array& out, double start, double step) { unavailable("arange"); }
void unary(UnaryOp op, const Array& in, Array& out) { unavailable("unary"); }
void binary(BinaryOp op, const Array& a, const Array& b, Array& out) { unavailable("binary"); }
void where(const Array& cond, const Array& a, const Array& b, Array& out) { unavailable("where"); }
void reduce_last(ReduceOp op, const Array& in, Array& out) { unavailable("reduce_last"); }
void arg_reduce_last(ArgReduceOp op, const Array& in, Array& out) { unavailable("arg_reduce_last"); }
void softmax_last(const Array& in, Array& out) { unavailable("softmax_last"); }
void logsumexp_last(const Array& in, Array& out) { unavailable("logsumexp_last"); }
void matmul(const Array& a, const Array& b, Array& out) { unavailable("matmul"); }
void take_rows(const Array& table, const Array& indices, Array& out) { unavailable("take_rows"); }
void rms_norm(const Array& x, const Array& weight, float eps, Array& out) { unavailable("rms_norm"); }
void add_rms_norm(const Array& x, const Array& residual, const Array& weight, float eps, Array& out, Array& sum) {
  unavailable("add_rms_norm");
}
void layer_norm(const Array& x, const Array& weight, const Array& bias, float eps, Array& out) {
  unavailable("layer_norm");
}
void rope(const Array& x, const RopeSpec& spec, int64_t offset, const Array& offsets, Array& out) {
  unavailable("rope");
}
void rope_kv_write(const Array&, const Array&, const Array&, const RopeSpec&, const Array&, const Array&, int64_t,
                   int64_t, int64_t, Array&, Array&, Array&) {
  unavailable("rope_kv_write");
}
void swiglu(const Array& gate, const Array& up, Array& out) { unavailable("swiglu"); }
void attention(const Array& q, const std::vector<Array>& k_blocks, const std::vector<Array>& v_blocks, int64_t kv_len,
               const AttentionSpec& spec, const AttentionPositions& pos, const Array& mask, Array& out) {
  unavailable("attention");
}
void gather_mm(const Array& a, const Array& b, const Array& lhs, const Array& rhs, Array& out) {
  unavailable("gather_mm");
}
void gather_qmm(const Array& x, const Array& wq, const Array& scales, const Array& biases, const Array& lhs,
                const Array& rhs, bool transpose, const QuantSpec& spec, float global_scale, Array& out) {
  unavailable("gather_qmm");
}
void argpartition_last(const Array& in, int64_t kth, Array& out) { unavailable("argpartition_last"); }
void cumsum_last(const Array& in, bool reverse, bool inclusive, Array& out) { unavailable("cumsum_last"); }
void random_uniform(uint64_t key, Array& out) { unavailable("random_uniform"); }
void scatter_last(const Array& indices, const Array& values, bool add, Array& out) { unavailable("scatter_last"); }
int64_t queue_readback(const Array& src) { unavailable("queue_readback"); }
void finish_readback(int64_t ticket, Array& dst) { unavailable("finish_readback"); }
void quantize(const Array& w, const QuantSpec& spec, float global_scale, Array& wq, Array& scales, Array& biases) {
  unavailable("quantize");
}
void dequantize(const Array& wq, const Array& scales, const Array& biases, const QuantSpec& spec, float global_scale,
                Array& out) {
  unavailable("dequantize");
}
void quantized_matmul(const Array& x, const Array& wq, const Array& scales, const Array& biases, bool transpose,
                      const QuantSpec& spec, float global_scale, Array& out) {
  unavailable("quantized_matmul");
}
void matmul_t_group(const Array& x, const std::vector<Array>& ws, bool swiglu, std::vector<Array>& outs) {
  unavailable("matmul_t_group");
}
void quantized_matmul_group(const Array& x, const std::vector<QuantizedOperand>& ws, bool swiglu,
                            std::vector<Array>& outs) {
  unavailable("quantized_matmul_group");
}
void causal_conv1d(const Array& x, const Array& weight, const Array& bias, const Array& state,
                   const Array& left_padding, Array& y, Array& state_out) {
  unavailable("causal_conv1d");
}
void selective_scan(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm, const Array& D,
                    const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  unavailable("selective_scan");
}
void ssd_scan(const Array& x, const Array& dt, const Array& A, const Array& Bm, const Array& Cm, const Array& D,
              const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  unavailable("ssd_scan");
}
void gated_delta_rule(const Array& q, const Array& k, const Array& v, const Array& g, const Array& beta,
                      const Array& state, const Array& left_padding, Array& y, Array& state_out) {
  unavailable("gated_delta_rule");
}
void linear_scan(const Array& a, const Array& x, const Array& state, const Array& left_padding, Array& y,
                 Array& state_out) {
  unavailable("linear_scan");
}

}  // namespace loom::cuda
