#include "loom/models/cache.h"

#include <algorithm>
#include <stdexcept>

#include "loom/common/error.h"
#include "loom/ops/ops.h"

namespace loom::models {

void KVCache::ensure_capacity(int64_t positions, const Array& k, const Array& v) {
  while (static_cast<int64_t>(k_pages_.size()) * kPageSize < positions) {
    k_pages_.push_back(Array::empty({k.shape(0), k.shape(1), kPageSize, k.shape(3)}, k.dtype(), k.device()));
    v_pages_.push_back(Array::empty({v.shape(0), v.shape(1), kPageSize, v.shape(3)}, v.dtype(), v.device()));
  }
}

fast::KVBlocks KVCache::update_and_fetch(const Array& keys, const Array& values) {
  if (keys.ndim() != 4 || values.ndim() != 4 || keys.shape(2) != values.shape(2))
    throw ValueError(format_error("KVCache", "keys " + shape_str(keys.shape()) + " and values " +
                                                 shape_str(values.shape()) + " must be [B, H, L, D] with equal L"));
  if (!k_pages_.empty() && (k_pages_[0].shape(0) != keys.shape(0) || k_pages_[0].shape(1) != keys.shape(1) ||
                            k_pages_[0].shape(3) != keys.shape(3)))
    throw ValueError(format_error("KVCache", "keys " + shape_str(keys.shape()) + " do not match the cache pages " +
                                                 shape_str(k_pages_[0].shape())));
  int64_t L = keys.shape(2);
  ensure_capacity(offset_ + L, keys, values);
  // Write position by page: the span [offset_, offset_ + L) may cross page boundaries.
  for (int64_t done = 0; done < L;) {
    int64_t pos = offset_ + done, page = pos / kPageSize, in_page = pos % kPageSize;
    int64_t n = std::min(L - done, kPageSize - in_page);
    assign(slice_axis(k_pages_[page], 2, in_page, in_page + n), slice_axis(keys, 2, done, done + n));
    assign(slice_axis(v_pages_[page], 2, in_page, in_page + n), slice_axis(values, 2, done, done + n));
    done += n;
  }
  offset_ += L;
  return fast::KVBlocks{k_pages_, v_pages_, offset_};
}

KVCache::PageWrite KVCache::write_at(const Array& keys, const Array& values) {
  const int64_t L = keys.shape(2), page = offset_ / kPageSize;
  if (keys.ndim() != 4 || values.ndim() != 4 || values.shape(2) != L || offset_ % kPageSize + L > kPageSize)
    throw ValueError(format_error("KVCache", "a replayed step writes keys/values [B, H, L, D] inside one page (offset " +
                                                 std::to_string(offset_) + ", L " + std::to_string(L) + ")"));
  ensure_capacity(offset_ + L, keys, values);
  std::vector<Array> ks(k_pages_.begin(), k_pages_.begin() + page + 1), vs(v_pages_.begin(), v_pages_.begin() + page + 1);
  return {k_pages_[page], v_pages_[page], page * kPageSize,
          fast::KVBlocks{std::move(ks), std::move(vs), (page + 1) * kPageSize}};
}

fast::KVBlocks KVCache::update_and_fetch_at(const Array& keys, const Array& values, const Array& position) {
  PageWrite w = write_at(keys, values);
  assign_at(w.k_page, keys, 2, position, w.base);
  assign_at(w.v_page, values, 2, position, w.base);
  advance(keys.shape(2));
  return std::move(w.blocks);
}

bool KVCache::reserve(int64_t positions) {
  if (k_pages_.empty()) return false;
  Array k = k_pages_[0], v = v_pages_[0];
  ensure_capacity(positions, k, v);
  return true;
}

void KVCache::trim(int64_t n) { offset_ -= std::min(n, offset_); }

std::pair<Array, Array> KVCache::state() const {
  if (offset_ == 0) return {};
  std::vector<Array> ks, vs;
  for (size_t p = 0; p < k_pages_.size() && static_cast<int64_t>(p) * kPageSize < offset_; ++p) {
    int64_t n = std::min(kPageSize, offset_ - static_cast<int64_t>(p) * kPageSize);
    ks.push_back(slice_axis(k_pages_[p], 2, 0, n));
    vs.push_back(slice_axis(v_pages_[p], 2, 0, n));
  }
  return {concatenate(ks, 2), concatenate(vs, 2)};
}

void KVCache::set_state(const Array& keys, const Array& values) {
  k_pages_.clear();
  v_pages_.clear();
  offset_ = 0;
  update_and_fetch(keys, values);
}

}  // namespace loom::models

