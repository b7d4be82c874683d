// Rotary position embedding over x [..., L, D] (contiguous), f32 math. Row (b, ..., l) sits at
// position offset(b) + l. Angles: theta_i = pos * scale * inv_freq_i, inv_freq_i = 1 / freqs_i.
#include <cmath>
#include <vector>

#include "loom/backend/cpu/kernels.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {

void rope(const Array& x, const RopeSpec& spec, int64_t offset, const Array& offsets, Array& out) {
  int64_t d = x.shape(-1), l = x.shape(-2);
  int64_t rows = x.size() / d;          // all (..., l) rows
  int64_t b = x.ndim() >= 3 ? x.shape(0) : 1;
  int64_t rows_per_b = rows / std::max<int64_t>(1, b);
  int half = spec.dims / 2;
  std::vector<float> inv(half);
  if (spec.freqs.valid()) {
    std::vector<float> f = spec.freqs.to_float_vector();
    for (int i = 0; i < half; ++i) inv[i] = 1.0f / f[i];
  } else {
    for (int i = 0; i < half; ++i)
      inv[i] = static_cast<float>(std::pow(static_cast<double>(spec.base), -2.0 * i / spec.dims));
  }
  std::vector<int64_t> offs;
  if (offsets.valid()) offs = offsets.to_vector<int64_t>();
  parallel_for(rows, 8, [&](int64_t s, int64_t e) {
    std::vector<float> v(d);
    for (int64_t r = s; r < e; ++r) {
      convert_span(static_cast<const uint8_t*>(x.raw_data()) + r * d * x.itemsize(), x.dtype(), v.data(), Dtype::f32, d);
      int64_t bi = r / rows_per_b;
      float pos = static_cast<float>((offs.empty() ? offset : offs[bi]) + r % l);
      for (int i = 0; i < half; ++i) {
        float theta = pos * spec.scale * inv[i];
        float c = std::cos(theta), sn = std::sin(theta);
        int64_t i0 = spec.traditional ? 2 * i : i;
        int64_t i1 = spec.traditional ? 2 * i + 1 : i + half;
        float x0 = v[i0], x1 = v[i1];
        v[i0] = x0 * c - x1 * sn;
        v[i1] = x0 * sn + x1 * c;
      }
      convert_span(v.data(), Dtype::f32, static_cast<uint8_t*>(out.raw_data()) + r * d * out.itemsize(), out.dtype(), d);
    }
  });
}

// No fusion to gain on the CPU: the rotations and the two writes in turn.
void rope_kv_write(const Array& q, const Array& k, const Array& v, const RopeSpec& spec, const Array& offsets,
                   const Array& index, int64_t base, int64_t stride, int64_t max_p, Array& q_out, Array& k_dst,
                   Array& v_dst) {
  rope(q, spec, 0, offsets, q_out);
  Array k_rot = Array::empty(k.shape(), k.dtype(), k.device());
  rope(k, spec, 0, offsets, k_rot);
  copy_into_at(k_rot, k_dst, index, base, stride, max_p);
  copy_into_at(v, v_dst, index, base, stride, max_p);
}

}  // namespace loom::cpu
