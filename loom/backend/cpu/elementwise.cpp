// Elementwise kernels. Each innermost row is loaded into a float (floating dtypes) or int64
// (integers, bool) scratch buffer, computed with one switch per row, and stored with conversion —
// one code path for every dtype without instantiating op x dtype templates.
#include <cmath>
#include <cstring>

#include "loom/backend/cpu/kernels.h"
#include "loom/backend/cpu/simd.h"
#include "loom/backend/cpu/strided.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {

constexpr int64_t kChunk = 512;

template <typename C>
void load_row(const uint8_t* base, Dtype dt, int64_t stride, int64_t n, C* out) {
  size_t isz = size_of(dt);
  constexpr Dtype cdt = std::is_same_v<C, float> ? Dtype::f32 : Dtype::i64;
  if (stride == 1) {
    convert_span(base, dt, out, cdt, n);
    return;
  }
  if (stride == 0) {
    convert_span(base, dt, out, cdt, 1);
    for (int64_t i = 1; i < n; ++i) out[i] = out[0];
    return;
  }
  uint8_t tmp[kChunk * 8];
  for (int64_t i = 0; i < n; ++i) std::memcpy(tmp + i * isz, base + i * stride * static_cast<int64_t>(isz), isz);
  convert_span(tmp, dt, out, cdt, n);
}

template <typename C>
void store_row(const C* in, uint8_t* base, Dtype dt, int64_t stride, int64_t n) {
  constexpr Dtype cdt = std::is_same_v<C, float> ? Dtype::f32 : Dtype::i64;
  if (stride == 1) {
    convert_span(in, cdt, base, dt, n);
    return;
  }
  size_t isz = size_of(dt);
  uint8_t tmp[kChunk * 8];
  convert_span(in, cdt, tmp, dt, n);
  for (int64_t i = 0; i < n; ++i) std::memcpy(base + i * stride * static_cast<int64_t>(isz), tmp + i * isz, isz);
}