namespace loom::models {
namespace {

// A fresh contiguous copy (the cache writes into its buffers in place, so it never aliases inputs).
Array copy_of(const Array& a) {
  Array out = Array::empty(a.shape(), a.dtype(), a.device());
  assign(out, a);
  return out;
}

// Concatenates along the sequence axis, skipping empty pieces.
Array concat_seq(const std::vector<Array>& parts) {
  std::vector<Array> nonempty;
  for (const Array& p : parts)
    if (p.shape(2) > 0) nonempty.push_back(p);
  if (nonempty.size() == 1) return copy_of(nonempty[0]);
  return concatenate(nonempty, 2);
}

// mlx-lm's _trim: drop `trim_size` positions after the first `keep`, optionally appending.
Array trim_seq(const Array& v, int64_t keep, int64_t trim_size, const Array& append = {}) {
  std::vector<Array> parts;
  int64_t n = v.shape(2);
  if (trim_size > 0) {
    parts.push_back(slice_axis(v, 2, 0, std::min(keep, n)));
    parts.push_back(slice_axis(v, 2, std::min(n, trim_size + keep), n));
  } else {
    parts.push_back(v);
  }
  if (append.valid()) parts.push_back(append);
  return concat_seq(parts);
}

}  // namespace

RotatingKVCache::RotatingKVCache(int64_t max_size, int64_t keep, int64_t step)
    : max_size_(max_size), keep_(keep), step_(step) {
  if (max_size < 1 || keep < 0 || keep >= max_size || step < 1)
    throw ValueError(format_error("RotatingKVCache", "needs max_size >= 1, 0 <= keep < max_size and step >= 1 (got max_size " +
                                                         std::to_string(max_size) + ", keep " + std::to_string(keep) +
                                                         ", step " + std::to_string(step) + ")"));
}

fast::KVBlocks RotatingKVCache::temporal_blocks() const {
  // mlx-lm's _temporal_order, as views: [0, keep), [idx, end) (oldest), [keep, idx) (newest).
  fast::KVBlocks b;
  int64_t cap = keys_.shape(2);
  auto add = [&](int64_t s, int64_t e) {
    if (e <= s) return;
    b.keys.push_back(slice_axis(keys_, 2, s, e));
    b.values.push_back(slice_axis(values_, 2, s, e));
    b.length += e - s;
  };
  if (idx_ == cap) {
    add(0, cap);
  } else if (idx_ < offset_) {
    add(0, std::min(keep_, cap));
    add(idx_, cap);
    add(keep_, idx_);
  } else {
    add(0, idx_);
  }
  return b;
}

fast::KVBlocks RotatingKVCache::update_and_fetch(const Array& keys, const Array& values) {
  if (keys.ndim() != 4 || values.ndim() != 4 || keys.shape(2) != values.shape(2) || keys.shape(2) < 1)
    throw ValueError(format_error("RotatingKVCache", "keys " + shape_str(keys.shape()) + " and values " +
                                                         shape_str(values.shape()) +
                                                         " must be [B, H, L, D] with equal L >= 1"));
  if (keys_.valid() && (keys_.shape(0) != keys.shape(0) || keys_.shape(1) != keys.shape(1) ||
                        keys_.shape(3) != keys.shape(3) || values_.shape(3) != values.shape(3)))
    throw ValueError(format_error("RotatingKVCache", "keys " + shape_str(keys.shape()) + " do not match the cache " +
                                                         shape_str(keys_.shape())));
  return keys.shape(2) == 1 ? update_in_place(keys, values) : update_concat(keys, values);
}

fast::KVBlocks RotatingKVCache::update_concat(const Array& keys, const Array& values) {
  if (!keys_.valid()) {
    keys_ = copy_of(keys);
    values_ = copy_of(values);
  } else {
    // Temporal order, then trim to keep + the newest (max_size - keep - 1) and append: the largest
    // size is max_size + L - 1, so every new token gets at least max_size positions of context.
    fast::KVBlocks t = temporal_blocks();
    Array k = concat_seq(t.keys), v = concat_seq(t.values);
    idx_ = k.shape(2);
    int64_t trim_size = idx_ - max_size_ + 1;
    keys_ = trim_seq(k, keep_, trim_size, keys);
    values_ = trim_seq(v, keep_, trim_size, values);
  }
  offset_ += keys.shape(2);
  idx_ = keys_.shape(2);
  return fast::KVBlocks{{keys_}, {values_}, idx_};
}

fast::KVBlocks RotatingKVCache::update_in_place(const Array& keys, const Array& values) {
  const int64_t prev = offset_;
  if (!keys_.valid() || (prev >= keys_.shape(2) && keys_.shape(2) < max_size_)) {
    // Grow by up to `step` positions (never past max_size).
    int64_t old = keys_.valid() ? keys_.shape(2) : 0;
    int64_t new_size = std::max<int64_t>(1, std::min(step_, max_size_ - prev));
    Array k = Array::empty({keys.shape(0), keys.shape(1), old + new_size, keys.shape(3)}, keys.dtype(), keys.device());
    Array v = Array::empty({values.shape(0), values.shape(1), old + new_size, values.shape(3)}, values.dtype(),
                           values.device());
    if (old > 0) {
      assign(slice_axis(k, 2, 0, old), keys_);
      assign(slice_axis(v, 2, 0, old), values_);
    }
    keys_ = k;
    values_ = v;
    idx_ = prev;
  }
  // A buffer left longer than max_size by a prefill: keep + the newest positions.
  int64_t trim_size = keys_.shape(2) - max_size_;
  if (trim_size > 0) {
    keys_ = trim_seq(keys_, keep_, trim_size);
    values_ = trim_seq(values_, keep_, trim_size);
    idx_ = max_size_;
  }
  // Rotate: past the end, overwrite the oldest non-kept slot.
  if (idx_ == max_size_) idx_ = keep_;
  assign(slice_axis(keys_, 2, idx_, idx_ + 1), keys);
  assign(slice_axis(values_, 2, idx_, idx_ + 1), values);
  offset_ += 1;
  idx_ += 1;
  return temporal_blocks();
}

void RotatingKVCache::trim(int64_t n) {
  if (!is_trimmable())
    throw NotSupportedError(format_error("RotatingKVCache", "cannot trim once " + std::to_string(offset_) +
                                                                " positions have filled the " + std::to_string(max_size_) +
                                                                "-position ring (mlx-lm: not trimmable)"));
  n = std::min(offset_, std::max<int64_t>(n, 0));
  offset_ -= n;
  idx_ -= n;
}

std::pair<Array, Array> RotatingKVCache::state() const {
  if (!keys_.valid()) return {};
  if (offset_ < keys_.shape(2)) return {copy_of(slice_axis(keys_, 2, 0, offset_)), copy_of(slice_axis(values_, 2, 0, offset_))};
  return {copy_of(keys_), copy_of(values_)};
}

void RotatingKVCache::set_state(const Array& keys, const Array& values) {
  if (keys.ndim() != 4 || values.ndim() != 4 || keys.shape(2) != values.shape(2))
    throw ValueError(format_error("RotatingKVCache", "state keys " + shape_str(keys.shape()) + " and values " +
                                                         shape_str(values.shape()) + " must be [B, H, T, D] with equal T"));
  keys_ = copy_of(keys);
  values_ = copy_of(values);
}

std::array<std::string, 4> RotatingKVCache::meta_state() const {
  return {std::to_string(keep_), std::to_string(max_size_), std::to_string(offset_), std::to_string(idx_)};
}

void RotatingKVCache::set_full_state(const Array& keys, const Array& values, const std::array<std::string, 4>& meta) {
  int64_t m[4];
  for (int i = 0; i < 4; ++i) {
    try {
      size_t used = 0;
      m[i] = std::stoll(meta[i], &used);
      if (used != meta[i].size()) throw std::invalid_argument(meta[i]);
    } catch (const std::exception&) {
      throw ValueError(format_error("RotatingKVCache", "meta state entry " + std::to_string(i) + " '" + meta[i] +
                                                           "' is not an integer"));
    }
  }
  const int64_t keep = m[0], max_size = m[1], offset = m[2], idx = m[3];
  if (max_size < 1 || keep < 0 || keep >= max_size || offset < 0 || idx < 0 || keys.ndim() != 4 || idx > keys.shape(2))
    throw ValueError(format_error("RotatingKVCache", "inconsistent meta state (keep " + meta[0] + ", max_size " + meta[1] +
                                                         ", offset " + meta[2] + ", idx " + meta[3] + ") for " +
                                                         std::to_string(keys.shape(2)) + " stored positions"));
  set_state(keys, values);
  keep_ = keep;
  max_size_ = max_size;
  offset_ = offset;
  idx_ = idx;
}

}  // namespace loom::models

