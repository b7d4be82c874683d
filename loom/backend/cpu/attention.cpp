// Scaled dot-product attention on the CPU: prefill (more than one query row) as register-tiled products
// per (batch, KV head), decode as one task per (batch, query head, query row).
// Keys and values arrive as blocks along the sequence axis (the KV cache's pages, or one block for
// plain arrays), each [B, Hkv, P, D] with a unit last stride. Masks are built here from the spec
// (causal / window / chunk, left padding via kv_start) — no [L, S] mask is materialised. Scores,
// softmax (with optional per-head sinks) and the value sum are f32.
#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <utility>
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

// The block holding key j, and j's position in it.
std::pair<const Block*, int64_t> locate(const std::vector<Block>& blocks, int64_t j) {
  for (const Block& blk : blocks) {
    if (j < blk.len) return {&blk, j};
    j -= blk.len;
  }
  return {&blocks.back(), blocks.back().len - 1};  // not reached: j < kv_len
}

// The keys query position qpos sees, [lo, hi): at or after `start` (left padding), and per mode none:
// all; causal: up to qpos; window: the last `window` up to qpos; chunk: qpos's chunk (counted from start)
// up to qpos. Every mode's mask is one interval.
std::pair<int64_t, int64_t> visible_range(const AttentionSpec& spec, int64_t qpos, int64_t start, int64_t kv_len) {
  int64_t lo = start, hi = std::min(kv_len, qpos + 1);
  switch (spec.mode) {
    case AttentionMode::none:
      hi = kv_len;
      break;
    case AttentionMode::causal:
      break;
    case AttentionMode::window:
      lo = std::max(lo, qpos - spec.window + 1);
      break;
    case AttentionMode::chunk:
      lo = std::max(lo, start + (qpos - start) / spec.chunk * spec.chunk);
      break;
  }
  return {lo, std::max(lo, hi)};
}

// The register tile of both prefill products: c[r * ldc + u] = alpha * sum_{t < n} a[r * lda + t] * B_t[u]
// for mr (<= 6) rows and 16 columns, where B_t[0..8) = b0 + t * bs and B_t[8..16) = b1 + t * bs.
// Scores: a = the query rows, B_t = two panels of 8 packed keys at dimension t. Output: a = the
// probabilities, B_t = value row t.
void tile16(int mr, const float* a, int64_t lda, int64_t n, const float* b0, const float* b1, int64_t bs, float alpha,
            float* c, int64_t ldc) {
#ifdef LOOM_AVX2
  __m256 acc[6][2];
  for (int r = 0; r < 6; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t t = 0; t < n; ++t) {
    const __m256 v0 = _mm256_loadu_ps(b0 + t * bs), v1 = _mm256_loadu_ps(b1 + t * bs);
#pragma GCC unroll 6
    for (int r = 0; r < 6; ++r) {
      if (r < mr) {
        const __m256 x = _mm256_broadcast_ss(a + r * lda + t);
        acc[r][0] = _mm256_fmadd_ps(x, v0, acc[r][0]);
        acc[r][1] = _mm256_fmadd_ps(x, v1, acc[r][1]);
      }
    }
  }
  const __m256 av = _mm256_set1_ps(alpha);
  for (int r = 0; r < mr; ++r) {
    _mm256_storeu_ps(c + r * ldc, _mm256_mul_ps(acc[r][0], av));
    _mm256_storeu_ps(c + r * ldc + 8, _mm256_mul_ps(acc[r][1], av));
  }
#else
  for (int r = 0; r < mr; ++r)
    for (int u = 0; u < 16; ++u) {
      float sum = 0;
      for (int64_t t = 0; t < n; ++t) sum += a[r * lda + t] * (u < 8 ? b0 + t * bs : b1 + t * bs)[u % 8];
      c[r * ldc + u] = alpha * sum;
    }
#endif
}