float gelu_exact(float x) { return 0.5f * x * (1.0f + std::erf(x * 0.70710678118654752f)); }
float gelu_tanh(float x) {
  return 0.5f * x * (1.0f + std::tanh(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}

template <typename C>
void apply_unary(UnaryOp op, const C* x, C* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    C v = x[i];
    C r;
    switch (op) {
      case UnaryOp::negative: r = -v; break;
      case UnaryOp::abs: r = v < 0 ? -v : v; break;
      case UnaryOp::square: r = v * v; break;
      case UnaryOp::logical_not: r = v == 0; break;
      case UnaryOp::sign: r = (v > 0) - (v < 0); break;
      default: {
        float f = static_cast<float>(v), o;
        switch (op) {
          case UnaryOp::exp: o = std::exp(f); break;
          case UnaryOp::log: o = std::log(f); break;
          case UnaryOp::log1p: o = std::log1p(f); break;
          case UnaryOp::sqrt: o = std::sqrt(f); break;
          case UnaryOp::rsqrt: o = 1.0f / std::sqrt(f); break;
          case UnaryOp::sin: o = std::sin(f); break;
          case UnaryOp::cos: o = std::cos(f); break;
          case UnaryOp::tanh: o = std::tanh(f); break;
          case UnaryOp::sigmoid: o = 1.0f / (1.0f + std::exp(-f)); break;
          case UnaryOp::erf: o = std::erf(f); break;
          case UnaryOp::silu: o = f / (1.0f + std::exp(-f)); break;
          case UnaryOp::gelu: o = gelu_exact(f); break;
          case UnaryOp::gelu_approx: o = gelu_tanh(f); break;
          case UnaryOp::relu: o = f > 0 ? f : 0; break;
          case UnaryOp::softplus: o = f > 20 ? f : std::log1p(std::exp(f)); break;
          case UnaryOp::floor: o = std::floor(f); break;
          case UnaryOp::ceil: o = std::ceil(f); break;
          case UnaryOp::round: o = std::nearbyint(f); break;
          case UnaryOp::reciprocal: o = 1.0f / f; break;
          default: o = f;
        }
        r = static_cast<C>(o);
      }
    }
    y[i] = r;
  }
}

template <typename C>
C floor_mod(C a, C b) {
  if constexpr (std::is_same_v<C, float>) {
    C r = std::fmod(a, b);
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
  } else {
    if (b == 0) return 0;
    C r = a % b;
    return (r != 0 && ((r < 0) != (b < 0))) ? r + b : r;
  }
}

template <typename C>
void apply_binary(BinaryOp op, const C* a, const C* b, C* y, int64_t n) {
  switch (op) {
    case BinaryOp::add: for (int64_t i = 0; i < n; ++i) y[i] = a[i] + b[i]; break;
    case BinaryOp::subtract: for (int64_t i = 0; i < n; ++i) y[i] = a[i] - b[i]; break;
    case BinaryOp::multiply: for (int64_t i = 0; i < n; ++i) y[i] = a[i] * b[i]; break;
    case BinaryOp::divide:
      for (int64_t i = 0; i < n; ++i) {
        if constexpr (std::is_same_v<C, float>) y[i] = a[i] / b[i];
        else y[i] = b[i] == 0 ? 0 : a[i] / b[i];
      }
      break;
    case BinaryOp::maximum: for (int64_t i = 0; i < n; ++i) y[i] = a[i] > b[i] ? a[i] : b[i]; break;
    case BinaryOp::minimum: for (int64_t i = 0; i < n; ++i) y[i] = a[i] < b[i] ? a[i] : b[i]; break;
    case BinaryOp::power:
      for (int64_t i = 0; i < n; ++i)
        y[i] = static_cast<C>(std::pow(static_cast<double>(a[i]), static_cast<double>(b[i])));
      break;
    case BinaryOp::equal: for (int64_t i = 0; i < n; ++i) y[i] = a[i] == b[i]; break;
    case BinaryOp::not_equal: for (int64_t i = 0; i < n; ++i) y[i] = a[i] != b[i]; break;
    case BinaryOp::less: for (int64_t i = 0; i < n; ++i) y[i] = a[i] < b[i]; break;
    case BinaryOp::less_equal: for (int64_t i = 0; i < n; ++i) y[i] = a[i] <= b[i]; break;
    case BinaryOp::greater: for (int64_t i = 0; i < n; ++i) y[i] = a[i] > b[i]; break;
    case BinaryOp::greater_equal: for (int64_t i = 0; i < n; ++i) y[i] = a[i] >= b[i]; break;
    case BinaryOp::logical_and: for (int64_t i = 0; i < n; ++i) y[i] = (a[i] != 0) && (b[i] != 0); break;
    case BinaryOp::logical_or: for (int64_t i = 0; i < n; ++i) y[i] = (a[i] != 0) || (b[i] != 0); break;
  }
}

// Runs fn over chunks of at most kChunk elements of every innermost row.
template <size_t N, typename F>
void for_chunks(const StridedLoop<N>& loop, F&& fn) {
  int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, loop.inner()));
  parallel_for(loop.rows(), grain, [&](int64_t b, int64_t e) {
    loop.for_rows(b, e, [&](const std::array<int64_t, N>& off, int64_t n, const std::array<int64_t, N>& st) {
      for (int64_t s = 0; s < n; s += kChunk) {
        std::array<int64_t, N> o = off;
        for (size_t k = 0; k < N; ++k) o[k] += s * st[k];
        fn(o, std::min(kChunk, n - s), st);
      }
    });
  });
}

bool compute_in_float(Dtype dt) { return is_floating(dt); }

}  // namespace

void unary(UnaryOp op, const Array& in, Array& out) {
  StridedLoop<2> loop(out.shape(), {&in.strides(), &out.strides()});
  auto* ib = static_cast<const uint8_t*>(in.raw_data());
  auto* ob = static_cast<uint8_t*>(out.raw_data());
  int64_t isz = in.itemsize(), osz = out.itemsize();
  bool fl = compute_in_float(in.dtype()) || compute_in_float(out.dtype());
  for_chunks(loop, [&](const std::array<int64_t, 2>& o, int64_t n, const std::array<int64_t, 2>& st) {
    if (fl) {
      float x[kChunk], y[kChunk];
      load_row(ib + o[0] * isz, in.dtype(), st[0], n, x);
      apply_unary(op, x, y, n);
      store_row(y, ob + o[1] * osz, out.dtype(), st[1], n);
    } else {
      int64_t x[kChunk], y[kChunk];
      load_row(ib + o[0] * isz, in.dtype(), st[0], n, x);
      apply_unary(op, x, y, n);
      store_row(y, ob + o[1] * osz, out.dtype(), st[1], n);
    }
  });
}

