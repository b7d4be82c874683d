// ChunkedKVCache (mlx-lm's, for Llama 4's chunked local attention): the front-trimming bookkeeping on
// hand-made k/v whose every slot is identifiable; attention through the cache, fed token by token and
// in chunks, against the reference attention over the whole sequence with the chunk mask (an
// independent oracle: fast::detail builds that mask from primitive ops), including a left-padded row;
// a random-weight Llama 4 text model decoded through the cache against its own full pass and a
// left-padded batch; the prompt-cache file round trip (mlx-lm's class name and meta state) and
// --kv-bits leaving the chunked layers alone.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "loom/common/error.h"
#include "loom/generate/prompt_cache.h"
#include "loom/io/config.h"
#include "loom/io/safetensors.h"
#include "loom/models/cache.h"
#include "loom/models/loader.h"
#include "loom/ops/fast.h"
#include "loom/ops/ops.h"
#include "tests/models/fixture_util.h"

namespace loom::test {
namespace {

namespace fs = std::filesystem;
using models::ChunkedKVCache;

// Keys [1, 1, n, 1] holding the absolute positions first..first+n-1; values 100 + position.
std::pair<Array, Array> kv_for(int64_t first, int64_t n) {
  std::vector<float> k, v;
  for (int64_t p = first; p < first + n; ++p) k.push_back(static_cast<float>(p)), v.push_back(100.0f + p);
  return {Array::from(k, {1, 1, n, 1}), Array::from(v, {1, 1, n, 1})};
}

// The positions a fetch returns, in order (checks every value is 100 + its key).
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

std::vector<int> push(ChunkedKVCache& c, int64_t first, int64_t n) {
  auto [k, v] = kv_for(first, n);
  return seen(c.update_and_fetch(k, v));
}

std::vector<int> range(int a, int b) {  // [a, b)
  std::vector<int> r;
  for (int i = a; i < b; ++i) r.push_back(i);
  return r;
}

TEST(ChunkedKVCacheStore, OneTokenAtATimeKeepsTheNewestChunkSize) {
  // chunk 4, step 2: the buffer's end is reached every couple of tokens, so the kept positions move
  // to a fresh buffer often; the returned positions must not care.
  ChunkedKVCache c(4, 2);
  for (int t = 0; t < 15; ++t) {
    c.maybe_trim_front();
    // Before token t: at most the 4 newest of [0, t) are kept (mlx-lm's maybe_trim_front).
    EXPECT_EQ(c.start_position(), std::max(0, t - 4)) << "before token " << t;
    EXPECT_EQ(push(c, t, 1), range(std::max(0, t - 4), t + 1)) << "token " << t;
    EXPECT_EQ(c.offset(), t + 1);
    EXPECT_EQ(c.size(), std::min(t + 1, 5));
  }
  EXPECT_EQ(c.meta_state(), (std::array<std::string, 2>{"4", "10"}));
}

TEST(ChunkedKVCacheStore, PrefillsAppendToWhatTheTrimLeft) {
  ChunkedKVCache c(4);
  EXPECT_EQ(push(c, 0, 10), range(0, 10));  // nothing is trimmed inside one step
  c.maybe_trim_front();
  EXPECT_EQ(c.start_position(), 6);
  EXPECT_EQ(push(c, 10, 3), range(6, 13));  // the kept 4, then the 3 new ones
  c.maybe_trim_front();
  c.maybe_trim_front();  // idempotent
  EXPECT_EQ(c.start_position(), 9);
  auto [k, v] = c.state();
  std::vector<float> want{9, 10, 11, 12};
  EXPECT_EQ(k.to_float_vector(), want);
  EXPECT_EQ(k.shape(), (Shape{1, 1, 4, 1}));
}

TEST(ChunkedKVCacheStore, TrimDropsAtMostTheStoredPositions) {
  ChunkedKVCache c(4);
  push(c, 0, 7);
  c.maybe_trim_front();  // keeps 3..6
  c.trim(2);             // mlx-lm's trim: min(offset - start_position, n) newest positions
  EXPECT_EQ(c.offset(), 5);
  EXPECT_EQ(c.size(), 2);
  EXPECT_EQ(push(c, 5, 1), range(3, 6));  // the next write lands after the kept ones
  c.trim(100);
  EXPECT_EQ(c.offset(), 3);
  EXPECT_EQ(c.size(), 0);
}

TEST(ChunkedKVCacheStore, RejectsBadSizesAndShapes) {
  EXPECT_THROW(ChunkedKVCache(0), ValueError);
  ChunkedKVCache c(4);
  push(c, 0, 2);
  EXPECT_THROW(c.update_and_fetch(zeros({1, 2, 1, 1}), zeros({1, 2, 1, 1})), ValueError);  // head count changed
  EXPECT_THROW(c.update_and_fetch(zeros({1, 1, 1}), zeros({1, 1, 1})), ValueError);
  EXPECT_THROW(c.set_full_state(zeros({1, 1, 2, 1}), zeros({1, 1, 2, 1}), {"x", "0"}), ValueError);
  EXPECT_THROW(c.set_full_state(zeros({1, 1, 2, 1}), zeros({1, 1, 2, 1}), {"0", "0"}), ValueError);
}

// Deterministic uniform values in [-scale, scale) (xorshift).
std::vector<float> noise(size_t n, float scale, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t x = seed * 2654435761ull + 88172645463325252ull;
  for (auto& f : v) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    f = (static_cast<float>(x >> 40) / 16777216.0f * 2 - 1) * scale;
  }
  return v;
}

Array random_array(const Shape& s, uint64_t seed) { return Array::from(noise(shape_size(s), 1.0f, seed), s); }

double max_abs_diff(const Array& a, const Array& b) {
  auto x = astype(a, Dtype::f32).to_float_vector(), y = astype(b, Dtype::f32).to_float_vector();
  EXPECT_EQ(x.size(), y.size());
  double m = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) m = std::max(m, std::abs(static_cast<double>(x[i]) - y[i]));
  return m;
}