// Softmax numerators of a score row over its visible range [l0, l1) (scores -inf there are masked out;
// a sink joins the max and the denominator): s[j] = e^(s[j] - max) there and 0 elsewhere up to end (>= l1);
// returns 1 / denominator, or 0 when nothing is visible (the row's output is then 0).
float softmax_range(float* s, int64_t l0, int64_t l1, int64_t end, const float* sink) {
  float mx = sink ? *sink : -std::numeric_limits<float>::infinity();
  for (int64_t j = l0; j < l1; ++j) mx = std::max(mx, s[j]);
  std::fill(s, s + l0, 0.0f);
  std::fill(s + std::max(l0, l1), s + end, 0.0f);
  if (std::isinf(mx) && mx < 0) {
    std::fill(s, s + end, 0.0f);
    return 0.0f;
  }
  float denom = sink ? std::exp(*sink - mx) : 0.0f;
  int64_t j = l0;
#ifdef LOOM_AVX2
  const __m256 m = _mm256_set1_ps(mx);
  __m256 acc = _mm256_setzero_ps();
  for (; j + 8 <= l1; j += 8) {
    const __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(s + j), m));
    _mm256_storeu_ps(s + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  denom += hsum(acc);
#endif
  for (; j < l1; ++j) {
    s[j] = std::exp(s[j] - mx);
    denom += s[j];
  }
  return 1.0f / denom;
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
  auto q_pos = [&](int64_t b, int64_t i) { return (q_off.empty() ? base_off : q_off[b]) + i; };
  auto kv_begin = [&](int64_t b) { return kv_start.empty() ? 0 : kv_start[b]; };
  // The score of key j for query row (b, h, i) from its scaled dot product: softcap, then the mask.
  auto finish_score = [&](int64_t b, int64_t h, int64_t i, int64_t j, float sc) {
    if (spec.softcap > 0) sc = spec.softcap * std::tanh(sc / spec.softcap);
    if (mask.valid()) {
      const uint8_t* mp =
          static_cast<const uint8_t*>(mask.raw_data()) +
          (b * mask.strides()[0] + h * mask.strides()[1] + i * mask.strides()[2] + j * mask.strides()[3]) *
              static_cast<int64_t>(mask.itemsize());
      float mv;
      if (mask.dtype() == Dtype::bool_)
        mv = *mp ? 0.0f : -std::numeric_limits<float>::infinity();
      else
        convert_span(mp, mask.dtype(), &mv, Dtype::f32, 1);
      sc += mv;
    }
    return sc;
  };
  auto out_row = [&](int64_t row) {  // row of [B * Hq * L] in out
    return static_cast<uint8_t*>(out.raw_data()) + row * Dv * out.itemsize();
  };

  if (L > 1) {
    // Prefill, per (batch, KV head): its keys packed into panels of 8 ([D][8] each) and its values into
    // rows of Dvp (Dv rounded up to 16), zero-padded (and zeros for the batch row's left padding, whose
    // slots may hold anything: a zero probability times a NaN value would leak it); then tasks of 48
    // query rows of its `group` heads ([group * L, D], contiguous) compute their scores with a 6 x 16
    // register tile (tile16), the softmax over each row's visible key range, and the probabilities times
    // the values with the same tile. A tile stops at the last key any of its rows sees (causal prompts
    // skip the upper triangle).
    const int64_t R = group * L, kvp = (kv_len + 15) / 16 * 16, Dvp = (Dv + 15) / 16 * 16;
    constexpr int64_t kRows = 48;  // rows per task (8 tiles of 6)
    std::vector<float> kpack(kvp * D), vpack(kvp * Dvp);
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t hk = 0; hk < Hkv; ++hk) {
        parallel_for(kvp / 8, 16, [&](int64_t p0, int64_t p1) {
          std::vector<float> row(std::max(D, Dv));
          for (int64_t pn = p0; pn < p1; ++pn) {
            float* kpn = kpack.data() + pn * D * 8;
            for (int64_t t = 0; t < 8; ++t) {
              const int64_t j = pn * 8 + t;
              float* vr = vpack.data() + j * Dvp;
              if (j >= kv_len || j < kv_begin(b)) {  // past the keys, or left padding (may hold NaN: never read)
                for (int64_t d = 0; d < D; ++d) kpn[d * 8 + t] = 0.0f;
                std::fill(vr, vr + Dvp, 0.0f);
                continue;
              }
              const auto [blk, p] = locate(blocks, j);
              convert_span(blk->k + (b * blk->kb + hk * blk->kh + p * blk->ks) * static_cast<int64_t>(ksz), kdt,
                           row.data(), Dtype::f32, D);
              for (int64_t d = 0; d < D; ++d) kpn[d * 8 + t] = row[d];
              convert_span(blk->v + (b * blk->vb + hk * blk->vh + p * blk->vs) * static_cast<int64_t>(vsz), vdt, vr,
                           Dtype::f32, Dv);
              std::fill(vr + Dv, vr + Dvp, 0.0f);
            }
          }
        });
        const int64_t row_base = (b * Hq + hk * group) * L;
        parallel_for((R + kRows - 1) / kRows, 1, [&](int64_t t0, int64_t t1) {
          std::vector<float> qf(kRows * D), S(kRows * kvp), O(kRows * Dvp), inv(kRows);
          std::vector<int64_t> lo(kRows), hi(kRows), end(kRows);
          for (int64_t task = t0; task < t1; ++task) {
            const int64_t r0 = task * kRows, rc = std::min(kRows, R - r0);
            convert_span(static_cast<const uint8_t*>(q.raw_data()) + (row_base + r0) * D * q.itemsize(), q.dtype(),
                         qf.data(), Dtype::f32, rc * D);
            // Each row's visible keys are one range [lo, hi) (every mode's mask is an interval).
            for (int64_t rr = 0; rr < rc; ++rr) {
              const int64_t i = (r0 + rr) % L;
              std::tie(lo[rr], hi[rr]) = visible_range(spec, q_pos(b, i), kv_begin(b), kv_len);
            }
            for (int64_t t = 0; t < rc; t += 6) {
              const int mr = static_cast<int>(std::min<int64_t>(6, rc - t));
              const int64_t jend = (*std::max_element(hi.begin() + t, hi.begin() + t + mr) + 15) / 16 * 16;
              std::fill(end.begin() + t, end.begin() + t + mr, jend);
              for (int64_t j = 0; j < jend; j += 16)
                tile16(mr, qf.data() + t * D, D, D, kpack.data() + j * D, kpack.data() + (j + 8) * D, 8, scale,
                       S.data() + t * kvp + j, kvp);
            }
            for (int64_t rr = 0; rr < rc; ++rr) {
              const int64_t row = r0 + rr, h = hk * group + row / L, i = row % L;
              float* sr = S.data() + rr * kvp;
              const int64_t l0 = lo[rr], l1 = hi[rr];
              if (spec.softcap > 0 || mask.valid())
                for (int64_t j = l0; j < l1; ++j) sr[j] = finish_score(b, h, i, j, sr[j]);
              inv[rr] = softmax_range(sr, l0, l1, end[rr], sinks.empty() ? nullptr : &sinks[h]);
            }
            for (int64_t t = 0; t < rc; t += 6) {
              const int mr = static_cast<int>(std::min<int64_t>(6, rc - t));
              const int64_t jend = *std::max_element(hi.begin() + t, hi.begin() + t + mr);
              // Rows of the tile that see fewer keys hold zeros up to the tile's end (softmax_range wrote them).
              for (int64_t c = 0; c < Dvp; c += 16)
                tile16(mr, S.data() + t * kvp, kvp, jend, vpack.data() + c, vpack.data() + c + 8, Dvp, 1.0f,
                       O.data() + t * Dvp + c, Dvp);
            }
            for (int64_t rr = 0; rr < rc; ++rr) {
              float* o = O.data() + rr * Dvp;
              for (int64_t c = 0; c < Dv; ++c) o[c] *= inv[rr];
              convert_span(o, Dtype::f32, out_row(row_base + r0 + rr), out.dtype(), Dv);
            }
          }
        });
      }
    }
    return;
  }

  // Decode (one query row): one task per (batch, query head).
  parallel_for(B * Hq * L, 1, [&](int64_t s, int64_t e) {
    std::vector<float> qv(D), kv(std::max(D, Dv)), acc(Dv), scores(kv_len);
    for (int64_t t = s; t < e; ++t) {
      int64_t i = t % L, h = (t / L) % Hq, b = t / (L * Hq);
      int64_t hk = h / group;
      convert_span(static_cast<const uint8_t*>(q.raw_data()) + ((b * Hq + h) * L + i) * D * q.itemsize(), q.dtype(),
                   qv.data(), Dtype::f32, D);
      const auto [lo, hi] = visible_range(spec, q_pos(b, i), kv_begin(b), kv_len);
      float mx = sinks.empty() ? -std::numeric_limits<float>::infinity() : sinks[h];
      int64_t j = 0;
      for (const Block& blk : blocks) {
        for (int64_t p = 0; p < blk.len; ++p, ++j) {
          float sc = -std::numeric_limits<float>::infinity();
          if (j >= lo && j < hi) {
            const uint8_t* kp = blk.k + (b * blk.kb + hk * blk.kh + p * blk.ks) * static_cast<int64_t>(ksz);
            float d;
            if (kdt == Dtype::f32) {
              d = dot_f32(qv.data(), reinterpret_cast<const float*>(kp), D);
            } else {
              convert_span(kp, kdt, kv.data(), Dtype::f32, D);
              d = dot_f32(qv.data(), kv.data(), D);
            }
            sc = finish_score(b, h, i, j, d * scale);
          }
          scores[j] = sc;
          if (sc > mx) mx = sc;
        }
      }
      std::fill(acc.begin(), acc.end(), 0.0f);
      if (std::isinf(mx) && mx < 0) {  // nothing visible (a padding row): output zeros
        convert_span(acc.data(), Dtype::f32, out_row(t), out.dtype(), Dv);
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
      convert_span(acc.data(), Dtype::f32, out_row(t), out.dtype(), Dv);
    }
  });
}

}  // namespace loom::cpu
