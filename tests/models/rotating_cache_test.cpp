// RotatingKVCache (mlx-lm's, for --max-kv-size): the ring bookkeeping on tiny hand-made k/v whose
// every slot is identifiable, and the llama fixture's logits through the rotating cache against
// (a) the plain KVCache while nothing is dropped and (b) an independent oracle once it rotates: a
// full pass with an explicit additive attention mask saying which earlier tokens each token saw.
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>

#include "loom/common/error.h"
#include "loom/generate/prompt_cache.h"
#include "loom/models/cache.h"
#include "loom/models/transformer.h"
#include "loom/ops/fast.h"
#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {

using models::RotatingKVCache;

// Keys [1, 1, n, 1] holding the absolute positions first..first+n-1; values 100 + position.
std::pair<Array, Array> kv_for(int64_t first, int64_t n) {
  std::vector<float> k, v;
  for (int64_t p = first; p < first + n; ++p) k.push_back(static_cast<float>(p)), v.push_back(100.0f + p);
  return {Array::from(k, {1, 1, n, 1}), Array::from(v, {1, 1, n, 1})};
}

// The positions a fetch returns, in block order (checks every value is 100 + its key).
std::vector<int> seen(const fast::KVBlocks& b) {
  std::vector<int> out;
  int64_t left = b.length;
  for (size_t i = 0; i < b.keys.size() && left > 0; ++i) {
    auto k = contiguous(b.keys[i]).to_float_vector(), v = contiguous(b.values[i]).to_float_vector();
    for (size_t j = 0; j < k.size() && left > 0; ++j, --left) {
      EXPECT_EQ(v[j], 100.0f + k[j]) << "value slot does not belong to its key";
      out.push_back(static_cast<int>(k[j]));
    }
  }
  return out;
}

std::vector<int> push(RotatingKVCache& c, int64_t first, int64_t n) {
  auto [k, v] = kv_for(first, n);
  return seen(c.update_and_fetch(k, v));
}

std::vector<int> ring(const RotatingKVCache& c) {  // state(): the buffer in slot order
  std::vector<int> out;
  for (float x : c.state().first.to_float_vector()) out.push_back(static_cast<int>(x));
  return out;
}

std::vector<int> range(int a, int b) {  // [a, b)
  std::vector<int> r;
  for (int i = a; i < b; ++i) r.push_back(i);
  return r;
}
std::vector<int> cat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST(RotatingKVCacheRing, OneTokenAtATimeKeepsTheFirstAndTheNewest) {
  // max_size 5, keep 2, step 3: the buffer grows 3 then 2 (min(step, max_size - offset)).
  RotatingKVCache c(5, 2, 3);
  for (int t = 0; t < 12; ++t) {
    std::vector<int> got = push(c, t, 1);
    // Temporal order: everything while t < 5; then the kept 0, 1 and the newest max_size - keep = 3.
    std::vector<int> want = t < 5 ? range(0, t + 1) : cat({0, 1}, range(t - 2, t + 1));
    EXPECT_EQ(got, want) << "after token " << t;
    EXPECT_EQ(c.offset(), t + 1);
    EXPECT_EQ(c.size(), std::min(t + 1, 5));
  }
  // Slots: 0..4 filled in order; token 5 wraps idx from 5 to keep = 2 (overwriting 2), 6 -> slot 3,
  // 7 -> 4, 8 -> 2, 9 -> 3, 10 -> 4, 11 -> 2 (idx then 3).
  EXPECT_EQ(ring(c), (std::vector<int>{0, 1, 11, 9, 10}));
  EXPECT_EQ(c.idx(), 3);
  EXPECT_EQ(c.meta_state(), (std::array<std::string, 4>{"2", "5", "12", "3"}));
}