namespace loom::models {

ChunkedKVCache::ChunkedKVCache(int64_t chunk_size, int64_t step) : chunk_size_(chunk_size), step_(step) {
  if (chunk_size < 1 || step < 1)
    throw ValueError(format_error("ChunkedKVCache", "needs chunk_size >= 1 and step >= 1 (got chunk_size " +
                                                        std::to_string(chunk_size) + ", step " + std::to_string(step) + ")"));
}

void ChunkedKVCache::maybe_trim_front() {
  if (size() <= chunk_size_) return;
  const int64_t drop = size() - chunk_size_;
  start_ += drop;
  front_ += drop;
}

fast::KVBlocks ChunkedKVCache::update_and_fetch(const Array& keys, const Array& values) {
  if (keys.ndim() != 4 || values.ndim() != 4 || keys.shape(2) != values.shape(2) || keys.shape(2) < 1)
    throw ValueError(format_error("ChunkedKVCache", "keys " + shape_str(keys.shape()) + " and values " +
                                                        shape_str(values.shape()) + " must be [B, H, L, D] with equal L >= 1"));
  if (keys_.valid() && (keys_.shape(0) != keys.shape(0) || keys_.shape(1) != keys.shape(1) ||
                        keys_.shape(3) != keys.shape(3) || values_.shape(3) != values.shape(3) ||
                        keys_.dtype() != keys.dtype()))
    throw ValueError(format_error("ChunkedKVCache", "keys " + shape_str(keys.shape()) + " do not match the cache " +
                                                        shape_str(keys_.shape())));
  const int64_t n = size(), L = keys.shape(2);
  if (!keys_.valid() || front_ + n + L > keys_.shape(2) || keys_.device() != keys.device()) {
    // A fresh buffer with room for `step` more positions (on the keys' device: a loaded prompt cache
    // may sit elsewhere); the kept positions move to its front.
    const int64_t cap = (n + L + step_ + step_ - 1) / step_ * step_;
    Array k = Array::empty({keys.shape(0), keys.shape(1), cap, keys.shape(3)}, keys.dtype(), keys.device());
    Array v = Array::empty({values.shape(0), values.shape(1), cap, values.shape(3)}, values.dtype(), values.device());
    if (n > 0) {
      assign(slice_axis(k, 2, 0, n), slice_axis(keys_, 2, front_, front_ + n));
      assign(slice_axis(v, 2, 0, n), slice_axis(values_, 2, front_, front_ + n));
    }
    keys_ = k;
    values_ = v;
    front_ = 0;
  }
  assign(slice_axis(keys_, 2, front_ + n, front_ + n + L), keys);
  assign(slice_axis(values_, 2, front_ + n, front_ + n + L), values);
  offset_ += L;
  return fast::KVBlocks{{slice_axis(keys_, 2, front_, front_ + n + L)}, {slice_axis(values_, 2, front_, front_ + n + L)},
                        n + L};
}

void ChunkedKVCache::trim(int64_t n) { offset_ -= std::min(size(), std::max<int64_t>(n, 0)); }

std::pair<Array, Array> ChunkedKVCache::state() const {
  if (!keys_.valid() || size() == 0) return {};
  return {copy_of(slice_axis(keys_, 2, front_, front_ + size())), copy_of(slice_axis(values_, 2, front_, front_ + size()))};
}

void ChunkedKVCache::set_state(const Array& keys, const Array& values) {
  if (keys.ndim() != 4 || values.ndim() != 4 || keys.shape(2) != values.shape(2) || keys.shape(0) != values.shape(0) ||
      keys.shape(1) != values.shape(1))
    throw ValueError(format_error("ChunkedKVCache", "state keys " + shape_str(keys.shape()) + " and values " +
                                                        shape_str(values.shape()) + " must be [B, H, T, D] with equal T"));
  keys_ = copy_of(keys);
  values_ = copy_of(values);
  front_ = 0;
  offset_ = start_ + keys.shape(2);
}

std::array<std::string, 2> ChunkedKVCache::meta_state() const {
  return {std::to_string(chunk_size_), std::to_string(start_)};
}

void ChunkedKVCache::set_full_state(const Array& keys, const Array& values, const std::array<std::string, 2>& meta) {
  int64_t m[2];
  for (int i = 0; i < 2; ++i) {
    try {
      size_t used = 0;
      m[i] = std::stoll(meta[i], &used);
      if (used != meta[i].size()) throw std::invalid_argument(meta[i]);
    } catch (const std::exception&) {
      throw ValueError(format_error("ChunkedKVCache", "meta state entry " + std::to_string(i) + " '" + meta[i] +
                                                          "' is not an integer"));
    }
  }
  if (m[0] < 1 || m[1] < 0)
    throw ValueError(format_error("ChunkedKVCache", "inconsistent meta state (chunk_size " + meta[0] +
                                                        ", start_position " + meta[1] + ")"));
  chunk_size_ = m[0];
  start_ = m[1];
  set_state(keys, values);
}

}  // namespace loom::models

