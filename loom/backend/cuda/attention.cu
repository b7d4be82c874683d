// Scaled dot-product attention on CUDA. CPU twin: backend/cpu/attention.cpp (same visibility rule,
// softcap, additive/bool mask, per-head sinks, zeros for rows that see no key; f32 scores, softmax and
// value sums). Keys/values arrive as blocks along the sequence axis (KV-cache pages, or one block),
// each [B, Hkv, P, D] with a unit last stride; their pointers and strides travel by value in the
// kernel parameters (KvTable, ~22 KB), so a captured decode step needs no host->device upload.
//
// Plan: one online-softmax (flash-style) kernel, FMA math in f32 on tiles in shared memory.
//  * A CTA owns (batch b, kv head hk, a tile of BM "rows", a split of the key range). Rows are the
//    G = Hq / Hkv query heads of hk times the L query positions, position-major (row m = l * G + g),
//    so each K/V tile read from memory serves every query head of the group (GQA reuse), and a row
//    tile spans few positions, which keeps its causal/window key range tight.
//  * The key range a row tile can see ([lo, hi) from kv_start, mode, window/chunk and its positions) is
//    computed on the device (per-row offsets live there) and walked in tiles of BN keys: load K and V
//    (converted to f32) into shared memory, S = Q K^T with the mask rule applied per (row, key), online
//    softmax per row (running max m, sum l, rescale factor alpha), acc = acc * alpha + P V.
//    Tile loads are software-pipelined one tile deep: tile t+1's 16-byte loads sit in registers while
//    tile t computes (the kernel is templated on the key/value element type for that reason).
//  * Decode (G * L <= BM of the decode config) is memory bound and has few rows: the "decode" config
//    keeps BM small, gives each thread one key in S and lets the warps split the keys of a tile in P V
//    (partial accumulators summed once at the end). Prefill uses a 64-row tile with 4x4 register
//    micro-tiles in S and warps owning rows in P V.
//  * Split-K (flash-decoding): when the (tiles x Hkv x B) CTAs cannot fill the GPU twice over, the
//    visible key range of each row tile is cut into `nsplit` parts; each CTA writes its unnormalised
//    (m, l, acc) and attention_combine merges the parts (and the sink) per row. A single decode row on
//    a long context thus spreads over many SMs.
//  * Prefill with bf16 or f16 q, k and v (one dtype), D == Dv in {64, 80, 96, 128, 256}, no additive or
//    bool mask and 16-byte aligned rows runs attention_tc_kernel instead: the same CTA mapping, key
//    range, visibility rule, split-K and epilogue, with S = Q K^T and P V on tensor cores (mma.sync
//    m16n8k16, f32 accumulation), FlashAttention-2 style (see its comment). Everything else (f32,
//    other head dims, masks, decode-sized row counts) keeps the FMA kernel.
// Measured (H100 and H200 alike, bf16, Hq 32 / Hkv 8 / D 128) with the FMA kernel: decode ~0.9-1.0 TB/s
// of K/V at 32k-128k keys, prefill ~14 TFLOP/s. Decode is issue-bound at 8 warps per SM (216
// registers, 82 KB shared). bench/kernel_bench_attention times both paths.
#include <algorithm>
#include <climits>
#include <cmath>
#include <type_traits>

#include "loom/backend/cuda/common.cuh"
#include "loom/backend/cuda/kernels.h"
#include "loom/backend/cuda/mma.cuh"

namespace loom::cuda {
namespace {

constexpr int kThreads = 128;  // 4 warps per CTA
constexpr int kWarps = kThreads / 32;
constexpr int kMaxKvBlocks = 512;      // 128k tokens of 256-token pages
constexpr int kMaxSplits = 128;        // key-range parts per row tile
constexpr int kSplitPage = 256;   // split counts are derived from whole KV pages (see launch_split)
constexpr int kSplitsPerPage = 2;  // up to 2 parts per page: 128 keys, two decode key tiles each
constexpr float kNegInf = -INFINITY;

enum : int { kF32 = 0, kF16 = 1, kBF16 = 2, kBool = 3 };

// The used part of the key/value blocks. start[i] is the first key position of block i (start[count]
// = kv_len); strides in elements (batch, head, position), int32 to keep 512 blocks under the 32 KB
// parameter limit — the host checks they fit.
struct KvTable {
  int count = 0;
  int start[kMaxKvBlocks + 1];
  const char* k[kMaxKvBlocks];
  const char* v[kMaxKvBlocks];
  int kstr[kMaxKvBlocks][3];
  int vstr[kMaxKvBlocks][3];
};

struct AttnParams {
  const char* q = nullptr;  // contiguous [B, Hq, L, D]
  char* out = nullptr;      // contiguous [B, Hq, L, Dv]
  int q_dt = 0, k_dt = 0, v_dt = 0, out_dt = 0;
  bool q_vec = false, k_vec = false, v_vec = false;  // rows aligned for 4-element vector loads
  int B = 0, Hq = 0, Hkv = 0, L = 0, D = 0, Dv = 0, G = 1;
  int kv_len = 0;
  float scale = 1.0f, softcap = 0.0f;
  int mode = 0, window = 0, chunk = 1;
  long long base_off = 0;  // q_offset of every row when q_offsets is absent
  const char* q_offsets = nullptr;
  bool qo_i64 = false;
  long long qo_stride = 1;
  const char* kv_start = nullptr;
  bool ks_i64 = false;
  long long ks_stride = 1;
  const char* sinks = nullptr;
  int sinks_dt = 0;
  long long sinks_stride = 1;
  const char* mask = nullptr;  // [B, Hq, L, kv_len] view (broadcast strides allowed)
  int mask_dt = 0;
  long long mstr[4] = {};
  int nsplit = 1;
  float* part_acc = nullptr;  // [B * Hq * L, nsplit, Dv] when nsplit > 1
  float* part_ml = nullptr;   // [B * Hq * L, nsplit, 2] (m, l)
};

// Tile shapes. S = Q K^T: thread (warp w, lane) computes SR rows x SK keys; LK lanes and WK warps lie
// along keys, the rest along rows. P V: each warp owns RPW rows x KPW keys, each lane NCOL columns
// (VW consecutive floats, NK times, 32 * VW apart).
// ESIZE (bytes per key/value element) sizes the key tile so the prefetched raw tiles fit in registers.
// BM_ (decode only) overrides the row tile: 4 rows serve one decode token of the common GQA groups of 4 or
// fewer query heads per KV head, with a quarter of the row registers and shared memory of 16 rows
// (Llama-3.1-8B-shaped decode at 4096 keys: 216 registers and 2 CTAs per SM with 16 rows).
template <int DMAX_, bool kDecode, int ESIZE, int BM_ = 0>
struct Cfg {
  static constexpr int DMAX = DMAX_;
  static constexpr bool kWarpKeys = kDecode;
  static constexpr int BM = kDecode && BM_ ? BM_ : kDecode ? (DMAX == 256 ? 8 : 16) : (DMAX == 256 ? 32 : 64);
  static constexpr int BN = kDecode ? (DMAX == 256 || ESIZE == 4 ? 32 : 64) : 32;
  static constexpr int DP = DMAX + 4;  // row pitch of Q/K/V tiles: 16 B aligned, rows 16 B apart in banks
  static constexpr int BP = BN + 4;    // row pitch of the score tile
  static constexpr int LK = kDecode ? 32 : 8;
  static constexpr int WK = kDecode ? BN / 32 : 1;
  static constexpr int SK = BN / (LK * WK);
  static constexpr int LR = 32 / LK;
  static constexpr int WR = kWarps / WK;
  static constexpr int SR = BM / (LR * WR);
  static constexpr int RPW = kDecode ? BM : BM / kWarps;
  static constexpr int KPW = kDecode ? BN / kWarps : BN;
  static constexpr int VW = DMAX >= 128 ? 4 : DMAX / 32;
  static constexpr int NK = DMAX / (32 * VW);
  static constexpr int NCOL = VW * NK;
  static_assert(SK >= 1 && SR >= 1 && SK * LK * WK == BN && SR * LR * WR == BM, "S mapping must cover the tile");
  static_assert(KPW % 4 == 0 && RPW * (kDecode ? 1 : kWarps) == BM, "P V mapping must cover the tile");
  static_assert(NCOL * 32 == DMAX, "P V columns must cover DMAX");

