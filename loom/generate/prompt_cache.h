// Prompt-cache files in mlx-lm's layout (mlx_lm/models/cache.py save_prompt_cache): one safetensors
// file whose tensors are "<layer>.0" (keys) and "<layer>.1" (values), each [B, H, T, D], and whose
// string metadata is the flattened [meta_states, user_metadata, class_names] list:
// "0.<layer>" = "" (KVCache has no meta state), "1.<key>" = user value, "2.<layer>" = "KVCache".
// A RotatingKVCache layer stores its buffer (ring order) and meta state "0.<layer>.0..3" = keep,
// max_size, offset, _idx, with "2.<layer>" = "RotatingKVCache"; loading rebuilds it from those.
// A QuantizedKVCache layer (--kv-bits) stores "<layer>.<0 keys|1 values>.<0 wq|1 scales|2 biases>",
// each [B, H, offset, .], with meta state "0.<layer>.0..2" = offset, group_size, bits and
// "2.<layer>" = "QuantizedKVCache" (mlx-lm's tree_flatten of its state tuples).
// A ChunkedKVCache layer (Llama 4) stores its positions [start_position, offset) and meta state
// "0.<layer>.0..1" = chunk_size, start_position, with "2.<layer>" = "ChunkedKVCache".
// An ArraysCache layer (recurrent state) stores mlx-lm's state (cache list, left_padding, lengths) as
// "<layer>.0.<i>" per state array plus "<layer>.1" and "<layer>.2" (empty arrays: a saved cache is one
// unpadded sequence), meta state "0.<layer>" = "", "2.<layer>" = "ArraysCache"; files of mlx-lm
// releases that wrote the bare list ("<layer>.<i>") load too. A CacheList layer stores each child's
// state under "<layer>.<j>", its class under "0.<layer>.0.<j>" and its meta state under
// "0.<layer>.1.<j>", with "2.<layer>" = "CacheList" (mlx-lm's tree_flatten of its state and of
// ([class names], [meta states])). A loaded recurrent layer takes the offset of the file's attention
// layers (mlx-lm's ArraysCache counts no positions); in a purely recurrent model it is 0.
#pragma once

#include <map>
#include <string>

#include "loom/models/model.h"

namespace loom::generate {

// Writes every layer's KV state; throws NotSupportedError for cache types other than KVCache,
// RotatingKVCache and QuantizedKVCache.
void save_prompt_cache(const std::string& path, const models::Cache& cache,
                       const std::map<std::string, std::string>& metadata = {});
// A cache for `model` filled from the file (layer count and class checked); user metadata into
// *metadata when given.
models::Cache load_prompt_cache(const std::string& path, const models::LanguageModel& model,
                                std::map<std::string, std::string>* metadata = nullptr);

}  // namespace loom::generate
