#!/usr/bin/env python3
"""Tiny random reference checkpoints for loom's architecture tests, made with HF transformers.

Runs on the GPU machine (PyTorch + transformers), on the CPU in float32 with TF32 off and eager
attention. For each fixture it builds a model from a config, perturbs every parameter so each one
matters (random weights at std 0.2, norm weights around 1, non-zero biases), re-seeds until the
top-1/top-2 logit margin is large at every position it stores, and writes:

  tests/fixtures/<name>/config.json, model.safetensors   (save_pretrained, hub layout)
  tests/fixtures/<name>/logits_<i>.npy                    f32 logits [T_i, vocab] of prompt i alone
  tests/fixtures/<name>/reference.json                    prompts, greedy tokens, margins, versions

Usage: python3 make_fixtures.py OUT_DIR [name ...]
"""
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
torch.set_num_threads(4)

# Small enough for the 200 KB budget, big enough for GQA (4 query heads over 2 kv heads),
# head_dim != hidden/heads, and two layers so the residual stream crosses a block boundary.
BASE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, vocab_size=128, max_position_embeddings=64,
            rms_norm_eps=1e-5)

FIXTURES = {
    # llama with llama3 rope scaling, untied head
    "llama": dict(model_type="llama", tie_word_embeddings=False,
                  rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                       high_freq_factor=4.0, original_max_position_embeddings=16)),
    # llama with tied embeddings, all biases and linear rope scaling
    "llama_tied": dict(model_type="llama", tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
                       rope_parameters=dict(rope_type="linear", rope_theta=500.0, factor=2.0)),
    # mistral with a sliding window shorter than the prompts
    "mistral": dict(model_type="mistral", tie_word_embeddings=False, sliding_window=5,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
    # qwen2 (q/k/v biases) with yarn rope scaling
    "qwen2": dict(model_type="qwen2", tie_word_embeddings=False,
                  rope_parameters=dict(rope_type="yarn", rope_theta=10000.0, factor=4.0,
                                       original_max_position_embeddings=16)),
    # qwen3 (q/k norm), tied
    "qwen3": dict(model_type="qwen3", tie_word_embeddings=True,
                  rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
    # llama stored in bfloat16; reference computed in f32 from the bf16 values
    "llama_bf16": dict(model_type="llama", tie_word_embeddings=False, storage="bfloat16",
                       rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
}

PROMPT_LENS = [12, 7]  # two prompts of different lengths (batch tests left-pad the second)
GREEDY_TOKENS = 8


def perturb(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.25 * torch.randn(p.shape, generator=gen))


def margins(logits):
    top2 = torch.topk(logits, 2, dim=-1).values
    return (top2[..., 0] - top2[..., 1]), logits.abs().max()


def build(name, spec, seed):
    spec = dict(spec)
    storage = spec.pop("storage", "float32")
    model_type = spec.pop("model_type")
    cfg_cls = transformers.AutoConfig.for_model(model_type).__class__
    cfg = cfg_cls(**BASE, **spec)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    perturb(model, torch.Generator().manual_seed(seed))
    if storage == "bfloat16":
        # round every parameter to bf16, then compute in f32 from the rounded values
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    return model, cfg, storage


def run(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


def greedy(model, ids, n):
    seq = list(ids)
    worst = float("inf")
    for _ in range(n):
        lg = run(model, seq)[-1]
        m, mx = margins(lg)
        worst = min(worst, float(m / mx))
        seq.append(int(torch.argmax(lg)))
    return seq[len(ids):], worst


def make(name, out_dir):
    spec = FIXTURES[name]
    for seed in range(100):
        model, cfg, storage = build(name, spec, seed)
        rng = np.random.default_rng(seed)
        prompts = [rng.integers(0, BASE["vocab_size"], n).tolist() for n in PROMPT_LENS]
        logits = [run(model, p) for p in prompts]
        rel = min(float((margins(l)[0] / margins(l)[1]).min()) for l in logits)
        toks, gworst = greedy(model, prompts[0], GREEDY_TOKENS)
        if rel > 2e-3 and gworst > 2e-3:
            break
    else:
        raise SystemExit(f"{name}: no seed gave large enough margins")
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    if storage == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(d, safe_serialization=True)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, f))
    for i, l in enumerate(logits):
        np.save(os.path.join(d, f"logits_{i}.npy"), l.numpy().astype(np.float32))
    ref = dict(prompts=prompts, greedy=toks, seed=seed, min_rel_margin=rel, greedy_min_rel_margin=gworst,
               storage=storage, transformers=transformers.__version__, torch=torch.__version__)
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: seed {seed} margin {rel:.4f} greedy margin {gworst:.4f} size {size} bytes", flush=True)


if __name__ == "__main__":
    out = sys.argv[1]
    names = sys.argv[2:] or list(FIXTURES)
    for n in names:
        make(n, out)
