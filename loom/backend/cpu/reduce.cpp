// Reductions over the last axis of contiguous data. The ops layer moves reduced axes last and makes
// the input contiguous, so every reduction here is a loop over independent rows. f32 accumulation
// (int64 for integer sums), rows split across the thread pool.
#include <cmath>
#include <limits>
#include <vector>

#include "loom/backend/cpu/kernels.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {

// Loads row r of a contiguous [rows, n] array as float.
void row_as_float(const Array& a, int64_t r, int64_t n, std::vector<float>& buf) {
  buf.resize(n);
  convert_span(static_cast<const uint8_t*>(a.raw_data()) + r * n * a.itemsize(), a.dtype(), buf.data(), Dtype::f32, n);
}

int64_t rows_of(const Array& in, int64_t n) { return n == 0 ? 0 : in.size() / n; }

}  // namespace

void reduce_last(ReduceOp op, const Array& in, Array& out) {
  int64_t n = in.ndim() ? in.shape().back() : 1;
  int64_t rows = out.size();
  bool integral = !is_floating(in.dtype());
  parallel_for(rows, 16, [&](int64_t b, int64_t e) {
    std::vector<float> buf;
    std::vector<int64_t> ibuf;
    for (int64_t r = b; r < e; ++r) {
      double acc;
      if (integral) {
        ibuf.resize(n);
        convert_span(static_cast<const uint8_t*>(in.raw_data()) + r * n * in.itemsize(), in.dtype(), ibuf.data(), Dtype::i64, n);
        int64_t a = op == ReduceOp::prod ? 1 : op == ReduceOp::max ? std::numeric_limits<int64_t>::min()
                  : op == ReduceOp::min ? std::numeric_limits<int64_t>::max() : 0;
        for (int64_t i = 0; i < n; ++i) {
          switch (op) {
            case ReduceOp::sum: a += ibuf[i]; break;
            case ReduceOp::prod: a *= ibuf[i]; break;
            case ReduceOp::max: a = std::max(a, ibuf[i]); break;
            case ReduceOp::min: a = std::min(a, ibuf[i]); break;
          }
        }
        convert_span(&a, Dtype::i64, static_cast<uint8_t*>(out.raw_data()) + r * out.itemsize(), out.dtype(), 1);
        continue;
      }
      row_as_float(in, r, n, buf);
      float a = op == ReduceOp::prod ? 1.0f : op == ReduceOp::max ? -std::numeric_limits<float>::infinity()
              : op == ReduceOp::min ? std::numeric_limits<float>::infinity() : 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        switch (op) {
          case ReduceOp::sum: a += buf[i]; break;
          case ReduceOp::prod: a *= buf[i]; break;
          case ReduceOp::max: a = (buf[i] > a || std::isnan(buf[i])) ? buf[i] : a; break;
          case ReduceOp::min: a = (buf[i] < a || std::isnan(buf[i])) ? buf[i] : a; break;
        }
      }
      acc = a;
      convert_span(&acc, Dtype::f64, static_cast<uint8_t*>(out.raw_data()) + r * out.itemsize(), out.dtype(), 1);
    }
  });
}

void arg_reduce_last(ArgReduceOp op, const Array& in, Array& out) {
  int64_t n = in.shape().back();
  int64_t rows = rows_of(in, n);
  auto* o = out.data<uint32_t>();
  parallel_for(rows, 16, [&](int64_t b, int64_t e) {
    std::vector<float> buf;
    for (int64_t r = b; r < e; ++r) {
      row_as_float(in, r, n, buf);
      int64_t best = 0;
      for (int64_t i = 1; i < n; ++i) {
        bool better = op == ArgReduceOp::argmax ? buf[i] > buf[best] : buf[i] < buf[best];
        if (better) best = i;
      }
      o[r] = static_cast<uint32_t>(best);
    }
  });
}

void softmax_last(const Array& in, Array& out) {
  int64_t n = in.shape().back();
  int64_t rows = rows_of(in, n);
  parallel_for(rows, 4, [&](int64_t b, int64_t e) {
    std::vector<float> buf;
    for (int64_t r = b; r < e; ++r) {
      row_as_float(in, r, n, buf);
      float m = -std::numeric_limits<float>::infinity();
      for (float v : buf) m = std::max(m, v);
      float s = 0;
      for (auto& v : buf) { v = std::exp(v - m); s += v; }
      float inv = 1.0f / s;
      for (auto& v : buf) v *= inv;
      convert_span(buf.data(), Dtype::f32, static_cast<uint8_t*>(out.raw_data()) + r * n * out.itemsize(), out.dtype(), n);
    }
  });
}

void logsumexp_last(const Array& in, Array& out) {
  int64_t n = in.shape().back();
  int64_t rows = rows_of(in, n);
  parallel_for(rows, 4, [&](int64_t b, int64_t e) {
    std::vector<float> buf;
    for (int64_t r = b; r < e; ++r) {
      row_as_float(in, r, n, buf);
      float m = -std::numeric_limits<float>::infinity();
      for (float v : buf) m = std::max(m, v);
      double s = 0;
      for (float v : buf) s += std::exp(v - m);
      double res = std::isinf(m) ? m : m + std::log(s);
      convert_span(&res, Dtype::f64, static_cast<uint8_t*>(out.raw_data()) + r * out.itemsize(), out.dtype(), 1);
    }
  });
}

void take_rows(const Array& table, const Array& indices, Array& out) {
  int64_t inner = table.ndim() > 1 ? table.size() / table.shape(0) : 1;
  int64_t rows = table.shape(0);
  std::vector<int64_t> idx = indices.to_vector<int64_t>();
  size_t row_bytes = inner * table.itemsize();
  size_t out_row_bytes = inner * out.itemsize();
  const auto* src = static_cast<const uint8_t*>(table.raw_data());
  auto* dst = static_cast<uint8_t*>(out.raw_data());
  parallel_for(static_cast<int64_t>(idx.size()), 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      int64_t r = idx[i] < 0 ? idx[i] + rows : idx[i];
      convert_span(src + r * row_bytes, table.dtype(), dst + i * out_row_bytes, out.dtype(), inner);
    }
  });
}

}  // namespace loom::cpu