TEST(RotatingKVCacheRing, PrefillFollowsUpdateConcat) {
  RotatingKVCache c(5, 2);
  // First multi-token update keeps everything (mlx-lm: self.keys = keys), even past max_size.
  EXPECT_EQ(push(c, 0, 7), range(0, 7));
  // One token: the 7-slot buffer is trimmed by 2 after the kept slots -> [0 1 4 5 6], idx 5 wraps to
  // 2 and token 7 overwrites slot 2 (token 4): ring [0 1 7 5 6], temporal [0 1 5 6 7].
  EXPECT_EQ(push(c, 7, 1), (std::vector<int>{0, 1, 5, 6, 7}));
  EXPECT_EQ(ring(c), (std::vector<int>{0, 1, 7, 5, 6}));
  // Two tokens: temporal order [0 1 5 6 7], trimmed by idx - max_size + 1 = 1 after the kept ->
  // [0 1 6 7], then [8 9] appended: 6 positions = max_size - 1 + L.
  EXPECT_EQ(push(c, 8, 2), (std::vector<int>{0, 1, 6, 7, 8, 9}));
  EXPECT_EQ(c.offset(), 10);
  // One token: trimmed by 1 -> [0 1 7 8 9], idx 5 -> 2, token 10 into slot 2.
  EXPECT_EQ(push(c, 10, 1), (std::vector<int>{0, 1, 8, 9, 10}));
  EXPECT_EQ(ring(c), (std::vector<int>{0, 1, 10, 8, 9}));
}

TEST(RotatingKVCacheRing, PrefillBelowMaxSizeThenGrowAndWrap) {
  RotatingKVCache c(8, 2, 256);
  EXPECT_EQ(push(c, 0, 3), range(0, 3));
  // Not full: trim size 3 - 8 + 1 < 0, plain append.
  EXPECT_EQ(push(c, 3, 3), range(0, 6));
  // offset 6 >= buffer 6 < max 8: grows by min(256, 8 - 6) = 2, writes slot 6, then 7.
  EXPECT_EQ(push(c, 6, 1), range(0, 7));
  EXPECT_EQ(push(c, 7, 1), range(0, 8));
  // Full: token 8 wraps into slot 2.
  EXPECT_EQ(push(c, 8, 1), cat({0, 1}, range(3, 9)));
  EXPECT_EQ(ring(c), (std::vector<int>{0, 1, 8, 3, 4, 5, 6, 7}));
}

TEST(RotatingKVCacheRing, StateRoundTripAndTrim) {
  RotatingKVCache a(5, 2);
  push(a, 0, 4);
  push(a, 4, 1);
  push(a, 5, 1);
  push(a, 6, 1);  // ring [0 1 5 6 4], idx 4, offset 7
  auto [k, v] = a.state();
  RotatingKVCache b(1, 0);
  b.set_full_state(k, v, a.meta_state());
  for (int t = 7; t < 11; ++t) EXPECT_EQ(push(a, t, 1), push(b, t, 1)) << "token " << t;
  EXPECT_EQ(push(a, 11, 3), push(b, 11, 3));
  EXPECT_THROW(b.set_full_state(k, v, {"2", "5", "x", "4"}), ValueError);

  // Trimmable only before the ring is full (mlx-lm's is_trimmable).
  RotatingKVCache c(6, 2);
  push(c, 0, 4);
  EXPECT_TRUE(c.is_trimmable());
  c.trim(2);  // offset 2, idx 2: the next tokens overwrite positions 2, 3
  EXPECT_EQ(push(c, 20, 1), (std::vector<int>{0, 1, 20}));
  push(c, 21, 3);
  push(c, 24, 1);  // 7 positions in a 6-ring
  EXPECT_FALSE(c.is_trimmable());
  EXPECT_THROW(c.trim(1), NotSupportedError);
  EXPECT_THROW(RotatingKVCache(4, 4), ValueError);
}

// ---- model level ----

class RotatingModel : public ::testing::Test {
 protected:
  void SetUp() override {
    ref = load_reference("llama");
    lm = models::load_model(fixture_dir("llama"));
  }
  // Logits [T, V] of `ids` fed in the given chunk sizes (the rest one at a time).
  Array run(models::Cache& cache, const std::vector<int32_t>& ids, const std::vector<int64_t>& chunks) {
    std::vector<Array> parts;
    int64_t T = static_cast<int64_t>(ids.size());
    size_t c = 0;
    for (int64_t s = 0; s < T;) {
      int64_t n = c < chunks.size() ? chunks[c++] : 1;
      std::vector<int32_t> part(ids.begin() + s, ids.begin() + std::min(T, s + n));
      parts.push_back(lm.model->forward(tokens_array(part), cache, models::LogitsMode::all));
      s += n;
    }
    Array l = parts.size() == 1 ? parts[0] : concatenate(parts, 1);
    return reshape(l, {T, l.shape(-1)});
  }
  models::Cache rotating(int64_t max_size, int64_t keep) {
    models::CacheOptions o;
    o.max_kv_size = max_size;
    o.keep = keep;
    return lm.model->make_cache(o);
  }
  Reference ref;
  models::LoadedModel lm;
};

