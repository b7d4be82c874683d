#include "loom/models/cache.h"

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