// Attention through a ChunkedKVCache(cache_chunk) fed `step` tokens at a time == the reference
// attention over the whole sequence with the chunk mask; row 1 is left-padded by 3.
void check_chunked_attention(int64_t cache_chunk, int64_t step) {
  const int64_t B = 2, Hq = 4, Hkv = 2, T = 13, D = 8;
  const int32_t pad = 3;
  Array q = random_array({B, Hq, T, D}, 1), k = random_array({B, Hkv, T, D}, 2), v = random_array({B, Hkv, T, D}, 3);
  Array left = Array::from(std::vector<int32_t>{0, pad}, {B});
  AttentionSpec spec;
  spec.mode = AttentionMode::chunk;
  spec.chunk = 4;
  AttentionPositions whole;
  whole.q_offset = 0;
  whole.kv_start = left;
  Array want = fast::detail::scaled_dot_product_attention_reference(q, k, v, spec, whole, {});
  ChunkedKVCache cache(cache_chunk);
  for (int64_t s = 0; s < T; s += step) {
    int64_t e = std::min(T, s + step);
    models::Step st;
    st.offset = s;
    st.length = e - s;
    st.attn.q_offset = s;
    st.attn.kv_start = left;
    Array got = models::cached_attention(slice_axis(q, 2, s, e), slice_axis(k, 2, s, e), slice_axis(v, 2, s, e), cache,
                                         st, spec);
    for (int64_t b = 0; b < B; ++b) {
      // Query rows inside row 1's padding see nothing (the reference's softmax there is undefined).
      int64_t from = std::max<int64_t>(s, b == 1 ? pad : 0);
      if (from >= e) continue;
      Array g = slice(got, {b, 0, from - s, 0}, {b + 1, Hq, e - s, D});
      Array w = slice(want, {b, 0, from, 0}, {b + 1, Hq, e, D});
      EXPECT_LT(max_abs_diff(g, w), 1e-5)
          << "cache chunk " << cache_chunk << ", step " << step << ", rows " << s << ".." << e << " of batch row " << b;
    }
  }
  // Before the last step the cache had trimmed: the positions really moved.
  EXPECT_GT(cache.start_position(), 0);
}

TEST(ChunkedAttention, TokenByTokenAndChunkedMatchTheWholeSequence) {
  for (int64_t step : {1, 3, 5}) check_chunked_attention(4, step);
  // A cache keeping more than the attention chunk (its chunk_size is an upper bound) changes nothing.
  check_chunked_attention(6, 1);
}

TEST(ChunkedAttention, RefusesChunksLargerThanTheCacheKeeps) {
  ChunkedKVCache cache(4);
  AttentionSpec spec;
  spec.mode = AttentionMode::chunk;
  spec.chunk = 5;
  models::Step st;
  st.length = 1;
  st.attn.q_offset = 0;
  Array x = zeros({1, 1, 1, 8});
  EXPECT_THROW(models::cached_attention(x, x, x, cache, st, spec), ValueError);
  spec.mode = AttentionMode::causal;
  EXPECT_THROW(models::cached_attention(x, x, x, cache, st, spec), ValueError);
}

std::string scratch(const std::string& name) {
  return std::string(LOOM_BINARY_DIR) + "/" + name + "_" + std::to_string(::getpid());
}

