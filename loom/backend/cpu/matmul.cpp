// Matrix multiplication on the CPU.
//  - f32 x f32: OpenBLAS sgemm per batch entry, called from this thread (never inside the pool).
//  - f32 activations x bf16/f16 weights: for few rows (decode) a bandwidth-bound kernel reads the
//    half weights once and converts in registers, split over the pool by output column; for many rows
//    (prefill) weight panels are converted to f32 in a bounded scratch buffer and fed to sgemm — the
//    model is never held in f32.
//  - bf16/f16 activations: computed in f32 and rounded once at the end.
#include <algorithm>
#include <cstring>
#include <vector>

#include "loom/backend/cpu/blas.h"
#include "loom/backend/cpu/kernels.h"
#include "loom/backend/cpu/simd.h"
#include "loom/backend/product_group.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {

// A 2-D operand view: element (r, c) at ptr[r * rs + c * cs]; exactly one of rs/cs is 1.
struct Mat {
  const uint8_t* ptr;
  int64_t rs, cs;
  Dtype dt;
  bool row_major() const { return cs == 1; }
  int64_t ld() const { return cs == 1 ? rs : cs; }
};

void sgemm(const float* a, bool a_rm, int64_t lda, const float* b, bool b_rm, int64_t ldb, float* c,
           int64_t m, int64_t n, int64_t k, int64_t ldc) {
  blas_threads_once();
  cblas_sgemm(CblasRowMajor, a_rm ? CblasNoTrans : CblasTrans, b_rm ? CblasNoTrans : CblasTrans, m, n, k, 1.0f, a, lda, b,
              ldb, 0.0f, c, ldc);
}

// out[m, n] = sum_k a[m, k] * W[n, k], W half precision with rows of length k (ldw apart).
void gemv_half(const float* a, int64_t m, int64_t k, const uint16_t* w, int64_t ldw, bool bf16, float* out,
               int64_t n, int64_t ldo) {
  int64_t grain = std::max<int64_t>(4, 4096 * 16 / std::max<int64_t>(1, k));
  parallel_for(n, grain, [&](int64_t b, int64_t e) {
    for (int64_t j = b; j < e; ++j) {
      const uint16_t* wr = w + j * ldw;
      for (int64_t i = 0; i < m; ++i) out[i * ldo + j] = dot_half(a + i * k, wr, k, bf16);
    }
  });
}

// Contiguous f32 copy of a (m x k) view.
std::vector<float> to_f32(const Mat& x, int64_t rows, int64_t cols) {
  std::vector<float> v(rows * cols);
  if (x.row_major()) {
    for (int64_t r = 0; r < rows; ++r)
      convert_span(x.ptr + r * x.rs * size_of(x.dt), x.dt, v.data() + r * cols, Dtype::f32, cols);
  } else {
    std::vector<float> col(rows);
    for (int64_t c = 0; c < cols; ++c) {
      convert_span(x.ptr + c * x.cs * size_of(x.dt), x.dt, col.data(), Dtype::f32, rows);
      for (int64_t r = 0; r < rows; ++r) v[r * cols + c] = col[r];
    }
  }
  return v;
}