  // Shared memory: Q, K, V, P tiles (f32), then per-row state, then per-key row pointers.
  static constexpr size_t kQ = 0;
  static constexpr size_t kK = kQ + sizeof(float) * BM * DP;
  static constexpr size_t kV = kK + sizeof(float) * BN * DP;
  static constexpr size_t kP = kV + sizeof(float) * BN * DP;
  static constexpr size_t kRowF = kP + sizeof(float) * BM * BP;                    // m, l, alpha (3 x BM floats)
  static constexpr size_t kRowI = kRowF + sizeof(float) * 3 * ((BM + 3) / 4 * 4);  // qpos, mask off, out row
  static constexpr size_t kKeyP = kRowI + sizeof(long long) * 3 * BM;              // k, v row pointers
  static constexpr size_t kBytes = kKeyP + sizeof(const char*) * 2 * BN;
  // The epilogue reuses the K and V tiles for the per-warp (decode) or per-CTA accumulators.
  static_assert((kDecode ? kWarps : 1) * BM * DP <= 2 * BN * DP, "epilogue buffer must fit in K and V tiles");
};

// ---------------------------------------------------------------- device helpers

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float load_f(const char* p, int dt, long long i) {
  switch (dt) {
    case kF16:
      return __half2float(reinterpret_cast<const __half*>(p)[i]);
    case kBF16:
      return __bfloat162float(reinterpret_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return reinterpret_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ long long load_index(const char* p, bool i64, long long i) {
  return i64 ? reinterpret_cast<const long long*>(p)[i] : reinterpret_cast<const int*>(p)[i];
}

// The CPU's visibility rule (backend/cpu/attention.cpp: visible()).
__device__ __forceinline__ bool visible(int mode, int window, int chunk, long long qpos, long long j, long long start) {
  if (j < start) return false;
  switch (mode) {
    case 0:
      return true;  // none
    case 1:
      return j <= qpos;  // causal
    case 2:
      return j <= qpos && qpos - j < window;  // window
    default:
      return j <= qpos && (qpos - start) / chunk == (j - start) / chunk;  // chunk
  }
}

// Tile loads in two steps, so that a thread's global loads are all in flight at once (a loop of
// load -> convert -> store would wait out the memory latency once per element chunk): fetch() issues
// 16-byte loads of raw rows into registers, commit() converts them to f32 in shared memory. Tiles are
// [NROWS][DMAX]; row r comes from row_ptr(r) (null: zeros), its elements past n are zeros.
template <typename T, int NROWS, int DMAX>
struct Chunks {
  static constexpr int E = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte chunk
  static constexpr int CPR = DMAX / E;                        // chunks per row
  static constexpr int TOTAL = NROWS * CPR;
  static constexpr int N = (TOTAL + kThreads - 1) / kThreads;  // chunks per thread
};

template <typename T, int NROWS, int DMAX, typename RowPtr>
__device__ __forceinline__ void fetch(uint4 (&raw)[Chunks<T, NROWS, DMAX>::N], int n, bool vec, RowPtr row_ptr) {
  using K = Chunks<T, NROWS, DMAX>;
#pragma unroll
  for (int i = 0; i < K::N; ++i) {
    const int c = threadIdx.x + i * kThreads;
    const int r = c / K::CPR, d = (c % K::CPR) * K::E;
    raw[i] = make_uint4(0u, 0u, 0u, 0u);
    if ((K::TOTAL % kThreads == 0 || c < K::TOTAL) && d < n) {
      const char* row = row_ptr(r);
      if (row) {
        if (vec && d + K::E <= n) {
          raw[i] = *reinterpret_cast<const uint4*>(row + d * sizeof(T));
        } else {  // row tail or unaligned rows: element by element, as raw bits (0 bits = +0.0)
          unsigned w[4];
          if constexpr (sizeof(T) == 4) {
            const unsigned* e = reinterpret_cast<const unsigned*>(row);
#pragma unroll
            for (int k = 0; k < 4; ++k) w[k] = d + k < n ? e[d + k] : 0u;
          } else {
            const unsigned short* e = reinterpret_cast<const unsigned short*>(row);
#pragma unroll
            for (int k = 0; k < 4; ++k) {
              unsigned lo = d + 2 * k < n ? e[d + 2 * k] : 0u, hi = d + 2 * k + 1 < n ? e[d + 2 * k + 1] : 0u;
              w[k] = lo | (hi << 16);
            }
          }
          raw[i] = make_uint4(w[0], w[1], w[2], w[3]);
        }
      }
    }
  }
}

template <typename T>
__device__ __forceinline__ float2 unpack2(unsigned w) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    return make_float2(__uint_as_float(w << 16), __uint_as_float(w & 0xffff0000u));
  } else {
    return make_float2(__half2float(__ushort_as_half(static_cast<unsigned short>(w & 0xffffu))),
                       __half2float(__ushort_as_half(static_cast<unsigned short>(w >> 16))));
  }
}

template <typename T, int NROWS, int DMAX>
__device__ __forceinline__ void commit(float* dst, int pitch, const uint4 (&raw)[Chunks<T, NROWS, DMAX>::N]) {
  using K = Chunks<T, NROWS, DMAX>;
#pragma unroll
  for (int i = 0; i < K::N; ++i) {
    const int c = threadIdx.x + i * kThreads;
    if (K::TOTAL % kThreads != 0 && c >= K::TOTAL) continue;
    const int r = c / K::CPR, d = (c % K::CPR) * K::E;
    float* o = dst + r * pitch + d;
    if constexpr (sizeof(T) == 4) {
      *reinterpret_cast<float4*>(o) = make_float4(__uint_as_float(raw[i].x), __uint_as_float(raw[i].y),
                                                  __uint_as_float(raw[i].z), __uint_as_float(raw[i].w));
    } else {
      float2 a = unpack2<T>(raw[i].x), b = unpack2<T>(raw[i].y), c2 = unpack2<T>(raw[i].z), e = unpack2<T>(raw[i].w);
      *reinterpret_cast<float4*>(o) = make_float4(a.x, a.y, b.x, b.y);
      *reinterpret_cast<float4*>(o + 4) = make_float4(c2.x, c2.y, e.x, e.y);
    }
  }
}

// A whole tile in one go for a runtime dtype (the query tile, loaded once per CTA).
template <int NROWS, int DMAX, typename RowPtr>
__device__ __forceinline__ void load_tile(float* dst, int pitch, int n, int dt, bool vec, RowPtr row_ptr) {
  auto run = [&](auto tag) {
    using T = decltype(tag);
    uint4 raw[Chunks<T, NROWS, DMAX>::N];
    fetch<T, NROWS, DMAX>(raw, n, vec, row_ptr);
    commit<T, NROWS, DMAX>(dst, pitch, raw);
  };
  switch (dt) {
    case kF16:
      run(__half{});
      break;
    case kBF16:
      run(__nv_bfloat16{});
      break;
    default:
      run(float{});
      break;
  }
}

__device__ __forceinline__ void store_f(char* p, int dt, long long i, float v) {
  switch (dt) {
    case kF16:
      reinterpret_cast<__half*>(p)[i] = __float2half_rn(v);
      break;
    case kBF16:
      reinterpret_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
      break;
    default:
      reinterpret_cast<float*>(p)[i] = v;
      break;
  }
}

// Final scaling of one row: out = (acc * f) * inv, the CPU's acc * (1 / denom) with acc taken
// relative to the row max m and rescaled to the max M that includes the sink. Nothing visible (M is
// -inf) gives f = inv = 0: a zero row, as on the CPU.
__device__ __forceinline__ void finish_row(const AttnParams& p, int h, float m, float l, float& f, float& inv) {
  float M = m, sink = kNegInf;
  if (p.sinks) {
    sink = load_f(p.sinks, p.sinks_dt, h * p.sinks_stride);
    M = fmaxf(m, sink);
  }
  if (M == kNegInf) {
    f = inv = 0.0f;
    return;
  }
  f = m == kNegInf ? 0.0f : expf(m - M);
  float denom = l * f + (p.sinks ? expf(sink - M) : 0.0f);
  inv = 1.0f / denom;
}

// ---------------------------------------------------------------- main kernel

template <class C, typename KV>
__global__ void __launch_bounds__(kThreads)
    attention_kernel(const __grid_constant__ AttnParams p, const __grid_constant__ KvTable t) {
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_wait();
  pdl_trigger();
  float* Qs = reinterpret_cast<float*>(smem + C::kQ);
  float* Ks = reinterpret_cast<float*>(smem + C::kK);
  float* Vs = reinterpret_cast<float*>(smem + C::kV);
  float* Ps = reinterpret_cast<float*>(smem + C::kP);
  float* row_m = reinterpret_cast<float*>(smem + C::kRowF);
  float* row_l = row_m + (C::BM + 3) / 4 * 4;
  float* row_alpha = row_l + (C::BM + 3) / 4 * 4;
  long long* row_qpos = reinterpret_cast<long long*>(smem + C::kRowI);
  long long* row_moff = row_qpos + C::BM;
  long long* row_out = row_moff + C::BM;  // (b * Hq + h) * L + l: the row of q and out
  const char** key_k = reinterpret_cast<const char**>(smem + C::kKeyP);
  const char** key_v = key_k + C::BN;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tile = blockIdx.x / p.nsplit, split = blockIdx.x % p.nsplit;
  const int hk = blockIdx.y, b = blockIdx.z;
  const int m0 = tile * C::BM;
  const int R = min(C::BM, p.G * p.L - m0);  // valid rows of this tile (>= 1)

  const long long qoff = p.q_offsets ? load_index(p.q_offsets, p.qo_i64, b * p.qo_stride) : p.base_off;
  const long long start = p.kv_start ? load_index(p.kv_start, p.ks_i64, b * p.ks_stride) : 0;

  // Loop invariants in registers: once lambdas capture the parameter block it is read through its
  // address, and the per-score code below should not reload it.
  const int mode = p.mode, window = p.window, chunk = p.chunk, mask_dt = p.mask_dt, D = p.D, Dv = p.Dv;
  const float scale = p.scale, softcap = p.softcap;
  const char* const mask = p.mask;
  const long long ms3 = p.mstr[3];

  if (tid < C::BM) {
    int m = m0 + min(tid, R - 1);  // rows past R mirror the last valid one (never used)
    int l = m / p.G, h = hk * p.G + (m - l * p.G);
    row_qpos[tid] = qoff + l;
    row_moff[tid] = b * p.mstr[0] + h * p.mstr[1] + l * p.mstr[2];
    row_out[tid] = (static_cast<long long>(b) * p.Hq + h) * p.L + l;
    row_m[tid] = kNegInf;
    row_l[tid] = 0.0f;
    row_alpha[tid] = 1.0f;
  }
  __syncthreads();
  load_tile<C::BM, C::DMAX>(Qs, C::DP, D, p.q_dt, p.q_vec, [&](int r) -> const char* {
    return r < R ? p.q + row_out[r] * D * (p.q_dt == kF32 ? 4 : 2) : nullptr;
  });

  // Keys any row of the tile may see (a superset; visible() decides per row and key).
  const long long qmin = qoff + m0 / p.G, qmax = qoff + (m0 + R - 1) / p.G;
  long long lo = max(start, 0LL), hi = p.kv_len;
  if (mode != 0) hi = min(hi, qmax + 1);
  if (mode == 2) lo = max(lo, qmin - window + 1);
  if (mode == 3) lo = max(lo, start + (max(qmin, start) - start) / chunk * chunk);
  // This split's share, in whole tiles.
  long long s_lo = hi, s_hi = hi;
  if (hi > lo) {
    long long tiles = (hi - lo + C::BN - 1) / C::BN;
    long long per = (tiles + p.nsplit - 1) / p.nsplit;
    s_lo = min(hi, lo + split * per * C::BN);
    s_hi = min(hi, s_lo + per * C::BN);
  }

  // S mapping.
  const int key_lane = lane % C::LK, row_lane = lane / C::LK;
  const int s_key0 = key_lane + C::LK * (warp % C::WK);
  const int s_row0 = ((warp / C::WK) * C::LR + row_lane) * C::SR;
  // P V mapping.
  const int p_row0 = C::kWarpKeys ? 0 : warp * C::RPW;
  const int p_key0 = C::kWarpKeys ? warp * C::KPW : 0;
  float acc[C::RPW][C::NCOL];
#pragma unroll
  for (int r = 0; r < C::RPW; ++r)
#pragma unroll
    for (int c = 0; c < C::NCOL; ++c) acc[r][c] = 0.0f;

  // Row pointers of the keys [t0, t0 + BN) ∩ [., s_hi). `blk` (uniform over the CTA) is the block of
  // key t0, advanced tile by tile; a key's block is at most (key - t0) blocks further on (no block is
  // empty), so the common case — a 256-key page holding the whole tile — costs one comparison, and
  // the rest a short bounded search. This dependent chain of parameter loads sits on the pipeline's
  // critical path, hence the care. Keys before kv_start are never visible: their values stay zero in
  // the tile, so padding slots holding garbage (even NaN) cannot leak through 0 * v.
  int blk = 0;
  {
    int z = t.count - 1;
    while (blk < z) {
      int mid = (blk + z + 1) >> 1;
      if (t.start[mid] <= s_lo)
        blk = mid;
      else
        z = mid - 1;
    }
  }
  auto key_pointers = [&](long long t0) {
    while (t.start[blk + 1] <= t0) ++blk;  // start[count] = kv_len > t0: stops in range
    if (tid < C::BN) {
      const char *kp = nullptr, *vp = nullptr;
      const long long j = t0 + tid;
      if (j < s_hi) {
        int a = blk;
        if (t.start[a + 1] <= j) {
          int z = min(a + tid, t.count - 1);
          ++a;
          while (a < z) {
            int mid = (a + z + 1) >> 1;
            if (t.start[mid] <= j)
              a = mid;
            else
              z = mid - 1;
          }
        }
        const long long pidx = j - t.start[a];
        kp = t.k[a] + (static_cast<long long>(b) * t.kstr[a][0] + static_cast<long long>(hk) * t.kstr[a][1] +
                       pidx * t.kstr[a][2]) *
                          static_cast<long long>(sizeof(KV));
        if (j >= start)
          vp = t.v[a] + (static_cast<long long>(b) * t.vstr[a][0] + static_cast<long long>(hk) * t.vstr[a][1] +
                         pidx * t.vstr[a][2]) *
                            static_cast<long long>(sizeof(KV));
      }
      key_k[tid] = kp;
      key_v[tid] = vp;
    }
  };
  // Software pipeline, one tile deep: tile t+1's loads are in flight (raw, in registers) while tile t
  // computes, and tile t+1's row pointers are found while tile t's loads land.
  uint4 kraw[Chunks<KV, C::BN, C::DMAX>::N], vraw[Chunks<KV, C::BN, C::DMAX>::N];
  auto fetch_kv = [&]() {
    fetch<KV, C::BN, C::DMAX>(kraw, D, p.k_vec, [&](int r) { return key_k[r]; });
    fetch<KV, C::BN, C::DMAX>(vraw, Dv, p.v_vec, [&](int r) { return key_v[r]; });
  };
  if (s_lo < s_hi) {
    key_pointers(s_lo);
    __syncthreads();
    fetch_kv();
  }

  const int d4 = (D + 3) / 4 * 4;
  for (long long t0 = s_lo; t0 < s_hi; t0 += C::BN) {
    const int nk = static_cast<int>(min(static_cast<long long>(C::BN), s_hi - t0));
    const bool more = t0 + C::BN < s_hi;  // uniform
    __syncthreads();                      // the pointer reads of the last fetch and the last tile's P V are done
    if (more) key_pointers(t0 + C::BN);
    commit<KV, C::BN, C::DMAX>(Ks, C::DP, kraw);
    commit<KV, C::BN, C::DMAX>(Vs, C::DP, vraw);
    __syncthreads();  // tiles and the next pointers visible
    if (more) fetch_kv();

    // S = Q K^T, then scale, softcap and mask exactly as the CPU: sc = dot * scale;
    // sc = softcap * tanh(sc / softcap); sc += mask.
    {
      float s[C::SR][C::SK];
#pragma unroll
      for (int i = 0; i < C::SR; ++i)
#pragma unroll
        for (int j = 0; j < C::SK; ++j) s[i][j] = 0.0f;
      if (s_row0 < R) {
#pragma unroll 2
        for (int d = 0; d < d4; d += 4) {
          float4 kv[C::SK];
#pragma unroll
          for (int j = 0; j < C::SK; ++j)
            kv[j] = *reinterpret_cast<const float4*>(Ks + (s_key0 + j * C::LK * C::WK) * C::DP + d);
#pragma unroll
          for (int i = 0; i < C::SR; ++i) {
            if (C::LR == 1 && s_row0 + i >= R) break;  // warp-uniform in the decode mapping
            float4 qv = *reinterpret_cast<const float4*>(Qs + (s_row0 + i) * C::DP + d);
#pragma unroll
            for (int j = 0; j < C::SK; ++j) {
              s[i][j] = fmaf(qv.x, kv[j].x, s[i][j]);
              s[i][j] = fmaf(qv.y, kv[j].y, s[i][j]);
              s[i][j] = fmaf(qv.z, kv[j].z, s[i][j]);
              s[i][j] = fmaf(qv.w, kv[j].w, s[i][j]);
            }
          }
        }
      }
#pragma unroll
      for (int i = 0; i < C::SR; ++i) {
        const int row = s_row0 + i;
#pragma unroll
        for (int j = 0; j < C::SK; ++j) {
          const int key = s_key0 + j * C::LK * C::WK;
          float sc = kNegInf;
          const long long jj = t0 + key;
          if (row < R && key < nk && visible(mode, window, chunk, row_qpos[row], jj, start)) {
            sc = s[i][j] * scale;
            if (softcap > 0.0f) sc = softcap * tanhf(sc / softcap);
            if (mask) {
              long long o = row_moff[row] + jj * ms3;
              sc += mask_dt == kBool ? (mask[o] ? 0.0f : kNegInf) : load_f(mask, mask_dt, o);
            }
          }
          Ps[row * C::BP + key] = sc;
        }
      }
    }
    __syncthreads();

    // Online softmax: a warp per row, lanes across the tile's keys.
    for (int r = warp; r < R; r += kWarps) {
      constexpr int kPer = C::BN / 32;
      float v[kPer];
      float mx = kNegInf;
#pragma unroll
      for (int e = 0; e < kPer; ++e) {
        v[e] = Ps[r * C::BP + lane + 32 * e];
        mx = fmaxf(mx, v[e]);
      }
      mx = warp_max(mx);
      const float m_old = row_m[r];
      const float m_new = fmaxf(m_old, mx);
      float alpha = 1.0f, sum = 0.0f;
      if (m_new != kNegInf) {
        alpha = expf(m_old - m_new);  // 0 when m_old is -inf
#pragma unroll
        for (int e = 0; e < kPer; ++e) {
          float pe = expf(v[e] - m_new);  // 0 for masked (-inf) scores
          Ps[r * C::BP + lane + 32 * e] = pe;
          sum += pe;
        }
      } else {
#pragma unroll
        for (int e = 0; e < kPer; ++e) Ps[r * C::BP + lane + 32 * e] = 0.0f;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        row_m[r] = m_new;
        row_l[r] = row_l[r] * alpha + sum;
        row_alpha[r] = alpha;
      }
    }
    __syncthreads();

    // acc = acc * alpha + P V. Keys past nk have p = 0 and zero values.
#pragma unroll
    for (int r = 0; r < C::RPW; ++r) {
      if (p_row0 + r >= R) break;
      const float a = row_alpha[p_row0 + r];
#pragma unroll
      for (int c = 0; c < C::NCOL; ++c) acc[r][c] *= a;
    }
    const int kend = min(C::KPW, nk - p_key0);
    for (int k = 0; k < kend; k += 4) {
      float vv[4][C::NCOL];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const float* vrow = Vs + (p_key0 + k + kk) * C::DP + lane * C::VW;
#pragma unroll
        for (int n = 0; n < C::NK; ++n) {
          if constexpr (C::VW == 4) {
            float4 x = *reinterpret_cast<const float4*>(vrow + n * 32 * C::VW);
            vv[kk][n * 4 + 0] = x.x;
            vv[kk][n * 4 + 1] = x.y;
            vv[kk][n * 4 + 2] = x.z;
            vv[kk][n * 4 + 3] = x.w;
          } else {
            float2 x = *reinterpret_cast<const float2*>(vrow + n * 32 * C::VW);
            vv[kk][n * 2 + 0] = x.x;
            vv[kk][n * 2 + 1] = x.y;
          }
        }
      }
#pragma unroll
      for (int r = 0; r < C::RPW; ++r) {
        if (p_row0 + r >= R) break;
        const float4 pp = *reinterpret_cast<const float4*>(Ps + (p_row0 + r) * C::BP + p_key0 + k);
#pragma unroll
        for (int c = 0; c < C::NCOL; ++c) {
          acc[r][c] = fmaf(pp.x, vv[0][c], acc[r][c]);
          acc[r][c] = fmaf(pp.y, vv[1][c], acc[r][c]);
          acc[r][c] = fmaf(pp.z, vv[2][c], acc[r][c]);
          acc[r][c] = fmaf(pp.w, vv[3][c], acc[r][c]);
        }
      }
    }
  }
  __syncthreads();

  // Epilogue: accumulators to shared memory (per warp in the decode mapping, summed below), then
  // either the finished rows or this split's partial (m, l, acc).
  float* Os = Ks;  // K and V tiles are free now
  constexpr int kSlices = C::kWarpKeys ? kWarps : 1;
  float* my = Os + (C::kWarpKeys ? warp * C::BM * C::DP : 0);
#pragma unroll
  for (int r = 0; r < C::RPW; ++r) {
    if (p_row0 + r >= R) break;
#pragma unroll
    for (int n = 0; n < C::NK; ++n)
#pragma unroll
      for (int e = 0; e < C::VW; ++e)
        my[(p_row0 + r) * C::DP + n * 32 * C::VW + lane * C::VW + e] = acc[r][n * C::VW + e];
  }
  float* row_f = row_alpha;  // reused: per-row output factor f
  float* row_inv = Ps;       // reused: per-row 1 / denom
  if (tid < R) {
    if (p.nsplit == 1) {
      const int h = static_cast<int>((row_out[tid] / p.L) % p.Hq);
      float f, inv;
      finish_row(p, h, row_m[tid], row_l[tid], f, inv);
      row_f[tid] = f;
      row_inv[tid] = inv;
    } else {
      float* ml = p.part_ml + (row_out[tid] * p.nsplit + split) * 2;
      ml[0] = row_m[tid];
      ml[1] = row_l[tid];
    }
  }
  __syncthreads();
  for (int idx = tid; idx < R * Dv; idx += kThreads) {
    const int r = idx / Dv, c = idx - r * Dv;
    float a = 0.0f;
#pragma unroll
    for (int w = 0; w < kSlices; ++w) a += Os[w * C::BM * C::DP + r * C::DP + c];
    if (p.nsplit == 1)
      store_f(p.out, p.out_dt, row_out[r] * Dv + c, (a * row_f[r]) * row_inv[r]);
    else
      p.part_acc[(row_out[r] * p.nsplit + split) * Dv + c] = a;
  }
}

// Merges the nsplit partials of each output row: M = max(m_s, sink), w_s = exp(m_s - M),
// out = (sum_s w_s acc_s) * (1 / (sum_s w_s l_s + exp(sink - M))).
__global__ void __launch_bounds__(kThreads) attention_combine(const AttnParams p, long long rows) {
  __shared__ float w[kMaxSplits];
  __shared__ float s_inv;
  pdl_wait();
  pdl_trigger();
  for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
    const float* ml = p.part_ml + row * p.nsplit * 2;
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      float mx = kNegInf;
      for (int s = lane; s < p.nsplit; s += 32) mx = fmaxf(mx, ml[2 * s]);
      mx = warp_max(mx);
      float sink = kNegInf;
      if (p.sinks) sink = load_f(p.sinks, p.sinks_dt, ((row / p.L) % p.Hq) * p.sinks_stride);
      const float M = fmaxf(mx, sink);
      float l = 0.0f;
      for (int s = lane; s < p.nsplit; s += 32) {
        float ws = (M == kNegInf || ml[2 * s] == kNegInf) ? 0.0f : expf(ml[2 * s] - M);
        w[s] = ws;
        l += ws * ml[2 * s + 1];
      }
      l = warp_sum(l);
      if (lane == 0) s_inv = M == kNegInf ? 0.0f : 1.0f / (l + (p.sinks ? expf(sink - M) : 0.0f));
    }
    __syncthreads();
    const float inv = s_inv;
    const float* acc = p.part_acc + row * p.nsplit * p.Dv;
    for (int c = threadIdx.x; c < p.Dv; c += kThreads) {
      float a = 0.0f;
      for (int s = 0; s < p.nsplit; ++s) a += w[s] * acc[s * p.Dv + c];
      store_f(p.out, p.out_dt, row * p.Dv + c, a * inv);
    }
    __syncthreads();  // w and s_inv are rewritten for the next row
  }
}

