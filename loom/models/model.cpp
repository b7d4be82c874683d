#include "loom/models/model.h"

#include "loom/ops/fast.h"
#include "loom/ops/ops.h"

namespace loom::models {

Step make_step(const Cache& cache, int64_t length) {
  Step s;
  s.offset = cache.offset();
  s.length = length;
  s.attn.q_offset = s.offset;
  if (cache.left_padding.valid()) {
    s.attn.kv_start = cache.left_padding;
    s.rope_offsets = astype(subtract(full(cache.left_padding.shape(), static_cast<double>(s.offset), Dtype::i32),
                                     cache.left_padding), Dtype::i32);
  }
  return s;
}

Array apply_rope(const nn::Rope& rope, const Array& x, const Step& step) {
  return step.rope_offsets.valid() ? rope(x, step.rope_offsets) : rope(x, step.offset);
}

Array cached_attention(const Array& q, const Array& k, const Array& v, KVCache& cache, const Step& step,
                       const AttentionSpec& spec) {
  fast::KVBlocks blocks = cache.update_and_fetch(k, v);
  return fast::scaled_dot_product_attention(q, blocks, spec, step.attn);
}

Cache LanguageModel::make_cache() const {
  Cache c;
  for (int i = 0; i < num_layers(); ++i) c.layers.push_back(std::make_unique<KVCache>());
  return c;
}

}  // namespace loom::models