// A random-weight Llama 4 text model (written once per process): 4 layers, chunk 3, NoPE layer 3 with
// temperature tuning (floor_scale 2, so it changes within a few tokens), MoE on layers 1 and 3, the
// experts in mlx-lm's stacked layout.
models::LoadedModel& random_llama4() {
  static models::LoadedModel lm = [] {
    nlohmann::json j = {{"model_type", "llama4_text"},
                        {"hidden_size", 32},
                        {"num_hidden_layers", 4},
                        {"intermediate_size", 16},
                        {"intermediate_size_mlp", 32},
                        {"num_attention_heads", 4},
                        {"num_key_value_heads", 2},
                        {"head_dim", 8},
                        {"vocab_size", 64},
                        {"rms_norm_eps", 1e-5},
                        {"num_local_experts", 3},
                        {"num_experts_per_tok", 1},
                        {"interleave_moe_layer_step", 2},
                        {"attention_chunk_size", 3},
                        {"floor_scale", 2},
                        {"attn_scale", 0.5},
                        {"rope_theta", 10000.0},
                        {"tie_word_embeddings", false}};
    io::Config cfg = io::Config::parse(j.dump());
    auto model = models::create_model(cfg);
    std::vector<std::pair<std::string, Array>> tensors;
    uint64_t seed = 7;
    for (auto& p : model->parameters()) {
      std::vector<float> v(shape_size(p.shape), 1.0f);
      if (p.path.find("norm") == std::string::npos)
        v = noise(v.size(), p.shape.size() < 2 ? 1.0f : static_cast<float>(std::sqrt(3.0 / p.shape.back())) * 1.5f,
                  seed++);
      tensors.emplace_back(p.path, Array::from(v, p.shape));
    }
    std::string dir = scratch("test_chunked_llama4");
    fs::remove_all(dir);
    fs::create_directories(dir);
    io::save_safetensors(dir + "/model.safetensors", tensors);
    std::ofstream(dir + "/config.json") << j.dump(2);
    return load_on_device(dir);
  }();
  return lm;
}

std::vector<int32_t> prompt_ids(int64_t n, int64_t vocab) {
  std::vector<int32_t> ids;
  for (int64_t i = 0; i < n; ++i) ids.push_back(static_cast<int32_t>((i * 37 + 11) % vocab));
  return ids;
}

TEST(ChunkedLlama4, DecodeThroughTheCacheMatchesTheFullPass) {
  models::LanguageModel& m = *random_llama4().model;
  models::Cache c = m.make_cache();
  ASSERT_NE(dynamic_cast<ChunkedKVCache*>(c.layers[0].get()), nullptr);
  ASSERT_EQ(dynamic_cast<ChunkedKVCache*>(c.layers[3].get()), nullptr);  // the NoPE layer attends globally
  std::vector<int32_t> ids = prompt_ids(14, m.vocab_size());
  Array full = run_chunked(m, ids, 1 << 20);
  for (int64_t chunk : {1, 2, 5})
    expect_logits_near(run_chunked(m, ids, chunk), full, kF32, "chunk " + std::to_string(chunk));
}

TEST(ChunkedLlama4, LeftPaddedBatchMatchesEachAlone) {
  models::LanguageModel& m = *random_llama4().model;
  std::vector<int32_t> a = prompt_ids(12, m.vocab_size()), b(a.begin() + 4, a.end());
  b[0] = 5;  // a different sequence of 8, padded by 4: its chunks start at its own position 0
  const int64_t T = 12, pad = 4;
  std::vector<int32_t> ids(a);
  ids.insert(ids.end(), pad, 0);
  ids.insert(ids.end(), b.begin(), b.end());
  models::Cache cache = m.make_cache();
  cache.left_padding = Array::from(std::vector<int32_t>{0, static_cast<int32_t>(pad)}, {2});
  Array logits = m.forward(Array::from(ids, {2, T}), cache, models::LogitsMode::all);
  Array next = m.forward(Array::from(std::vector<int32_t>{9, 9}, {2, 1}), cache, models::LogitsMode::all);
  const int64_t V = logits.shape(-1);
  std::vector<int32_t> a9(a), b9(b);
  a9.push_back(9), b9.push_back(9);
  Array ra = run_chunked(m, a9, 1 << 20), rb = run_chunked(m, b9, 1 << 20);
  expect_logits_near(reshape(slice_axis(logits, 0, 0, 1), {T, V}), slice_axis(ra, 0, 0, T), kF32, "row 0");
  expect_logits_near(reshape(slice(logits, {1, pad, 0}, {2, T, V}), {T - pad, V}), slice_axis(rb, 0, 0, T - pad), kF32,
                     "row 1");
  expect_logits_near(reshape(slice_axis(next, 0, 0, 1), {1, V}), slice_axis(ra, 0, T, T + 1), kF32, "row 0 decode");
  expect_logits_near(reshape(slice_axis(next, 0, 1, 2), {1, V}), slice_axis(rb, 0, T - pad, T - pad + 1), kF32,
                     "row 1 decode");
}