// ---------------------------------------------------------------- tensor-core prefill (bf16 / f16)
//
// FlashAttention-2 style, for q, k and v all bf16 (or all f16), D == Dv in {64, 80, 96, 128, 256},
// no additive/bool mask, 16-byte aligned rows. Same CTA mapping, key range, visibility rule, split-K
// and epilogue formulas as attention_kernel; only the tile math differs:
//  * A CTA of 4 warps owns BM = 64 rows (row m = l * G + g, as above); warp w owns rows 16w..16w+15.
//  * Q (once) and K/V tiles (BN keys each, double-buffered) go global -> shared with cp.async in the
//    storage dtype; row pitch D + 8 elements, so the 8 row addresses of one ldmatrix phase fall in
//    distinct 16-byte bank groups. Keys outside [s_lo, s_hi) or before kv_start are zero-filled
//    (cp.async with src-size 0): no unwritten or padding slot is ever read.
//  * S = Q K^T with mma.m16n8k16 (f32 accumulate), scores scaled / softcapped / masked in registers,
//    online softmax per row in registers (a row's values live in the 4 lanes of a quad; max and sum
//    are reduced with xor-shuffles 1 and 2), P rounded to the storage dtype in registers and used
//    directly as the A operand of O += P V (the S accumulator layout of two n-tiles is the A layout
//    of one k-step). V is read with ldmatrix.trans.
//
// Fragment layouts of mma.m16n8k16 and ldmatrix: loom/backend/cuda/mma.cuh.
// Hence: Q rows (row-major, d contiguous) load A directly; K rows (d contiguous) are B in "col"
// layout (for each key n, its d values k contiguous) without .trans; V rows (d contiguous) need
// .trans to give B = V[keys, d] with keys along k.