float max_abs_diff(const Array& a, const Array& b) {
  auto x = a.to_float_vector(), y = b.to_float_vector();
  EXPECT_EQ(x.size(), y.size());
  float d = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) d = std::max(d, std::abs(x[i] - y[i]));
  return d;
}

// The oracle: one full pass over all T tokens, written out from the model's own layers with
// fast::scaled_dot_product_attention in AttentionMode::none and an explicit additive mask [1, 1, T, T]
// (0 where visible(i, j), -inf elsewhere). Each token's hidden states (hence its keys/values at every
// layer) depend only on what that token saw, so row i of this pass equals token i's logits from any
// cache schedule that showed token i exactly {j : visible(i, j)} at every layer.
Array oracle_logits(models::LanguageModel& lm_base, const std::vector<int32_t>& ids,
                    const std::function<bool(int64_t, int64_t)>& visible) {
  auto& lm = dynamic_cast<models::DecoderLM&>(lm_base);
  int64_t T = static_cast<int64_t>(ids.size());
  std::vector<float> m(T * T);
  for (int64_t i = 0; i < T; ++i)
    for (int64_t j = 0; j < T; ++j) m[i * T + j] = visible(i, j) ? 0.0f : -std::numeric_limits<float>::infinity();
  Array mask = Array::from(m, {1, 1, T, T});
  models::Step step;  // offset 0: RoPE at absolute positions 0..T-1
  step.length = T;
  Array x = lm.model.embed_tokens(tokens_array(ids), Dtype::f32);
  for (const auto& blk : lm.model.layers) {
    const models::DecoderAttention& a = blk->self_attn;
    Array h = blk->input_layernorm(x);
    Array q = reshape(a.q_proj(h), {1, T, a.n_heads, a.head_dim});
    Array k = reshape(a.k_proj(h), {1, T, a.n_kv_heads, a.head_dim});
    Array v = transpose(reshape(a.v_proj(h), {1, T, a.n_kv_heads, a.head_dim}), {0, 2, 1, 3});
    if (a.q_norm) q = (*a.q_norm)(q), k = (*a.k_norm)(k);
    q = models::apply_rope(a.rope, transpose(q, {0, 2, 1, 3}), step);
    k = models::apply_rope(a.rope, transpose(k, {0, 2, 1, 3}), step);
    AttentionSpec spec = a.spec;
    spec.mode = AttentionMode::none;
    Array o = fast::scaled_dot_product_attention(q, k, v, spec, {}, mask);
    x = x + a.o_proj(reshape(transpose(o, {0, 2, 1, 3}), {1, T, a.n_heads * a.head_dim}));
    x = x + (*blk->mlp)(blk->post_attention_layernorm(x));
  }
  Array h = lm.model.norm(x);
  Array logits = lm.lm_head ? (*lm.lm_head)(h) : lm.model.embed_tokens.as_linear(h);
  return reshape(logits, {T, logits.shape(-1)});
}

TEST_F(RotatingModel, OracleIsTheModelWhenEverythingIsVisible) {
  // Sanity of the oracle itself: a plain causal mask reproduces transformers' logits.
  Array got = oracle_logits(*lm.model, ref.prompts[0], [](int64_t i, int64_t j) { return j <= i; });
  expect_logits_near(got, ref.logits[0], kF32, "oracle, causal");
}

TEST_F(RotatingModel, EqualsThePlainCacheWhileItFits) {
  const auto& ids = ref.prompts[0];  // 12 tokens
  for (std::vector<int64_t> chunks : {std::vector<int64_t>{}, std::vector<int64_t>{5, 1, 3}}) {
    models::Cache plain = lm.model->make_cache();
    Array want = run(plain, ids, chunks);
    for (int64_t max_size : {12, 16}) {  // >= the 12 tokens: nothing is ever dropped
      models::Cache rot = rotating(max_size, 4);
      Array got = run(rot, ids, chunks);
      // Same keys in the same order, same visibility: bit-identical.
      EXPECT_EQ(max_abs_diff(got, want), 0.0f) << "max_size " << max_size << ", " << chunks.size() << " chunks";
      EXPECT_EQ(rot.offset(), 12);
    }
    expect_logits_near(want, ref.logits[0], kF32, "plain cache");
  }
}

