// Logits processors as gathers and scatters on the logits' device (mlx_lm/sample_utils.py's
// `logits[:, tokens]` reads and writes): a repeated token writes the same value each time it appears
// (repetition, presence: so each distinct token counts once, as in mlx-lm), or adds once per
// occurrence (frequency: mlx-lm's `.at[].subtract`, x + (-p) being x - p exactly).
#include "loom/generate/logits_processors.h"

#include <algorithm>
#include <memory>

#include "loom/common/error.h"
#include "loom/ops/gather.h"
#include "loom/ops/ops.h"

namespace loom::generate {
namespace {

// The last `context_size` ids of `tokens`, shaped [1, ..., 1, k] to broadcast against logits of
// `ndim` dims; host ids outside [0, V) are dropped (they have no logit). Invalid when none is left.
Array recent(const Array& tokens, int context_size, int64_t V, int ndim) {
  if (!tokens.valid() || tokens.size() == 0 || context_size <= 0) return Array();
  if (is_floating(tokens.dtype()) || tokens.dtype() == Dtype::bool_)
    throw ValueError(
        format_error("logits_processor", "token ids must be integers, got " + std::string(name(tokens.dtype()))));
  Array flat = reshape(tokens, {-1});
  const int64_t n = flat.shape(0), k = std::min<int64_t>(n, context_size);
  Array ids = slice_axis(flat, 0, n - k, n);
  if (ids.device().is_cpu()) {
    std::vector<int32_t> kept;
    for (int64_t t : ids.to_vector<int64_t>())
      if (t >= 0 && t < V) kept.push_back(static_cast<int32_t>(t));
    if (kept.empty()) return Array();
    ids = Array::from(kept, {static_cast<int64_t>(kept.size())});
  }
  Shape shape(static_cast<size_t>(ndim), 1);
  shape.back() = ids.shape(0);
  return reshape(ids, shape);
}

Array as_logits(const Array& logits, const char* where) {
  if (!logits.valid() || logits.ndim() < 1)
    throw ValueError(format_error(where, "expected logits [..., V], got a scalar"));
  return astype(logits, Dtype::f32);
}

}  // namespace

Array LogitsProcessor::operator()(std::span<const int32_t> tokens, const Array& logits) const {
  Array ids = tokens.empty() ? Array()
                             : Array::from(std::vector<int32_t>(tokens.begin(), tokens.end()),
                                           {static_cast<int64_t>(tokens.size())});
  return fn_(ids, logits);
}

LogitsProcessor make_logit_bias(std::map<int32_t, float> bias) {
  // The id and value arrays are made once per logits layout and kept, so a GPU upload of them is
  // cached across steps.
  struct State {
    std::map<int32_t, float> bias;
    int ndim = -1;
    int64_t V = -1;
    Array ids, values;
  };
  auto st = std::make_shared<State>();
  st->bias = std::move(bias);
  return LogitsProcessor([st](const Array&, const Array& logits) {
    Array x = as_logits(logits, "logit_bias");
    if (x.ndim() != st->ndim || x.shape(-1) != st->V) {
      st->ndim = x.ndim();
      st->V = x.shape(-1);
      std::vector<int32_t> ids;
      std::vector<float> values;
      for (auto [id, b] : st->bias)
        if (id >= 0 && id < st->V) ids.push_back(id), values.push_back(b);
      Shape shape(static_cast<size_t>(x.ndim()), 1);
      shape.back() = static_cast<int64_t>(ids.size());
      st->ids = ids.empty() ? Array() : Array::from(ids, shape);
      st->values = ids.empty() ? Array() : Array::from(values, shape);
    }
    if (!st->ids.valid()) return x;
    return scatter_add_axis(x, st->ids, st->values, -1);
  });
}

LogitsProcessor make_repetition_penalty(float penalty, int context_size) {
  if (penalty < 0) throw ValueError(format_error("repetition_penalty", "penalty must be a non-negative float"));
  return LogitsProcessor([=](const Array& tokens, const Array& logits) {
    Array x = as_logits(logits, "repetition_penalty");
    Array ids = recent(tokens, context_size, x.shape(-1), x.ndim());
    if (!ids.valid()) return x;
    Array sel = take_along_axis(x, ids, -1);
    Array p = Array::scalar(penalty);
    Array upd = where(less(sel, Array::scalar(0.0)), multiply(sel, p), divide(sel, p));
    return put_along_axis(x, ids, upd, -1);
  });
}

LogitsProcessor make_presence_penalty(float penalty, int context_size) {
  return LogitsProcessor([=](const Array& tokens, const Array& logits) {
    Array x = as_logits(logits, "presence_penalty");
    Array ids = recent(tokens, context_size, x.shape(-1), x.ndim());
    if (!ids.valid()) return x;
    return put_along_axis(x, ids, subtract(take_along_axis(x, ids, -1), Array::scalar(penalty)), -1);
  });
}

LogitsProcessor make_frequency_penalty(float penalty, int context_size) {
  return LogitsProcessor([=](const Array& tokens, const Array& logits) {
    Array x = as_logits(logits, "frequency_penalty");
    Array ids = recent(tokens, context_size, x.shape(-1), x.ndim());
    if (!ids.valid()) return x;
    return scatter_add_axis(x, ids, Array::scalar(-static_cast<double>(penalty)), -1);
  });
}

std::vector<LogitsProcessor> make_logits_processors(const LogitsProcessorSpec& spec) {
  std::vector<LogitsProcessor> out;
  if (!spec.logit_bias.empty()) out.push_back(make_logit_bias(spec.logit_bias));
  if (spec.repetition_penalty && *spec.repetition_penalty != 0)
    out.push_back(make_repetition_penalty(*spec.repetition_penalty, spec.repetition_context_size));
  if (spec.presence_penalty && *spec.presence_penalty != 0)
    out.push_back(make_presence_penalty(*spec.presence_penalty, spec.presence_context_size));
  if (spec.frequency_penalty && *spec.frequency_penalty != 0)
    out.push_back(make_frequency_penalty(*spec.frequency_penalty, spec.frequency_context_size));
  return out;
}

int64_t history_needed(const LogitsProcessorSpec& spec) {
  int64_t n = 0;
  if (spec.repetition_penalty && *spec.repetition_penalty != 0) n = std::max<int64_t>(n, spec.repetition_context_size);
  if (spec.presence_penalty && *spec.presence_penalty != 0) n = std::max<int64_t>(n, spec.presence_context_size);
  if (spec.frequency_penalty && *spec.frequency_penalty != 0) n = std::max<int64_t>(n, spec.frequency_context_size);
  return n;
}

}  // namespace loom::generate