template <int D_>
struct TcCfg {
  static constexpr int D = D_;
  static constexpr int BM = 64;                  // 4 warps x 16 rows
  static constexpr int BN = D <= 128 ? 64 : 32;  // keys per tile (D 256: fewer, for registers)
  static constexpr int PITCH = D + 8;            // elements per shared row
  static constexpr int CPR = D / 8;              // 16-byte chunks per row
  static constexpr bool kQRegs = D <= 128;       // Q fragments kept in registers (else re-read per tile)
  static_assert(D % 16 == 0, "mma k-steps of 16");
  static constexpr size_t kQ = 0;
  static constexpr size_t kStage = 2 * 2 * static_cast<size_t>(BN) * PITCH;  // K and V tiles of one stage
  static constexpr size_t kKV = kQ + 2 * static_cast<size_t>(BM) * PITCH;
  static constexpr size_t kPtr = kKV + 2 * kStage;  // row pointers [stage][k | v][BN]
  static constexpr size_t kBytes = kPtr + sizeof(const char*) * 2 * 2 * BN;
};

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; valid == false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async16(unsigned dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }

__device__ __forceinline__ void ldsm_x4(unsigned addr, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned addr, unsigned (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// Two f32 values rounded to T, lo in the low half.
template <typename T>
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<unsigned*>(&v);
  }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int D, typename T>
__global__ void __launch_bounds__(kThreads, 2)
    attention_tc_kernel(const __grid_constant__ AttnParams p, const __grid_constant__ KvTable t) {
  using C = TcCfg<D>;
  constexpr int BN = C::BN, PITCH = C::PITCH, NT = BN / 8, DT = D / 8;
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_wait();
  pdl_trigger();
  T* const Qs = reinterpret_cast<T*>(smem + C::kQ);
  T* const KVs = reinterpret_cast<T*>(smem + C::kKV);  // stage s: K at s * 2 * BN * PITCH, V BN * PITCH on
  const char** const ptrs = reinterpret_cast<const char**>(smem + C::kPtr);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gq = lane >> 2, tq = lane & 3;  // groupID, threadID_in_group
  const int tile = blockIdx.x / p.nsplit, split = blockIdx.x % p.nsplit;
  const int hk = blockIdx.y, b = blockIdx.z;
  const int G = p.G;
  const int m0 = tile * C::BM;
  const int R = min(C::BM, G * p.L - m0);  // valid rows of this tile (>= 1)

  const long long qoff = p.q_offsets ? load_index(p.q_offsets, p.qo_i64, b * p.qo_stride) : p.base_off;
  const long long start = p.kv_start ? load_index(p.kv_start, p.ks_i64, b * p.ks_stride) : 0;
  const int mode = p.mode, window = p.window, chunk = p.chunk;
  const float scale = p.scale, softcap = p.softcap;

  // This lane's two rows (C layout: g and g + 8 of the warp's 16) and the warp's position range.
  // Rows past R mirror the last valid one (computed, never stored).
  const int r_lo = warp * 16 + gq, r_hi = r_lo + 8;
  const long long qpos_lo = qoff + (m0 + min(r_lo, R - 1)) / G, qpos_hi = qoff + (m0 + min(r_hi, R - 1)) / G;
  const long long wq_min = qoff + (m0 + min(warp * 16, R - 1)) / G;
  const long long wq_max = qoff + (m0 + min(warp * 16 + 15, R - 1)) / G;

  // Keys any row of the tile may see, and this split's share in whole tiles (as attention_kernel).
  const long long qmin = qoff + m0 / G, qmax = qoff + (m0 + R - 1) / G;
  long long lo = max(start, 0LL), hi = p.kv_len;
  if (mode != 0) hi = min(hi, qmax + 1);
  if (mode == 2) lo = max(lo, qmin - window + 1);
  if (mode == 3) lo = max(lo, start + (max(qmin, start) - start) / chunk * chunk);
  long long s_lo = hi, s_hi = hi;
  if (hi > lo) {
    long long tiles = (hi - lo + BN - 1) / BN;
    long long per = (tiles + p.nsplit - 1) / p.nsplit;
    s_lo = min(hi, lo + split * per * BN);
    s_hi = min(hi, s_lo + per * BN);
  }

  // Row pointers of keys [t0, t0 + BN) ∩ [start, s_hi) into ptrs[stage] (null: zero-fill), found as in
  // attention_kernel: `blk` (uniform over the CTA) tracks the block of t0, advanced monotonically.
  int blk = 0;
  {
    int z = t.count - 1;
    while (blk < z) {
      int mid = (blk + z + 1) >> 1;
      if (t.start[mid] <= s_lo)
        blk = mid;
      else
        z = mid - 1;
    }
  }
  auto key_pointers = [&](long long t0, int stage) {
    while (t.start[blk + 1] <= t0) ++blk;
    if (tid < BN) {
      const char *kp = nullptr, *vp = nullptr;
      const long long j = t0 + tid;
      if (j < s_hi && j >= start) {
        int a = blk;
        if (t.start[a + 1] <= j) {
          int z = min(a + tid, t.count - 1);
          ++a;
          while (a < z) {
            int mid = (a + z + 1) >> 1;
            if (t.start[mid] <= j)
              a = mid;
            else
              z = mid - 1;
          }
        }
        const long long pidx = j - t.start[a];
        kp = t.k[a] + (static_cast<long long>(b) * t.kstr[a][0] + static_cast<long long>(hk) * t.kstr[a][1] +
                       pidx * t.kstr[a][2]) *
                          static_cast<long long>(sizeof(T));
        vp = t.v[a] + (static_cast<long long>(b) * t.vstr[a][0] + static_cast<long long>(hk) * t.vstr[a][1] +
                       pidx * t.vstr[a][2]) *
                          static_cast<long long>(sizeof(T));
      }
      ptrs[stage * 2 * BN + tid] = kp;
      ptrs[stage * 2 * BN + BN + tid] = vp;
    }
  };
  auto issue_kv = [&](int stage) {
    const char* const* kp = ptrs + stage * 2 * BN;
    T* ks = KVs + stage * 2 * BN * PITCH;
    T* vs = ks + BN * PITCH;
#pragma unroll 4
    for (int c = tid; c < BN * C::CPR; c += kThreads) {
      const int r = c / C::CPR, d = (c % C::CPR) * 8;
      const char* k = kp[r];
      const char* v = kp[BN + r];
      cp_async16(smem_u32(ks + r * PITCH + d), k ? k + d * sizeof(T) : p.q, k != nullptr);
      cp_async16(smem_u32(vs + r * PITCH + d), v ? v + d * sizeof(T) : p.q, v != nullptr);
    }
  };

  // Prologue: pointers of tile 0, then Q and tile 0 in one cp.async group, then tile 1's pointers.
  if (s_lo < s_hi) key_pointers(s_lo, 0);
  __syncthreads();
  for (int c = tid; c < C::BM * C::CPR; c += kThreads) {
    const int r = c / C::CPR, d = (c % C::CPR) * 8;
    const char* src = p.q;
    if (r < R) {
      const int m = m0 + r, l = m / G, h = hk * G + (m - l * G);
      src = p.q + ((static_cast<long long>(b) * p.Hq + h) * p.L + l) * D * static_cast<long long>(sizeof(T)) +
            d * sizeof(T);
    }
    cp_async16(smem_u32(Qs + r * PITCH + d), src, r < R);
  }
  if (s_lo < s_hi) issue_kv(0);
  cp_async_commit();
  if (s_lo + BN < s_hi) key_pointers(s_lo + BN, 1);

  float o[DT][4];
#pragma unroll
  for (int j = 0; j < DT; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
  float m_lo = kNegInf, m_hi = kNegInf, l_lo = 0.0f, l_hi = 0.0f;  // l: this lane's partial row sums
  unsigned qf[C::kQRegs ? D / 16 : 1][4];
  // ldmatrix source addresses (per lane) inside a 16-row / 16-column block, see the layout note.
  const int a_row = (lane & 7) + ((lane >> 3) & 1) * 8, a_col = (lane >> 4) * 8;  // Q (A) and V (.trans)
  const int b_row = (lane & 7) + (lane >> 4) * 8, b_col = ((lane >> 3) & 1) * 8;  // K (B)
  const unsigned q_base = smem_u32(Qs + (warp * 16 + a_row) * PITCH + a_col);

  int stage = 0;
  for (long long t0 = s_lo; t0 < s_hi; t0 += BN, stage ^= 1) {
    cp_async_wait_all();
    __syncthreads();  // tile t0 landed for all threads; every warp is done with the other stage
    if (t0 + BN < s_hi) {
      issue_kv(stage ^ 1);
      cp_async_commit();
    }
    if (t0 + 2 * BN < s_hi) key_pointers(t0 + 2 * BN, stage);  // read by issue_kv after the next barrier
    if constexpr (C::kQRegs) {
      if (t0 == s_lo) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(q_base + kk * 16 * sizeof(T), qf[kk]);
      }
    }
    const T* ks = KVs + stage * 2 * BN * PITCH;
    const T* vs = ks + BN * PITCH;

    // S = Q K^T: s[j] is the C fragment of keys 8j..8j+7.
    float s[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
    const unsigned k_base = smem_u32(ks + b_row * PITCH + b_col);
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      unsigned a[4];
      if constexpr (C::kQRegs) {
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = qf[kk][i];
      } else {
        ldsm_x4(q_base + kk * 16 * sizeof(T), a);
      }
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        unsigned bk[4];
        ldsm_x4(k_base + (np * 16 * PITCH + kk * 16) * sizeof(T), bk);
        mma16816<T>(s[2 * np], a, bk[0], bk[1]);
        mma16816<T>(s[2 * np + 1], a, bk[2], bk[3]);
      }
    }

    // Scale, softcap and visibility as the CPU: sc = dot * scale; sc = softcap * tanh(sc / softcap);
    // invisible keys (and keys past the range, zero-filled) get -inf. A tile every row of the warp
    // sees whole skips the per-key rule (warp-uniform test).
    const int nk = static_cast<int>(min(static_cast<long long>(BN), s_hi - t0));
    bool full = nk == BN && t0 >= start;
    if (mode != 0) full = full && t0 + BN - 1 <= wq_min;
    if (mode == 2) full = full && wq_max - t0 < window;
    if (mode == 3) full = full && (t0 - start) / chunk == (wq_max - start) / chunk;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[j][e] * scale;
        if (softcap > 0.0f) x = softcap * tanhf(x / softcap);
        if (!full) {
          const int key = 8 * j + 2 * tq + (e & 1);
          if (!(key < nk && visible(mode, window, chunk, e < 2 ? qpos_lo : qpos_hi, t0 + key, start))) x = kNegInf;
        }
        s[j][e] = x;
      }
    }

    // Online softmax per row: new max, rescale factor alpha, p = exp(s - max) (0 for -inf scores).
    float mx_lo = kNegInf, mx_hi = kNegInf;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      mx_lo = fmaxf(mx_lo, fmaxf(s[j][0], s[j][1]));
      mx_hi = fmaxf(mx_hi, fmaxf(s[j][2], s[j][3]));
    }
    const float mn_lo = fmaxf(m_lo, quad_max(mx_lo)), mn_hi = fmaxf(m_hi, quad_max(mx_hi));
    // A row with nothing visible yet keeps max -inf, alpha 1, and p = exp(-inf - 0) = 0.
    const float base_lo = mn_lo == kNegInf ? 0.0f : mn_lo, base_hi = mn_hi == kNegInf ? 0.0f : mn_hi;
    const float al_lo = __expf(m_lo - base_lo), al_hi = __expf(m_hi - base_hi);  // 0 when m was -inf
    m_lo = mn_lo;
    m_hi = mn_hi;
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      s[j][0] = __expf(s[j][0] - base_lo);
      s[j][1] = __expf(s[j][1] - base_lo);
      s[j][2] = __expf(s[j][2] - base_hi);
      s[j][3] = __expf(s[j][3] - base_hi);
      sum_lo += s[j][0] + s[j][1];
      sum_hi += s[j][2] + s[j][3];
    }
    l_lo = l_lo * al_lo + sum_lo;
    l_hi = l_hi * al_hi + sum_hi;