void binary(BinaryOp op, const Array& a, const Array& b, Array& out) {
  StridedLoop<3> loop(out.shape(), {&a.strides(), &b.strides(), &out.strides()});
  auto* ab = static_cast<const uint8_t*>(a.raw_data());
  auto* bb = static_cast<const uint8_t*>(b.raw_data());
  auto* ob = static_cast<uint8_t*>(out.raw_data());
  int64_t asz = a.itemsize(), bsz = b.itemsize(), osz = out.itemsize();
  // A float output from integer inputs (int / int is true division) must be computed in float too.
  bool fl = compute_in_float(a.dtype()) || compute_in_float(b.dtype()) || compute_in_float(out.dtype());
  for_chunks(loop, [&](const std::array<int64_t, 3>& o, int64_t n, const std::array<int64_t, 3>& st) {
    if (fl) {
      float x[kChunk], z[kChunk], y[kChunk];
      load_row(ab + o[0] * asz, a.dtype(), st[0], n, x);
      load_row(bb + o[1] * bsz, b.dtype(), st[1], n, z);
      apply_binary(op, x, z, y, n);
      store_row(y, ob + o[2] * osz, out.dtype(), st[2], n);
    } else {
      int64_t x[kChunk], z[kChunk], y[kChunk];
      load_row(ab + o[0] * asz, a.dtype(), st[0], n, x);
      load_row(bb + o[1] * bsz, b.dtype(), st[1], n, z);
      apply_binary(op, x, z, y, n);
      store_row(y, ob + o[2] * osz, out.dtype(), st[2], n);
    }
  });
}

void where(const Array& cond, const Array& a, const Array& b, Array& out) {
  StridedLoop<4> loop(out.shape(), {&cond.strides(), &a.strides(), &b.strides(), &out.strides()});
  auto* cb = static_cast<const uint8_t*>(cond.raw_data());
  auto* ab = static_cast<const uint8_t*>(a.raw_data());
  auto* bb = static_cast<const uint8_t*>(b.raw_data());
  auto* ob = static_cast<uint8_t*>(out.raw_data());
  int64_t csz = cond.itemsize(), asz = a.itemsize(), bsz = b.itemsize(), osz = out.itemsize();
  for_chunks(loop, [&](const std::array<int64_t, 4>& o, int64_t n, const std::array<int64_t, 4>& st) {
    int64_t c[kChunk];
    load_row(cb + o[0] * csz, cond.dtype(), st[0], n, c);
    if (is_floating(out.dtype())) {
      float x[kChunk], z[kChunk];
      load_row(ab + o[1] * asz, a.dtype(), st[1], n, x);
      load_row(bb + o[2] * bsz, b.dtype(), st[2], n, z);
      for (int64_t i = 0; i < n; ++i) x[i] = c[i] ? x[i] : z[i];
      store_row(x, ob + o[3] * osz, out.dtype(), st[3], n);
    } else {
      int64_t x[kChunk], z[kChunk];
      load_row(ab + o[1] * asz, a.dtype(), st[1], n, x);
      load_row(bb + o[2] * bsz, b.dtype(), st[2], n, z);
      for (int64_t i = 0; i < n; ++i) x[i] = c[i] ? x[i] : z[i];
      store_row(x, ob + o[3] * osz, out.dtype(), st[3], n);
    }
  });
}

void swiglu(const Array& gate, const Array& up, Array& out) {
  // silu(gate) * up, all contiguous with the same shape; f32 math.
  int64_t n = out.size();
  parallel_for((n + kChunk - 1) / kChunk, 8, [&](int64_t b, int64_t e) {
    float g[kChunk], u[kChunk];
    for (int64_t c = b; c < e; ++c) {
      int64_t s = c * kChunk, m = std::min(kChunk, n - s);
      convert_span(static_cast<const uint8_t*>(gate.raw_data()) + s * gate.itemsize(), gate.dtype(), g, Dtype::f32, m);
      convert_span(static_cast<const uint8_t*>(up.raw_data()) + s * up.itemsize(), up.dtype(), u, Dtype::f32, m);
      for (int64_t i = 0; i < m; ++i) g[i] = silu_times(g[i], u[i]);
      convert_span(g, Dtype::f32, static_cast<uint8_t*>(out.raw_data()) + s * out.itemsize(), out.dtype(), m);
    }
  });
}

}  // namespace loom::cpu
