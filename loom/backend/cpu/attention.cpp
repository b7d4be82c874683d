// Scaled dot-product attention on the CPU, one task per (batch, query head, query row).
// Keys and values arrive as blocks along the sequence axis (the KV cache's pages, or one block for
// plain arrays), each [B, Hkv, P, D] with a unit last stride. Masks are built here from the spec
// (causal / window / chunk, left padding via kv_start) — no [L, S] mask is materialised. Scores,
// softmax (with optional per-head sinks) and the value sum are f32.
#include <cmath>
#include <limits>
#include <vector>

#include "loom/backend/cpu/kernels.h"
#include "loom/backend/cpu/simd.h"
#include "loom/core/thread_pool.h"

namespace loom::cpu {
namespace {

struct Block {
  const uint8_t* k;
  const uint8_t* v;
  int64_t len;              // positions of this block that are used
  int64_t kb, kh, ks;       // key strides (elements) for batch, head, position
  int64_t vb, vh, vs;
};

float dot_f32(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0;
#ifdef LOOM_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
  s = hsum(acc);
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

bool visible(const AttentionSpec& spec, int64_t qpos, int64_t j, int64_t start) {
  if (j < start) return false;
  switch (spec.mode) {
    case AttentionMode::none: return true;
    case AttentionMode::causal: return j <= qpos;
    case AttentionMode::window: return j <= qpos && qpos - j < spec.window;
    case AttentionMode::chunk: return j <= qpos && (qpos - start) / spec.chunk == (j - start) / spec.chunk;
  }
  return true;
}

}  // namespace

void attention(const Array& q, const std::vector<Array>& k_blocks, const std::vector<Array>& v_blocks,
               int64_t kv_len, const AttentionSpec& spec, const AttentionPositions& pos, const Array& mask,
               Array& out) {
  int64_t B = q.shape(0), Hq = q.shape(1), L = q.shape(2), D = q.shape(3);
  int64_t Hkv = k_blocks[0].shape(1), Dv = v_blocks[0].shape(3);
  int64_t group = Hq / Hkv;
  Dtype kdt = k_blocks[0].dtype(), vdt = v_blocks[0].dtype();
  std::vector<Block> blocks;
  int64_t left = kv_len;
  for (size_t i = 0; i < k_blocks.size() && left > 0; ++i) {
    const Array& k = k_blocks[i];
    const Array& v = v_blocks[i];
    int64_t len = std::min(left, k.shape(2));
    blocks.push_back({static_cast<const uint8_t*>(k.raw_data()), static_cast<const uint8_t*>(v.raw_data()), len,
                      k.strides()[0], k.strides()[1], k.strides()[2], v.strides()[0], v.strides()[1], v.strides()[2]});
    left -= len;
  }
  std::vector<int64_t> q_off, kv_start;
  if (pos.q_offsets.valid()) q_off = pos.q_offsets.to_vector<int64_t>();
  if (pos.kv_start.valid()) kv_start = pos.kv_start.to_vector<int64_t>();
  std::vector<float> sinks;
  if (spec.sinks.valid()) sinks = spec.sinks.to_float_vector();
  float scale = spec.scale > 0 ? spec.scale : 1.0f / std::sqrt(static_cast<float>(D));
  int64_t base_off = pos.q_offset >= 0 ? pos.q_offset : kv_len - L;
  size_t ksz = size_of(kdt), vsz = size_of(vdt);

  parallel_for(B * Hq * L, 1, [&](int64_t s, int64_t e) {
    std::vector<float> qv(D), kv(std::max(D, Dv)), acc(Dv), scores(kv_len);
    for (int64_t t = s; t < e; ++t) {
      int64_t i = t % L, h = (t / L) % Hq, b = t / (L * Hq);
      int64_t hk = h / group;
      convert_span(static_cast<const uint8_t*>(q.raw_data()) + ((b * Hq + h) * L + i) * D * q.itemsize(), q.dtype(),
                   qv.data(), Dtype::f32, D);
      int64_t qpos = (q_off.empty() ? base_off : q_off[b]) + i;
      int64_t start = kv_start.empty() ? 0 : kv_start[b];
      float mx = sinks.empty() ? -std::numeric_limits<float>::infinity() : sinks[h];
      int64_t j = 0;
      for (const Block& blk : blocks) {
        for (int64_t p = 0; p < blk.len; ++p, ++j) {
          float sc = -std::numeric_limits<float>::infinity();
          if (visible(spec, qpos, j, start)) {
            const uint8_t* kp = blk.k + (b * blk.kb + hk * blk.kh + p * blk.ks) * static_cast<int64_t>(ksz);
            float d;
            if (kdt == Dtype::f32) {
              d = dot_f32(qv.data(), reinterpret_cast<const float*>(kp), D);
            } else {
              convert_span(kp, kdt, kv.data(), Dtype::f32, D);
              d = dot_f32(qv.data(), kv.data(), D);
            }
            sc = d * scale;
            if (spec.softcap > 0) sc = spec.softcap * std::tanh(sc / spec.softcap);
            if (mask.valid()) {
              const uint8_t* mp = static_cast<const uint8_t*>(mask.raw_data()) +
                                  (b * mask.strides()[0] + h * mask.strides()[1] + i * mask.strides()[2] +
                                   j * mask.strides()[3]) * static_cast<int64_t>(mask.itemsize());
              float mv;
              if (mask.dtype() == Dtype::bool_) mv = *mp ? 0.0f : -std::numeric_limits<float>::infinity();
              else convert_span(mp, mask.dtype(), &mv, Dtype::f32, 1);
              sc += mv;
            }
          }
          scores[j] = sc;
          if (sc > mx) mx = sc;
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      if (std::isinf(mx) && mx < 0) {  // nothing visible (a padding row): output zeros
        convert_span(acc.data(), Dtype::f32, static_cast<uint8_t*>(out.raw_data()) + ((b * Hq + h) * L + i) * Dv * out.itemsize(),
                     out.dtype(), Dv);
        continue;
      }
      float denom = sinks.empty() ? 0.0f : std::exp(sinks[h] - mx);
      j = 0;
      for (const Block& blk : blocks) {
        for (int64_t p = 0; p < blk.len; ++p, ++j) {
          if (std::isinf(scores[j])) continue;
          float w = std::exp(scores[j] - mx);
          denom += w;
          const uint8_t* vp = blk.v + (b * blk.vb + hk * blk.vh + p * blk.vs) * static_cast<int64_t>(vsz);
          const float* vf;
          if (vdt == Dtype::f32) {
            vf = reinterpret_cast<const float*>(vp);
          } else {
            convert_span(vp, vdt, kv.data(), Dtype::f32, Dv);
            vf = kv.data();
          }
          for (int64_t c = 0; c < Dv; ++c) acc[c] += w * vf[c];
        }
      }
      float inv = 1.0f / denom;
      for (auto& a : acc) a *= inv;
      convert_span(acc.data(), Dtype::f32, static_cast<uint8_t*>(out.raw_data()) + ((b * Hq + h) * L + i) * Dv * out.itemsize(),
                   out.dtype(), Dv);
    }
  });
}

}  // namespace loom::cpu