#pragma unroll
    for (int j = 0; j < DT; ++j) {
      o[j][0] *= al_lo;
      o[j][1] *= al_lo;
      o[j][2] *= al_hi;
      o[j][3] *= al_hi;
    }

    // O += P V: the C fragments of key n-tiles 2kk and 2kk + 1 form the A fragment of k-step kk.
    const unsigned v_base = smem_u32(vs + a_row * PITCH + a_col);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      unsigned a[4] = {pack2<T>(s[2 * kk][0], s[2 * kk][1]), pack2<T>(s[2 * kk][2], s[2 * kk][3]),
                       pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        unsigned bv[4];
        ldsm_x4_trans(v_base + (kk * 16 * PITCH + dp * 16) * sizeof(T), bv);
        mma16816<T>(o[2 * dp], a, bv[0], bv[1]);
        mma16816<T>(o[2 * dp + 1], a, bv[2], bv[3]);
      }
    }
  }
  cp_async_wait_all();  // nothing in flight at exit (no tiles: the Q group)

  // Epilogue: the finished rows, or this split's partial (m, l, acc), as attention_kernel.
  l_lo = quad_sum(l_lo);
  l_hi = quad_sum(l_hi);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = half ? r_hi : r_lo;
    if (r >= R) continue;
    const int m = m0 + r, l = m / G, h = hk * G + (m - l * G);
    const long long orow = (static_cast<long long>(b) * p.Hq + h) * p.L + l;
    const float rm = half ? m_hi : m_lo, rl = half ? l_hi : l_lo;
    if (p.nsplit == 1) {
      float f, inv;
      finish_row(p, h, rm, rl, f, inv);
#pragma unroll
      for (int j = 0; j < DT; ++j) {
        const long long i = orow * D + 8 * j + 2 * tq;
        store_f(p.out, p.out_dt, i, (o[j][2 * half] * f) * inv);
        store_f(p.out, p.out_dt, i + 1, (o[j][2 * half + 1] * f) * inv);
      }
    } else {
      float* acc = p.part_acc + (orow * p.nsplit + split) * D;
#pragma unroll
      for (int j = 0; j < DT; ++j)
        *reinterpret_cast<float2*>(acc + 8 * j + 2 * tq) = make_float2(o[j][2 * half], o[j][2 * half + 1]);
      if (tq == 0) {
        float* ml = p.part_ml + (orow * p.nsplit + split) * 2;
        ml[0] = rm;
        ml[1] = rl;
      }
    }
  }
}