namespace loom::models {

void validate(const KVQuantization& q) {
  QuantSpec spec{QuantMode::affine, q.bits, q.group_size};
  if (!quant_spec_valid(spec))
    throw ValueError(format_error("kv-bits", "the KV cache quantization needs bits 2, 3, 4, 5, 6 or 8 and group size "
                                             "32, 64 or 128 (MLX's affine quantization); got bits " +
                                                 std::to_string(q.bits) + ", group size " + std::to_string(q.group_size)));
  if (q.start < 0)
    throw ValueError(format_error("kv-bits", "--quantized-kv-start must be >= 0, got " + std::to_string(q.start)));
}

QuantizedKVCache::QuantizedKVCache(int group_size, int bits) : spec_{QuantMode::affine, bits, group_size} {
  validate(KVQuantization{bits, group_size, 0});
}

namespace {

QuantizedArrays quantize_kv(const Array& x, const QuantSpec& spec, const char* what) {
  if (x.shape(3) % spec.group_size != 0)
    throw ValueError(format_error("kv-bits", std::string("the ") + what + " head dim " + std::to_string(x.shape(3)) +
                                                 " is not divisible by the KV cache group size " +
                                                 std::to_string(spec.group_size) + " (use a smaller --kv-group-size)"));
  return quantize(x, spec);
}

QuantizedArrays empty_like_page(const QuantizedArrays& q) {
  auto page = [](const Array& a) {
    return Array::empty({a.shape(0), a.shape(1), KVCache::kPageSize, a.shape(3)}, a.dtype(), a.device());
  };
  return {page(q.wq), page(q.scales), page(q.biases)};
}

QuantizedArrays slice_seq(const QuantizedArrays& q, int64_t start, int64_t stop) {
  return {slice_axis(q.wq, 2, start, stop), slice_axis(q.scales, 2, start, stop), slice_axis(q.biases, 2, start, stop)};
}

void assign_q(const QuantizedArrays& dst, const QuantizedArrays& src) {
  assign(dst.wq, src.wq);
  assign(dst.scales, src.scales);
  assign(dst.biases, src.biases);
}

}  // namespace

void QuantizedKVCache::ensure_capacity(int64_t positions, const QuantizedArrays& k, const QuantizedArrays& v) {
  while (static_cast<int64_t>(pages_.size()) * kPageSize < positions)
    pages_.push_back({empty_like_page(k), empty_like_page(v)});
}

void QuantizedKVCache::update(const Array& keys, const Array& values) {
  if (keys.ndim() != 4 || values.ndim() != 4 || keys.shape(2) != values.shape(2))
    throw ValueError(format_error("QuantizedKVCache", "keys " + shape_str(keys.shape()) + " and values " +
                                                          shape_str(values.shape()) +
                                                          " must be [B, H, L, D] with equal L"));
  QuantizedArrays qk = quantize_kv(keys, spec_, "key"), qv = quantize_kv(values, spec_, "value");
  if (!pages_.empty() && (pages_[0].k.wq.shape(0) != qk.wq.shape(0) || pages_[0].k.wq.shape(1) != qk.wq.shape(1) ||
                          pages_[0].k.wq.shape(3) != qk.wq.shape(3) || pages_[0].v.wq.shape(3) != qv.wq.shape(3) ||
                          pages_[0].k.scales.dtype() != qk.scales.dtype()))
    throw ValueError(format_error("QuantizedKVCache", "keys " + shape_str(keys.shape()) + " (" +
                                                          std::string(name(keys.dtype())) +
                                                          ") do not match the cache"));
  const int64_t L = keys.shape(2);
  ensure_capacity(offset_ + L, qk, qv);
  for (int64_t done = 0; done < L;) {
    int64_t pos = offset_ + done, page = pos / kPageSize, in_page = pos % kPageSize;
    int64_t n = std::min(L - done, kPageSize - in_page);
    assign_q(slice_seq(pages_[page].k, in_page, in_page + n), slice_seq(qk, done, done + n));
    assign_q(slice_seq(pages_[page].v, in_page, in_page + n), slice_seq(qv, done, done + n));
    done += n;
  }
  offset_ += L;
}

fast::KVBlocks QuantizedKVCache::fetch_dequantized() const {
  // Only the used positions are dequantized: a partly filled last page is sliced first, so no
  // uninitialized slot is ever decoded.
  fast::KVBlocks b;
  for (size_t p = 0; p < pages_.size() && static_cast<int64_t>(p) * kPageSize < offset_; ++p) {
    int64_t n = std::min(kPageSize, offset_ - static_cast<int64_t>(p) * kPageSize);
    QuantizedArrays k = slice_seq(pages_[p].k, 0, n), v = slice_seq(pages_[p].v, 0, n);
    b.keys.push_back(dequantize(k.wq, k.scales, k.biases, spec_));
    b.values.push_back(dequantize(v.wq, v.scales, v.biases, spec_));
    b.length += n;
  }
  return b;
}

fast::KVBlocks QuantizedKVCache::update_and_fetch(const Array& keys, const Array& values) {
  update(keys, values);
  return fetch_dequantized();
}

void QuantizedKVCache::trim(int64_t n) { offset_ -= std::min(std::max<int64_t>(n, 0), offset_); }

std::pair<Array, Array> QuantizedKVCache::state() const {
  throw NotSupportedError(format_error("QuantizedKVCache", "holds quantized keys/values; use quantized_state()"));
}

void QuantizedKVCache::set_state(const Array&, const Array&) {
  throw NotSupportedError(format_error("QuantizedKVCache", "holds quantized keys/values; use set_quantized_state()"));
}

std::pair<QuantizedArrays, QuantizedArrays> QuantizedKVCache::quantized_state() const {
  if (offset_ == 0) return {};
  auto gather = [&](auto member) {
    std::vector<Array> wq, s, b;
    for (size_t p = 0; p < pages_.size() && static_cast<int64_t>(p) * kPageSize < offset_; ++p) {
      int64_t n = std::min(kPageSize, offset_ - static_cast<int64_t>(p) * kPageSize);
      QuantizedArrays q = slice_seq(pages_[p].*member, 0, n);
      wq.push_back(contiguous(q.wq));
      s.push_back(contiguous(q.scales));
      b.push_back(contiguous(q.biases));
    }
    return QuantizedArrays{concatenate(wq, 2), concatenate(s, 2), concatenate(b, 2)};
  };
  return {gather(&Page::k), gather(&Page::v)};
}

void QuantizedKVCache::set_quantized_state(const QuantizedArrays& keys, const QuantizedArrays& values, int64_t offset) {
  for (const QuantizedArrays* q : {&keys, &values}) {
    const Array* parts[3] = {&q->wq, &q->scales, &q->biases};
    for (const Array* a : parts)
      if (!a->valid() || a->ndim() != 4 || a->shape(2) != keys.wq.shape(2))
        throw ValueError(format_error("QuantizedKVCache", "the quantized state must be (wq, scales, biases) arrays "
                                                          "[B, H, T, .] with one T"));
    if (q->wq.dtype() != Dtype::u32 || q->wq.shape(3) * 32 / spec_.bits != q->scales.shape(3) * spec_.group_size)
      throw ValueError(format_error("QuantizedKVCache", "packed " + shape_str(q->wq.shape()) + " and scales " +
                                                            shape_str(q->scales.shape()) + " do not fit bits " +
                                                            std::to_string(spec_.bits) + ", group size " +
                                                            std::to_string(spec_.group_size)));
  }
  const int64_t T = keys.wq.shape(2);
  if (offset < 0 || offset > T)
    throw ValueError(format_error("QuantizedKVCache", "offset " + std::to_string(offset) + " is outside the " +
                                                          std::to_string(T) + " stored positions"));
  pages_.clear();
  offset_ = 0;
  ensure_capacity(T, keys, values);
  for (int64_t done = 0; done < T; done += kPageSize) {
    int64_t n = std::min(kPageSize, T - done), page = done / kPageSize;
    assign_q(slice_seq(pages_[page].k, 0, n), slice_seq(keys, done, done + n));
    assign_q(slice_seq(pages_[page].v, 0, n), slice_seq(values, done, done + n));
  }
  offset_ = offset;
}

std::array<std::string, 3> QuantizedKVCache::meta_state() const {
  return {std::to_string(offset_), std::to_string(spec_.group_size), std::to_string(spec_.bits)};
}

std::unique_ptr<QuantizedKVCache> to_quantized(const KVCache& cache, int group_size, int bits) {
  if (dynamic_cast<const ChunkedKVCache*>(&cache))
    throw NotSupportedError(format_error("kv-bits", "the chunked KV cache (Llama 4 local attention) cannot be "
                                                    "quantized (mlx-lm: ChunkedKVCache has no to_quantized)"));
  if (dynamic_cast<const RotatingKVCache*>(&cache) || dynamic_cast<const QuantizedKVCache*>(&cache))
    throw NotSupportedError(format_error(
        "kv-bits", dynamic_cast<const RotatingKVCache*>(&cache)
                       ? "the rotating KV cache (--max-kv-size) cannot be quantized (not supported, as in mlx-lm: "
                         "RotatingKVCache Quantization NYI)"
                       : "the KV cache is already quantized"));
  auto q = std::make_unique<QuantizedKVCache>(group_size, bits);
  if (cache.offset() > 0) {
    auto [k, v] = cache.state();
    q->update(k, v);
  }
  return q;
}

bool maybe_quantize_kv_cache(Cache& cache, const KVQuantization& q) {
  if (cache.offset() < q.start) return false;
  bool converted = false;
  for (auto& layer : cache.layers) {
    if (dynamic_cast<QuantizedKVCache*>(layer.get())) continue;
    if (dynamic_cast<ChunkedKVCache*>(layer.get())) continue;  // stays float (mlx-lm: no to_quantized)
    if (dynamic_cast<RotatingKVCache*>(layer.get()))
      throw NotSupportedError(format_error("kv-bits", "the quantized KV cache (--kv-bits) with the rotating KV cache "
                                                      "(--max-kv-size) is not supported (mlx-lm: RotatingKVCache "
                                                      "Quantization NYI)"));
    auto* kv = dynamic_cast<KVCache*>(layer.get());
    if (!kv) continue;  // other cache kinds have no quantized form (mlx-lm: no to_quantized)
    layer = to_quantized(*kv, q.group_size, q.bits);
    converted = true;
  }
  return converted;
}

}  // namespace loom::models
