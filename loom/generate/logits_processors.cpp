// Logits processors: small scatter updates on a copy of the logits (the ids are on the host already,
// since they are the tokens generated so far).
#include "loom/generate/logits_processors.h"

#include <algorithm>
#include <set>

#include "loom/common/error.h"
#include "loom/ops/ops.h"

namespace loom::generate {
namespace {

// A writable f32 CPU copy of logits [.., V] and fn(row_ptr, V) applied to each row.
template <typename Fn>
Array update_rows(const Array& logits, const char* where, Fn fn) {
  if (!logits.device().is_cpu()) throw NotSupportedError(format_error(where, "only CPU arrays are supported so far"));
  Array in = contiguous(astype(logits, Dtype::f32));
  Array out = Array::empty(in.shape(), Dtype::f32, Device::cpu());  // never alias the caller's logits
  std::copy(in.data<float>(), in.data<float>() + in.size(), out.data<float>());
  int64_t V = out.shape(-1);
  int64_t rows = V == 0 ? 0 : out.size() / V;
  for (int64_t r = 0; r < rows; ++r) fn(out.data<float>() + r * V, V);
  return out;
}

std::span<const int32_t> last(std::span<const int32_t> tokens, int context_size) {
  size_t n = std::min(tokens.size(), static_cast<size_t>(std::max(context_size, 0)));
  return tokens.subspan(tokens.size() - n);
}

}  // namespace

LogitsProcessor make_logit_bias(std::map<int32_t, float> bias) {
  return [bias = std::move(bias)](std::span<const int32_t>, const Array& logits) {
    return update_rows(logits, "logit_bias", [&](float* row, int64_t V) {
      for (auto [id, b] : bias)
        if (id >= 0 && id < V) row[id] += b;
    });
  };
}

LogitsProcessor make_repetition_penalty(float penalty, int context_size) {
  if (penalty < 0) throw ValueError(format_error("repetition_penalty", "penalty must be a non-negative float"));
  return [=](std::span<const int32_t> tokens, const Array& logits) {
    if (tokens.empty()) return logits;
    std::set<int32_t> seen(last(tokens, context_size).begin(), last(tokens, context_size).end());
    return update_rows(logits, "repetition_penalty", [&](float* row, int64_t V) {
      for (int32_t t : seen)
        if (t >= 0 && t < V) row[t] = row[t] < 0 ? row[t] * penalty : row[t] / penalty;
    });
  };
}

LogitsProcessor make_presence_penalty(float penalty, int context_size) {
  return [=](std::span<const int32_t> tokens, const Array& logits) {
    if (tokens.empty()) return logits;
    std::set<int32_t> seen(last(tokens, context_size).begin(), last(tokens, context_size).end());
    return update_rows(logits, "presence_penalty", [&](float* row, int64_t V) {
      for (int32_t t : seen)
        if (t >= 0 && t < V) row[t] -= penalty;
    });
  };
}

LogitsProcessor make_frequency_penalty(float penalty, int context_size) {
  return [=](std::span<const int32_t> tokens, const Array& logits) {
    if (tokens.empty()) return logits;
    auto recent = last(tokens, context_size);
    return update_rows(logits, "frequency_penalty", [&](float* row, int64_t V) {
      for (int32_t t : recent)
        if (t >= 0 && t < V) row[t] -= penalty;
    });
  };
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

}  // namespace loom::generate