// ---------------------------------------------------------------- host side

int float_code(Dtype dt, const char* op, const char* what) {
  switch (dt) {
    case Dtype::f32:
      return kF32;
    case Dtype::f16:
      return kF16;
    case Dtype::bf16:
      return kBF16;
    default:
      throw NotSupportedError(
          format_error(op, std::string("CUDA kernel has no ") + std::string(name(dt)) + " " + what));
  }
}

bool index_is_i64(const Array& a, const char* op, const char* what) {
  if (a.dtype() != Dtype::i32 && a.dtype() != Dtype::i64)
    throw NotSupportedError(format_error(
        op, std::string("CUDA kernel takes int32 or int64 ") + what + ", got " + std::string(name(a.dtype()))));
  return a.dtype() == Dtype::i64;
}

// A stride as int32 for the table: dims of size 1 never move the pointer, so their stride is 0.
int table_stride(const Array& a, int axis, const char* op) {
  if (a.shape(axis) == 1) return 0;
  int64_t s = a.strides()[axis];
  if (s > INT_MAX || s < INT_MIN)
    throw NotSupportedError(
        format_error(op, "CUDA kernel needs key/value strides below 2^31 elements, got " + std::to_string(s)));
  return static_cast<int>(s);
}

// Rows that start on 16-byte boundaries (for the 16-byte vector loads)?
bool rows_vec_aligned(const void* base, int64_t esize, std::initializer_list<int64_t> strides) {
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  for (int64_t s : strides)
    if ((s * esize) % 16 != 0) return false;
  return true;
}