// One [m, k] x [k, n] product into f32 out (ldo = n).
void matmul_2d(const Mat& a, const Mat& b, float* out, int64_t m, int64_t n, int64_t k) {
  // Activations as f32, row-major.
  std::vector<float> a_tmp;
  const float* af;
  int64_t lda;
  bool a_rm;
  if (a.dt == Dtype::f32) {
    af = reinterpret_cast<const float*>(a.ptr);
    a_rm = a.row_major();
    lda = a.ld();
  } else {
    a_tmp = to_f32(a, m, k);
    af = a_tmp.data();
    a_rm = true;
    lda = k;
  }
  if (b.dt == Dtype::f32) {
    sgemm(af, a_rm, lda, reinterpret_cast<const float*>(b.ptr), b.row_major(), b.ld(), out, m, n, k, n);
    return;
  }
  bool bf16 = b.dt == Dtype::bf16;
  // b is [k, n]; when it is a transposed view of W [n, k] row-major, rows of W are contiguous.
  bool w_rows = !b.row_major();
  if (w_rows && m <= 8) {
    if (!a_rm || lda != k) {
      a_tmp = to_f32(Mat{reinterpret_cast<const uint8_t*>(af), a_rm ? lda : 1, a_rm ? 1 : lda, Dtype::f32}, m, k);
      af = a_tmp.data();
    }
    gemv_half(af, m, k, reinterpret_cast<const uint16_t*>(b.ptr), b.cs, bf16, out, n, n);
    return;
  }
  // Panels of the weight converted to f32 (at most ~16 MB at a time), multiplied by sgemm.
  int64_t panel = std::max<int64_t>(64, (int64_t{4} << 20) / std::max<int64_t>(1, k));
  panel = std::min(panel, n);
  std::vector<float> wp(panel * k);
  for (int64_t j0 = 0; j0 < n; j0 += panel) {
    int64_t nb = std::min(panel, n - j0);
    // wp holds W[j0:j0+nb, :] as [nb, k] row-major.
    parallel_for(nb, 16, [&](int64_t s, int64_t e) {
      for (int64_t j = s; j < e; ++j) {
        if (w_rows) {
          convert_span(b.ptr + (j0 + j) * b.cs * 2, b.dt, wp.data() + j * k, Dtype::f32, k);
        } else {
          for (int64_t kk = 0; kk < k; ++kk) {
            uint16_t v;
            std::memcpy(&v, b.ptr + (kk * b.rs + (j0 + j)) * 2, 2);
            wp[j * k + kk] = bf16 ? bf16_to_float(v) : f16_to_float(v);
          }
        }
      }
    });
    sgemm(af, a_rm, lda, wp.data(), /*b_rm=*/false, k, out + j0, m, nb, k, n);
  }
}

}  // namespace

void matmul(const Array& a, const Array& b, Array& out) {
  int nd = out.ndim();
  int64_t m = a.shape(-2), k = a.shape(-1), n = b.shape(-1);
  int64_t batch = out.size() / std::max<int64_t>(1, m * n);
  bool out_f32 = out.dtype() == Dtype::f32;
  std::vector<float> out_tmp;
  float* of = out_f32 ? out.data<float>() : (out_tmp.resize(out.size()), out_tmp.data());
  if (k == 0) std::fill(of, of + out.size(), 0.0f);
  for (int64_t bi = 0; bi < batch && k > 0; ++bi) {
    // Offsets of batch entry bi in a and b (batch dims already broadcast to out's).
    int64_t ao = 0, bo = 0, r = bi;
    for (int d = nd - 3; d >= 0; --d) {
      int64_t i = r % out.shape()[d];
      r /= out.shape()[d];
      ao += i * a.strides()[d];
      bo += i * b.strides()[d];
    }
    Mat am{static_cast<const uint8_t*>(a.raw_data()) + ao * static_cast<int64_t>(a.itemsize()), a.strides()[nd - 2],
           a.strides()[nd - 1], a.dtype()};
    Mat bm{static_cast<const uint8_t*>(b.raw_data()) + bo * static_cast<int64_t>(b.itemsize()), b.strides()[nd - 2],
           b.strides()[nd - 1], b.dtype()};
    // A degenerate dim (one row or one column) may carry any stride; give BLAS a legal leading dim.
    if (am.cs == 1 && am.rs < k) am.rs = k;
    if (bm.cs == 1 && bm.rs < n) bm.rs = n;
    if (bm.cs != 1 && bm.cs < k) bm.cs = k;
    matmul_2d(am, bm, of + bi * m * n, m, n, k);
  }
  if (!out_f32) convert_span(out_tmp.data(), Dtype::f32, out.raw_data(), out.dtype(), out.size());
}

// The products one by one (each is one parallel pass already).
void matmul_t_group(const Array& x, const std::vector<Array>& ws, bool swiglu, std::vector<Array>& outs) {
  run_product_group(
      ws.size(), swiglu, outs,
      [&](size_t i, Array& out) {
        const Array& w = ws[i];
        matmul(x, Array(w.buffer(), Shape{w.shape(1), w.shape(0)}, Strides{1, w.shape(1)}, w.offset(), w.dtype()),
               out);
      },
      [](const Array& g, const Array& u, Array& out) { loom::cpu::swiglu(g, u, out); });
}

}  // namespace loom::cpu
