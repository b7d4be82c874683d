#!/usr/bin/env python3
"""transformers' RoPE parameter functions (ROPE_INIT_FUNCTIONS) for the variants loom implements:
inverse frequencies and attention scaling for a set of configs, written as JSON for
tests/nn/rope_test.cpp. Usage: python3 rope_ref.py OUT.json"""
import json
import sys

import torch
import transformers
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

CASES = [
    ("default", dict(rope_type="default", rope_theta=10000.0), 64, 0),
    ("linear", dict(rope_type="linear", rope_theta=10000.0, factor=4.0), 64, 0),
    ("llama3", dict(rope_type="llama3", rope_theta=500000.0, factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                    original_max_position_embeddings=8192), 131072, 0),
    ("yarn", dict(rope_type="yarn", rope_theta=1000000.0, factor=4.0, original_max_position_embeddings=32768), 131072, 0),
    ("yarn_mscale", dict(rope_type="yarn", rope_theta=10000.0, factor=40.0, original_max_position_embeddings=4096,
                         beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=1.0), 163840, 0),
    ("dynamic_short", dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0), 2048, 1000),
    ("dynamic_long", dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0), 2048, 5000),
    ("longrope_short", dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=4096,
                            short_factor=[1.0 + 0.05 * i for i in range(32)],
                            long_factor=[1.0 + 0.5 * i for i in range(32)]), 131072, 100),
    ("longrope_long", dict(rope_type="longrope", rope_theta=10000.0, original_max_position_embeddings=4096,
                           short_factor=[1.0 + 0.05 * i for i in range(32)],
                           long_factor=[1.0 + 0.5 * i for i in range(32)]), 131072, 5000),
]

out = {"transformers": transformers.__version__, "head_dim": 64, "cases": []}
for name, rp, max_pos, seq_len in CASES:
    cfg = LlamaConfig(hidden_size=256, num_attention_heads=4, head_dim=64, max_position_embeddings=max_pos,
                      rope_parameters=dict(rp))
    fn = ROPE_INIT_FUNCTIONS[rp["rope_type"]] if rp["rope_type"] != "default" else None
    if fn is None:
        inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, 64, 2, dtype=torch.int64).float() / 64))
        att = 1.0
    else:
        kwargs = {"seq_len": seq_len} if seq_len else {}
        inv, att = fn(cfg, "cpu", **kwargs)
    out["cases"].append(dict(name=name, rope_parameters=rp, max_position_embeddings=max_pos, seq_len=seq_len,
                             inv_freq=[float(x) for x in inv], attention_factor=float(att)))
json.dump(out, open(sys.argv[1], "w"), indent=1)
print("wrote", len(out["cases"]), "cases")