// Launches `kernel` (CTAs of BM rows, smem_bytes of dynamic shared memory) over the grid and split-K
// policy every attention kernel shares, then attention_combine when the keys were split.
template <typename Kernel>
void launch_split(Kernel kernel, int BM, size_t smem_bytes, AttnParams& p, const KvTable& t, const AttentionSpec& spec,
                  Array& out) {
  const char* op = "scaled_dot_product_attention";
  const long long rows = static_cast<long long>(p.G) * p.L;
  const long long tiles = (rows + BM - 1) / BM;
  const long long base = tiles * p.Hkv * p.B;
  if (tiles * kMaxSplits > INT_MAX || p.Hkv > 65535 || p.B > 65535)
    throw NotSupportedError(format_error(op, "CUDA kernel grid too large for this shape"));
  // Split-K when the CTAs cannot fill the GPU twice (two CTAs fit per SM), up to kSplitsPerPage parts
  // per 256-key page of the range a row tile can see.
  const int sms = sm_count(out.device());
  int nsplit = 1;
  const long long target = 2LL * 2 * sms;
  if (base < target) {
    long long span = p.kv_len;
    if (spec.mode == AttentionMode::window) span = std::min<long long>(span, static_cast<long long>(spec.window) + p.L);
    if (spec.mode == AttentionMode::chunk) span = std::min<long long>(span, static_cast<long long>(spec.chunk) + p.L);
    // Whole pages: a replayed decode step (generate/decode_graph.h) passes kv_len = its KV pages'
    // capacity (a multiple of 256 >= the op-by-op step's length), and ceil(len / 256) is the same for
    // both, so both cut the keys into the same parts and give bit-identical results. (Parts per page,
    // measured on an H100 at 4096 keys: with the 16-row decode tile 4 beat 1 for the Llama-1B shape; with
    // the 4-row tile 2 beats 4: 8B 4-bit tg 263 vs 252, 8-bit 206 vs 200, bf16 147 vs 143, 1B 4-bit 906 vs
    // 896 t/s; a CTA's second key tile is prefetched while the first is computed.)
    // A range of one page is not split: its combine pass would cost more than the split saves (H100,
    // tg64 from depth 0: Llama-3.1-8B-shaped 4-bit 360 vs 350 t/s, 1B 1206 vs 1157; at 4096 keys no change).
    const long long pages = std::max<long long>(1, (span + kSplitPage - 1) / kSplitPage);
    const long long by_len = pages == 1 ? 1 : pages * kSplitsPerPage;
    nsplit = static_cast<int>(std::min<long long>({(target + base - 1) / base, by_len, kMaxSplits}));
  }
  p.nsplit = nsplit;
  Array work;
  const long long out_rows = static_cast<long long>(p.B) * p.Hq * p.L;
  if (nsplit > 1) {
    work = Array::empty({out_rows * nsplit * (p.Dv + 2)}, Dtype::f32, out.device());
    p.part_acc = static_cast<float*>(work.raw_data());
    p.part_ml = p.part_acc + out_rows * nsplit * p.Dv;
  }
  cudaStream_t st = stream_of(out);
  LOOM_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)));
  dim3 grid(static_cast<unsigned>(tiles * nsplit), static_cast<unsigned>(p.Hkv), static_cast<unsigned>(p.B));
  launch_pdl(op, kernel, grid, dim3(kThreads), smem_bytes, st, p, t);
  if (nsplit > 1)
    launch_pdl(op, attention_combine, dim3(static_cast<unsigned>(std::min<long long>(out_rows, 1 << 20))), dim3(kThreads),
               0, st, p, out_rows);
  // `work` returns to the caching allocator here; the next user queues behind these kernels on the
  // same stream, so the release is stream-ordered.
}

template <class C, typename KV>
void launch(AttnParams& p, const KvTable& t, const AttentionSpec& spec, Array& out) {
  launch_split(attention_kernel<C, KV>, C::BM, C::kBytes, p, t, spec, out);
}

template <int DMAX>
void launch_dmax(AttnParams& p, const KvTable& t, const AttentionSpec& spec, Array& out) {
  dispatch_float(p.k_dt == kF32   ? Dtype::f32
                 : p.k_dt == kF16 ? Dtype::f16
                                  : Dtype::bf16,
                 "scaled_dot_product_attention", [&](auto tag) {
                   using KV = decltype(tag);
                   using Decode = Cfg<DMAX, true, sizeof(KV)>;
                   using Decode4 = Cfg<DMAX, true, sizeof(KV), 4>;
                   if (static_cast<long long>(p.G) * p.L <= Decode4::BM)
                     launch<Decode4, KV>(p, t, spec, out);
                   else if (static_cast<long long>(p.G) * p.L <= Decode::BM)
                     launch<Decode, KV>(p, t, spec, out);
                   else
                     launch<Cfg<DMAX, false, sizeof(KV)>, KV>(p, t, spec, out);
                 });
}

// The tensor-core prefill kernel, with the grid and split-K policy of launch() (its CTAs hold BM = 64
// rows as the prefill config does).
template <int D, typename T>
void launch_tc(AttnParams& p, const KvTable& t, const AttentionSpec& spec, Array& out) {
  launch_split(attention_tc_kernel<D, T>, TcCfg<D>::BM, TcCfg<D>::kBytes, p, t, spec, out);
}