std::vector<int32_t> long_ids(int64_t T) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < T; ++i) ids.push_back(static_cast<int32_t>((i * 37 + 11) % 128));
  return ids;
}

TEST_F(RotatingModel, TokenByTokenOnceRotatedMatchesTheMaskedOracle) {
  // max_size 6, keep 2, one token at a time: token i sees every j <= i while i < 6 (the ring is not
  // full yet); afterwards the kept tokens 0, 1 and the newest max_size - keep = 4 (i-3 .. i).
  const int64_t T = 20, M = 6, K = 2;
  auto ids = long_ids(T);
  models::Cache rot = rotating(M, K);
  Array got = run(rot, ids, {});
  Array want = oracle_logits(*lm.model, ids, [&](int64_t i, int64_t j) {
    return j <= i && (i < M || j < K || j > i - (M - K));
  });
  expect_logits_near(got, want, kF32, "token by token, max 6 keep 2");
  EXPECT_EQ(rot.offset(), T);
  // And it really differs from full attention (the oracle is not vacuous).
  Array full = oracle_logits(*lm.model, ids, [](int64_t i, int64_t j) { return j <= i; });
  EXPECT_GT(max_abs_diff(got, full), 1e-2f);
}

TEST_F(RotatingModel, PrefillChunksFollowMlxLmsWindowedMask) {
  // max_size 6, keep 2; schedule: 8 tokens at once, 8..10 one by one, 11..13 at once, 14..19 one by one.
  //  - Rows 0..7 (first prefill, all 8 stored): mlx-lm's make_mask is a causal window of max_size = 6,
  //    so row i sees i-5 .. i (rows 6, 7 no longer see the kept tokens).
  //  - Rows 8..10: one token at a time: kept 0, 1 + the newest 4 (i-3 .. i).
  //  - Rows 11..13: after token 10 the cache holds [0 1 7 8 9 10]; the prefill trims 1 after the
  //    kept -> [0 1 8 9 10] and appends [11 12 13]; with the window of 6 storage positions row 11
  //    (storage 5) sees storage 0..5 = {0 1 8 9 10 11}, row 12 sees {1 8 9 10 11 12}, row 13 sees {8 .. 13}.
  //  - Rows 14..19: one at a time again: {0 1} + i-3 .. i.
  const int64_t T = 20;
  auto ids = long_ids(T);
  models::Cache rot = rotating(6, 2);
  Array got = run(rot, ids, {8, 1, 1, 1, 3});
  auto visible = [](int64_t i, int64_t j) {
    if (j > i) return false;
    if (i < 8) return i - j < 6;
    if (i == 11) return j < 2 || j >= 8;
    if (i == 12) return j == 1 || j >= 8;
    if (i == 13) return j >= 8;
    return j < 2 || j > i - 4;
  };
  expect_logits_near(got, oracle_logits(*lm.model, ids, visible), kF32, "chunked prefill, max 6 keep 2");
}

TEST_F(RotatingModel, PromptCacheRoundTripContinuesIdentically) {
  auto ids = long_ids(16);
  std::vector<int32_t> head(ids.begin(), ids.begin() + 10), tail(ids.begin() + 10, ids.end());
  models::Cache a = rotating(6, 2);
  run(a, head, {7});  // rotated: 10 positions through a 6-ring
  std::string path = (std::filesystem::temp_directory_path() / "loom_rotating_prompt_cache.safetensors").string();
  generate::save_prompt_cache(path, a, {{"model", "llama"}});
  models::Cache b = generate::load_prompt_cache(path, *lm.model);  // the file says RotatingKVCache
  auto* r = dynamic_cast<models::RotatingKVCache*>(b.layers.at(0).get());
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->max_size(), 6);
  EXPECT_EQ(r->keep(), 2);
  EXPECT_EQ(b.offset(), 10);
  Array x = run(a, tail, {2}), y = run(b, tail, {2});
  EXPECT_EQ(max_abs_diff(x, y), 0.0f);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace loom::test