bool array_equal(const Array& a, const Array& b) {
  if (a.shape() != b.shape() || a.dtype() != b.dtype()) return false;
  Array ca = to_device(contiguous(a), Device::cpu()), cb = to_device(contiguous(b), Device::cpu());
  return std::memcmp(ca.raw_data(), cb.raw_data(), ca.nbytes()) == 0;
}

TEST(ChunkedPromptCache, RoundTripsInMlxLmLayout) {
  models::LanguageModel& m = *random_llama4().model;
  std::vector<int32_t> ids = prompt_ids(10, m.vocab_size());
  models::Cache c = m.make_cache();
  m.forward(tokens_array(ids), c, models::LogitsMode::none);
  m.forward(tokens_array({3}), c, models::LogitsMode::none);  // trims the chunked layers to 3 + 1
  std::string file = scratch("test_chunked_prompt_cache") + ".safetensors";
  generate::save_prompt_cache(file, c, {{"model", "x"}});
  {
    auto f = io::SafetensorsFile::open(file);
    const auto& meta = f->metadata();
    EXPECT_EQ(meta.at("2.0"), "ChunkedKVCache");
    EXPECT_EQ(meta.at("0.0.0"), "3");  // chunk_size
    EXPECT_EQ(meta.at("0.0.1"), "7");  // start_position: 10 stored, trimmed to 3, then one more
    EXPECT_EQ(meta.at("2.3"), "KVCache");
    EXPECT_EQ(meta.at("1.model"), "x");
    EXPECT_EQ(f->load("0.0").shape(), (Shape{1, 2, 4, 8}));   // positions 7..10
    EXPECT_EQ(f->load("3.1").shape(), (Shape{1, 2, 11, 8}));  // the global layer keeps all 11
  }
  models::Cache back = generate::load_prompt_cache(file, m);
  for (size_t i = 0; i < back.layers.size(); ++i) {
    EXPECT_EQ(back.layers[i]->offset(), 11) << "layer " << i;
    auto* a = dynamic_cast<ChunkedKVCache*>(c.layers[i].get());
    auto* b = dynamic_cast<ChunkedKVCache*>(back.layers[i].get());
    ASSERT_EQ(a == nullptr, b == nullptr) << "layer " << i;
    if (!a) continue;
    EXPECT_EQ(b->chunk_size(), 3);
    EXPECT_EQ(b->start_position(), 7);
    EXPECT_TRUE(array_equal(a->state().first, b->state().first));
    EXPECT_TRUE(array_equal(a->state().second, b->state().second));
  }
  for (int32_t t : {4, 5, 6, 7})
    EXPECT_TRUE(array_equal(m.forward(tokens_array({t}), back, models::LogitsMode::all),
                            m.forward(tokens_array({t}), c, models::LogitsMode::all)))
        << "token " << t;
  fs::remove(file);
}

TEST(ChunkedPromptCache, AnMlxLmFileBeforeAnyTrimLoadsWithOffsetEqualToItsLength) {
  // mlx-lm's from_state: state sets offset = T, meta_state sets (chunk_size, start_position 0).
  models::LanguageModel& m = *random_llama4().model;
  std::vector<int32_t> ids = prompt_ids(6, m.vocab_size());
  models::Cache c = m.make_cache();
  m.forward(tokens_array(ids), c, models::LogitsMode::none);
  std::string file = scratch("test_chunked_prompt_cache_fresh") + ".safetensors";
  generate::save_prompt_cache(file, c);
  models::Cache back = generate::load_prompt_cache(file, m);
  auto* b = dynamic_cast<ChunkedKVCache*>(back.layers[0].get());
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->offset(), 6);
  EXPECT_EQ(b->start_position(), 0);
  EXPECT_TRUE(array_equal(m.forward(tokens_array({1, 2}), back, models::LogitsMode::all),
                          m.forward(tokens_array({1, 2}), c, models::LogitsMode::all)));
  fs::remove(file);
}

TEST(ChunkedKVQuantization, KvBitsQuantizesOnlyTheGlobalLayers) {
  models::LanguageModel& m = *random_llama4().model;
  models::Cache c = m.make_cache();
  m.forward(tokens_array(prompt_ids(5, m.vocab_size())), c, models::LogitsMode::none);
  // head_dim 8 is below every MLX group size, so quantizing the global layer fails on the group
  // size; the chunked layers are skipped before that (mlx-lm: ChunkedKVCache has no to_quantized).
  EXPECT_THROW(models::maybe_quantize_kv_cache(c, models::KVQuantization{8, 32, 0}), ValueError);
  EXPECT_NE(dynamic_cast<ChunkedKVCache*>(c.layers[0].get()), nullptr);
  EXPECT_THROW(models::to_quantized(c.at<models::KVCache>(0), 32, 8), NotSupportedError);
}

}  // namespace
}  // namespace loom::test