// Runs the tensor-core kernel when it applies (see its head comment); false: the caller falls back.
bool try_launch_tc(AttnParams& p, const KvTable& t, const AttentionSpec& spec, Array& out, Dtype q_dt, Dtype k_dt,
                   Dtype v_dt, bool has_mask) {
  if (q_dt != k_dt || k_dt != v_dt || (k_dt != Dtype::bf16 && k_dt != Dtype::f16)) return false;
  if (has_mask || p.D != p.Dv || !p.q_vec || !p.k_vec || !p.v_vec) return false;
  // Decode-sized row counts keep the decode config of attention_kernel.
  const long long rows = static_cast<long long>(p.G) * p.L;
  if (rows <= (p.D <= 128 ? Cfg<128, true, 2>::BM : Cfg<256, true, 2>::BM)) return false;
  auto run = [&](auto tag) {
    using T = decltype(tag);
    switch (p.D) {
      case 64:
        launch_tc<64, T>(p, t, spec, out);
        return true;
      case 80:
        launch_tc<80, T>(p, t, spec, out);
        return true;
      case 96:
        launch_tc<96, T>(p, t, spec, out);
        return true;
      case 128:
        launch_tc<128, T>(p, t, spec, out);
        return true;
      case 256:
        launch_tc<256, T>(p, t, spec, out);
        return true;
      default:
        return false;
    }
  };
  return k_dt == Dtype::bf16 ? run(__nv_bfloat16{}) : run(__half{});
}

}  // namespace

void attention(const Array& q, const std::vector<Array>& k_blocks, const std::vector<Array>& v_blocks, int64_t kv_len,
               const AttentionSpec& spec, const AttentionPositions& pos, const Array& mask, Array& out) {
  const char* op = "scaled_dot_product_attention";
  if (out.size() == 0) return;
  const int64_t B = q.shape(0), Hq = q.shape(1), L = q.shape(2), D = q.shape(3);
  const int64_t Hkv = k_blocks[0].shape(1), Dv = v_blocks[0].shape(3);
  if (std::max(D, Dv) > 256)
    throw NotSupportedError(format_error(
        op, "CUDA kernel supports head dims up to 256, got " + std::to_string(D) + " / " + std::to_string(Dv)));
  if (kv_len > INT_MAX / 2 || B * Hq * L > INT_MAX)
    throw NotSupportedError(format_error(op, "CUDA kernel shape too large"));

  AttnParams p;
  p.q = static_cast<const char*>(q.raw_data());
  p.out = static_cast<char*>(out.raw_data());
  p.q_dt = float_code(q.dtype(), op, "queries");
  p.out_dt = float_code(out.dtype(), op, "output");
  p.k_dt = float_code(k_blocks[0].dtype(), op, "keys");
  float_code(v_blocks[0].dtype(), op, "values");
  p.v_dt = p.k_dt;  // values are read (converted if need be) in the keys' dtype
  p.B = static_cast<int>(B);
  p.Hq = static_cast<int>(Hq);
  p.Hkv = static_cast<int>(Hkv);
  p.L = static_cast<int>(L);
  p.D = static_cast<int>(D);
  p.Dv = static_cast<int>(Dv);
  p.G = static_cast<int>(Hq / Hkv);
  p.kv_len = static_cast<int>(kv_len);
  p.scale = spec.scale > 0 ? spec.scale : 1.0f / std::sqrt(static_cast<float>(D));
  p.softcap = spec.softcap;
  p.mode = spec.mode == AttentionMode::none     ? 0
           : spec.mode == AttentionMode::causal ? 1
           : spec.mode == AttentionMode::window ? 2
                                                : 3;
  p.window = spec.window;
  p.chunk = spec.chunk > 0 ? spec.chunk : 1;
  p.base_off = pos.q_offset >= 0 ? pos.q_offset : kv_len - L;
  p.q_vec = rows_vec_aligned(q.raw_data(), static_cast<int64_t>(q.itemsize()), {D});
  if (pos.q_offsets.valid()) {
    p.q_offsets = static_cast<const char*>(pos.q_offsets.raw_data());
    p.qo_i64 = index_is_i64(pos.q_offsets, op, "q_offsets");
    p.qo_stride = pos.q_offsets.strides()[0];
  }
  if (pos.kv_start.valid()) {
    p.kv_start = static_cast<const char*>(pos.kv_start.raw_data());
    p.ks_i64 = index_is_i64(pos.kv_start, op, "kv_start");
    p.ks_stride = pos.kv_start.strides()[0];
  }
  if (spec.sinks.valid()) {
    p.sinks = static_cast<const char*>(spec.sinks.raw_data());
    p.sinks_dt = float_code(spec.sinks.dtype(), op, "sinks");
    p.sinks_stride = spec.sinks.strides()[0];
  }
  if (mask.valid()) {
    p.mask = static_cast<const char*>(mask.raw_data());
    p.mask_dt = mask.dtype() == Dtype::bool_ ? kBool : float_code(mask.dtype(), op, "mask");
    for (int i = 0; i < 4; ++i) p.mstr[i] = mask.shape(i) == 1 ? 0 : mask.strides()[i];
  }

  // The table of used blocks, as the CPU walks them: the first kv_len positions in block order.
  static thread_local KvTable t;  // ~22 KB: kept off the stack, filled per call
  t.count = 0;
  p.k_vec = p.v_vec = true;
  int64_t left = kv_len, at = 0;
  // The kernel reads keys and values as one element type. Values of another dtype than the keys (rare)
  // are converted into temporaries first; those return to the caching allocator in stream order.
  const Dtype kv_dtype = k_blocks[0].dtype();
  std::vector<Array> converted;
  const int64_t esz = static_cast<int64_t>(size_of(kv_dtype));
  for (size_t i = 0; i < k_blocks.size() && left > 0; ++i) {
    const Array& k = k_blocks[i];
    Array v = v_blocks[i];
    if (k.dtype() != kv_dtype || v.dtype() != v_blocks[0].dtype())
      throw NotSupportedError(format_error(op, "CUDA kernel needs one dtype across key/value blocks"));
    int64_t len = std::min(left, k.shape(2));
    if (len == 0) continue;
    if (v.dtype() != kv_dtype) {
      Array c = Array::empty(v.shape(), kv_dtype, out.device());
      copy(v, c);
      converted.push_back(c);
      v = c;
    }
    if (t.count == kMaxKvBlocks)
      throw NotSupportedError(format_error(op, "CUDA kernel takes at most " + std::to_string(kMaxKvBlocks) +
                                                   " key/value blocks (" + std::to_string(kMaxKvBlocks * 256) +
                                                   " tokens of 256-token pages); got more for kv length " +
                                                   std::to_string(kv_len)));
    int n = t.count++;
    t.start[n] = static_cast<int>(at);
    t.k[n] = static_cast<const char*>(k.raw_data());
    t.v[n] = static_cast<const char*>(v.raw_data());
    for (int a = 0; a < 3; ++a) {
      t.kstr[n][a] = table_stride(k, a, op);
      t.vstr[n][a] = table_stride(v, a, op);
    }
    p.k_vec = p.k_vec && rows_vec_aligned(k.raw_data(), esz, {t.kstr[n][0], t.kstr[n][1], t.kstr[n][2]});
    p.v_vec = p.v_vec && rows_vec_aligned(v.raw_data(), esz, {t.vstr[n][0], t.vstr[n][1], t.vstr[n][2]});
    left -= len;
    at += len;
  }
  t.start[t.count] = static_cast<int>(at);
  if (t.count == 0) {  // no keys: every row sees nothing (the sink alone adds no value) -> zeros
    t.count = 1;
    t.k[0] = t.v[0] = nullptr;
    t.kstr[0][0] = t.kstr[0][1] = t.kstr[0][2] = t.vstr[0][0] = t.vstr[0][1] = t.vstr[0][2] = 0;
    t.start[1] = 0;
  }

  if (try_launch_tc(p, t, spec, out, q.dtype(), k_blocks[0].dtype(), v_blocks[0].dtype(), mask.valid())) return;
  const int64_t dmax = std::max(D, Dv);
  if (dmax <= 64)
    launch_dmax<64>(p, t, spec, out);
  else if (dmax <= 128)
    launch_dmax<128>(p, t, spec, out);
  else
    launch_dmax<256>(p, t, spec, out);
}

}  // namespace loom::cuda
