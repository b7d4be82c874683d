#include "loom/models/model.h"

#include <algorithm>
#include <limits>
#include <typeinfo>

#include "loom/common/error.h"
#include "loom/models/ssm_backbone.h"

#include "loom/ops/device.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "loom/ops/ssm.h"

namespace loom::models {

Step make_step(const Cache& cache, int64_t length) {
  Step s;
  s.offset = cache.offset();
  s.length = length;
  s.attn.q_offset = s.offset;
  if (cache.device_offset.valid()) {
    // A captured step: every position comes from the device (see Cache::device_offset).
    s.device_offset = cache.device_offset;
    s.attn.q_offset = -1;
    s.attn.q_offsets = cache.device_offset;
    s.rope_offsets = cache.device_offset;
    if (cache.left_padding.valid()) {
      s.attn.kv_start = cache.left_padding;
      s.rope_offsets = subtract(cache.device_offset, astype(cache.left_padding, Dtype::i32));
    }
    return s;
  }
  if (cache.left_padding.valid()) {
    s.attn.kv_start = cache.left_padding;
    s.rope_offsets = astype(subtract(full(cache.left_padding.shape(), static_cast<double>(s.offset), Dtype::i32),
                                     cache.left_padding), Dtype::i32);
    Array inside = subtract(astype(cache.left_padding, Dtype::i32),
                            full(cache.left_padding.shape(), static_cast<double>(s.offset), Dtype::i32));
    s.scan_padding = maximum(inside, zeros(cache.left_padding.shape(), Dtype::i32));
  }
  return s;
}

Array apply_rope(const nn::Rope& rope, const Array& x, const Step& step) {
  if (!step.rope_offsets.valid()) return rope(x, step.offset);
  // A captured step passes its span from the host: offset + length (exact without left padding, an
  // upper bound with it, which only a longrope model crossing its original window could tell apart).
  if (step.device_offset.valid()) return rope(x, step.rope_offsets, step.offset + step.length);
  return rope(x, step.rope_offsets);
}

Array quantized_attention(const Array& q, const Array& k, const Array& v, QuantizedKVCache& cache, const Step& step,
                          const AttentionSpec& spec) {
  // mlx-lm scores with quantized_matmul straight over the packed keys/values. Here the used
  // positions are dequantized (page by page) and handed to the fused float kernel instead: the
  // result is the same up to rounding (both compute with the dequantized values), and the masks,
  // GQA and per-row offsets are the float path's by construction. The cost is a transient float
  // copy of this layer's keys/values per step, so the memory saving holds for the stored cache but
  // not for the attention's working set; a fused attention over the packed pages is later work.
  return fast::scaled_dot_product_attention(q, cache.update_and_fetch(k, v), spec, step.attn);
}

namespace {

// Attention over a ChunkedKVCache (Llama 4's chunked local layers). The cache first drops what no new
// query can see (maybe_trim_front), then holds absolute positions [start_position, offset) at storage
// indices [0, offset - start_position). The attention kernel places query row i of batch row b at
// storage q_offset(b) + i and starts chunks at kv_start(b); shifting both by -start_position keeps
// every position and chunk boundary where it was: kv_start becomes left_padding - start_position,
// which is negative once the cache has trimmed. Then key j is padding iff its absolute position is
// below left_padding, and chunk ids are (absolute - left_padding) / chunk as in the uncached full
// pass (never negative for a visible key, so the kernel's integer division is a floor).
Array chunked_attention(const Array& q, const Array& k, const Array& v, ChunkedKVCache& cache, const Step& step,
                        const AttentionSpec& spec) {
  if (spec.mode != AttentionMode::chunk || spec.chunk > cache.chunk_size())
    throw ValueError(format_error("attention", "the chunked KV cache (chunk_size " + std::to_string(cache.chunk_size()) +
                                                   ") serves only chunked attention with chunks of at most that size"));
  cache.maybe_trim_front();
  fast::KVBlocks blocks = cache.update_and_fetch(k, v);
  const int64_t start = cache.start_position();
  if (start == 0) return fast::scaled_dot_product_attention(q, blocks, spec, step.attn);
  auto shifted = [start](const Array& a) {
    return astype(subtract(astype(a, Dtype::i32), full({1}, static_cast<double>(start), Dtype::i32)), Dtype::i32);
  };
  AttentionPositions pos;
  pos.q_offset = step.attn.q_offset >= 0 ? step.attn.q_offset - start : blocks.length - q.shape(2);
  if (step.attn.q_offsets.valid()) pos.q_offsets = shifted(step.attn.q_offsets);
  pos.kv_start = step.attn.kv_start.valid() ? shifted(step.attn.kv_start)
                                            : full({q.shape(0)}, -static_cast<double>(start), Dtype::i32);
  return fast::scaled_dot_product_attention(q, blocks, spec, pos);
}

}  // namespace

Array cached_attention(const Array& q_in, const Array& k_in, const Array& v, KVCache& cache, const Step& step,
                       const AttentionSpec& spec, const nn::Rope* rope) {
  if (step.device_offset.valid() && typeid(cache) != typeid(KVCache))
    throw NotSupportedError(format_error("attention", "a captured decode step needs a plain KV cache"));
  // A captured step rotates and writes in one launch (the rotation is fast::rope's, bit for bit); the
  // magnitude-scaled ropes (yarn, longrope) rotate first as everywhere else.
  const bool fuse = rope && step.device_offset.valid() && rope->mscale() == 1.0f && spec.mode != AttentionMode::none &&
                    k_in.dtype() == q_in.dtype() && v.dtype() == q_in.dtype();
  Array q = q_in, k = k_in;
  if (rope && !fuse) {
    q = apply_rope(*rope, q, step);
    k = apply_rope(*rope, k, step);
  }
  if (auto* quantized = dynamic_cast<QuantizedKVCache*>(&cache))
    return quantized_attention(q, k, v, *quantized, step, spec);
  if (auto* chunked = dynamic_cast<ChunkedKVCache*>(&cache)) return chunked_attention(q, k, v, *chunked, step, spec);
  auto* rotating = dynamic_cast<RotatingKVCache*>(&cache);
  if (step.device_offset.valid()) {
    // A captured step: the returned pages hold unwritten positions past the offset, which only a mask
    // from the query positions hides.
    if (rotating || spec.mode == AttentionMode::none)
      throw NotSupportedError(format_error("attention", "a captured decode step needs a plain KV cache and masked attention"));
    Array position = slice_axis(step.device_offset, 0, 0, 1);
    if (!fuse) return fast::scaled_dot_product_attention(q, cache.update_and_fetch_at(k, v, position), spec, step.attn);
    KVCache::PageWrite w = cache.write_at(k, v);
    q = fast::rope_kv_write(q, k, v, rope->spec_for(step.offset + step.length), step.rope_offsets, w.k_page, w.v_page,
                            position, w.base);
    cache.advance(k.shape(2));
    return fast::scaled_dot_product_attention(q, w.blocks, spec, step.attn);
  }
  if (!rotating) return fast::scaled_dot_product_attention(q, cache.update_and_fetch(k, v), spec, step.attn);
  if (step.attn.kv_start.valid() || step.attn.q_offsets.valid())
    throw NotSupportedError(format_error("attention", "a left-padded batch with the rotating KV cache (--max-kv-size) "
                                                      "is not supported"));
  if (spec.mode == AttentionMode::chunk)
    throw NotSupportedError(format_error("attention", "chunked local attention with the rotating KV cache "
                                                      "(--max-kv-size) is not supported"));
  // The rotating cache returns what it stores in temporal order: [first `keep` tokens][a contiguous
  // run of the most recent tokens, ending with these L new ones]. Attention runs in those storage
  // coordinates: query row i sits at (stored - L + i), and a causal mask there is right because
  // storage order is time order. As mlx-lm's RotatingKVCache.make_mask, the mask is also a window of
  // max_size storage positions (the model's own window, if it has one): after a prefill the cache
  // briefly holds up to max_size - 1 + L positions and each new token sees the max_size before it
  // (so an early prompt token may lose sight of the kept tokens, exactly as in mlx-lm). For a
  // single decode token, at most max_size positions are stored and the window hides none of them:
  // it sees the kept tokens and the newest max_size - keep.
  fast::KVBlocks blocks = rotating->update_and_fetch(k, v);
  AttentionSpec s = spec;
  if (s.mode == AttentionMode::causal) {
    s.mode = AttentionMode::window;
    s.window = static_cast<int>(std::min<int64_t>(rotating->max_size(), std::numeric_limits<int>::max()));
  }
  AttentionPositions pos;
  pos.q_offset = blocks.length - q.shape(2);
  return fast::scaled_dot_product_attention(q, blocks, s, pos);
}

std::unique_ptr<LayerCache> attention_layer_cache(const CacheOptions& options) {
  if (options.max_kv_size) return std::make_unique<RotatingKVCache>(*options.max_kv_size, options.keep);
  return std::make_unique<KVCache>();
}

Cache make_hybrid_cache(const std::vector<bool>& recurrent, size_t n_state, const CacheOptions& options) {
  Cache c;
  for (bool r : recurrent)
    c.layers.push_back(r ? std::unique_ptr<LayerCache>(std::make_unique<ArraysCache>(n_state))
                         : attention_layer_cache(options));
  return c;
}

Cache LanguageModel::make_cache(const CacheOptions& options) const {
  Cache c;
  for (int i = 0; i < num_layers(); ++i) c.layers.push_back(attention_layer_cache(options));
  return c;
}

Array on_device_of(const Array& state, const Array& x) {
  return state.valid() && !(state.device() == x.device()) ? to_device(state, x.device()) : state;
}

Array mamba1_scan_output(const nn::Linear& dt_proj, const nn::Linear& out_proj, const Array& A_log, const Array& D,
                         const Array& u, const Array& dt, const Array& Bm, const Array& Cm, const Array& z,
                         const Array& conv_state, ArraysCache& cache, const Array& left_padding, const Array& x) {
  Array delta = softplus(astype(dt_proj(dt), Dtype::f32));
  Array A = negative(exp(astype(A_log, Dtype::f32)));
  fast::ScanResult scan =
      fast::selective_scan(astype(u, Dtype::f32), delta, A, astype(Bm, Dtype::f32), astype(Cm, Dtype::f32),
                           astype(D, Dtype::f32), on_device_of(cache[1], x), left_padding);
  cache[0] = conv_state;
  cache[1] = scan.state;
  cache.advance(x.shape(1));
  return out_proj(fast::swiglu(z, astype(scan.y, x.dtype())));
}

void sanitize_conv1d_weights(WeightMap& w, const std::string& name) {
  for (auto& [key, v] : w)
    if (key.find(name) != std::string::npos && v.ndim() == 3 && v.shape(-1) != 1)
      v = reshape(contiguous(v), {v.shape(0), v.shape(2), 1});
}

}  // namespace loom::models
