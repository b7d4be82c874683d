#!/usr/bin/env python3
"""Tiny random state-space and hybrid reference checkpoints (mamba, falcon_mamba, mamba2, jamba) for
loom's recurrent-model tests, made with HF transformers.

Reuses make_fixtures.py (prompts, margins, run, greedy) and make_moe_fixtures.py's routing margin. Runs
on the CPU in float32 with eager attention, so transformers takes its sequential ("slow") Mamba paths
(no mamba_ssm / causal_conv1d kernels are used even when installed: they only run on CUDA).

Each model is perturbed so every parameter matters: random weights at std 0.25, norm weights around 1,
non-zero biases, and A_log = log(U(0.05, 2)) so some channels keep their state for many steps (long
memory makes a wrong carried state visible) while others forget quickly. Re-seeds until the top-1/top-2
logit margin is large at every stored position and, for Jamba, until every expert of every MoE layer is
used and every routing decision has a margin (as make_moe_fixtures.py).

Writes, per fixture, config.json + model.safetensors (save_pretrained), logits_<i>.npy, and
reference.json with the prompts, greedy tokens, margins and versions, plus:
  keys                   every checkpoint key and shape (what loom's sanitize must accept)
  layer_types            jamba: "attention"/"mamba" per layer; moe_layers, routing as make_moe_fixtures.py
  gated_norm_group_size  mamba2: the width over which transformers' gated RMSNorm takes its mean square
                         (intermediate_size = one group, or intermediate_size / n_groups), found by
                         evaluating the module on a probe input

Usage: python3 make_ssm_fixtures.py OUT_DIR [name ...]
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

ROUTING_MARGIN = 1e-3
COMMON = dict(vocab_size=128, hidden_size=32)

FIXTURES = {
    # Mamba-1: 2 layers, in/out projection biases and conv bias, tied head, d_inner 64, d_state 8, dt rank 2
    "mamba": dict(model_type="mamba", num_hidden_layers=2, state_size=8, expand=2, conv_kernel=4, use_bias=True,
                  use_conv_bias=True, time_step_rank="auto", layer_norm_epsilon=1e-5, tie_word_embeddings=True),
    # Falcon-Mamba: Mamba-1 plus weightless RMSNorm of B, C and dt (mixer_rms_eps), untied head
    "falcon_mamba": dict(model_type="falcon_mamba", num_hidden_layers=2, state_size=8, expand=2, conv_kernel=4,
                         use_bias=True, use_conv_bias=True, time_step_rank="auto", layer_norm_epsilon=1e-5,
                         mixer_rms_eps=1e-6, tie_word_embeddings=False),
    # Mamba-2: 8 heads of 8 over 2 groups of B/C (4 heads per group), d_state 8, chunk 5 (< both prompts),
    # dt clipped to [0.2, 1.5] (both bounds are hit), projection and conv biases, untied head
    "mamba2": dict(model_type="mamba2", num_hidden_layers=2, num_heads=8, head_dim=8, expand=2, n_groups=2,
                   state_size=8, conv_kernel=4, chunk_size=5, use_bias=True, use_conv_bias=True,
                   time_step_limit=(0.2, 1.5), layer_norm_epsilon=1e-5, rms_norm=True, residual_in_fp32=True,
                   tie_word_embeddings=False),
    # Jamba: 4 layers; attention at 0 and 3 (period 3, offset 0), mamba at 1 and 2; MoE (4 experts, top 2,
    # softmax without renormalisation) at 1 and 3 (period 2, offset 1), dense MLP at 0 and 2 -- so every
    # (mixer, feed-forward) pair occurs. GQA 4 heads over 2, no positional encoding. Slow mamba path.
    "jamba": dict(model_type="jamba", num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=24, attn_layer_period=3, attn_layer_offset=0, expert_layer_period=2,
                  expert_layer_offset=1, num_experts=4, num_experts_per_tok=2, mamba_d_state=8, mamba_d_conv=4,
                  mamba_expand=2, mamba_dt_rank="auto", mamba_conv_bias=True, mamba_proj_bias=True,
                  use_mamba_kernels=False, rms_norm_eps=1e-5, max_position_embeddings=64,
                  tie_word_embeddings=False),
}


def perturb(model, gen):
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "weight" and "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif leaf == "A_log":
                p.copy_(torch.log(0.05 + 1.95 * torch.rand(p.shape, generator=gen)))
            elif leaf == "D":
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif leaf.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.25 * torch.randn(p.shape, generator=gen))


def build(spec, seed):
    spec = dict(spec)
    model_type = spec.pop("model_type")
    cfg_cls = transformers.AutoConfig.for_model(model_type).__class__
    cfg = cfg_cls(**{**COMMON, **spec})
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    perturb(model, torch.Generator().manual_seed(seed))
    return model, cfg


def run(model, ids):
    """f32 logits [T, vocab] of one full pass from a zero state (no cache object involved)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids]), use_cache=False).logits[0].float()
    assert logits.shape[0] == len(ids), f"logits for {logits.shape[0]} of {len(ids)} positions"
    return logits


def greedy(model, ids, n):
    seq = list(ids)
    worst = float("inf")
    for _ in range(n):
        lg = run(model, seq)[-1]
        m, mx = mf.margins(lg)
        worst = min(worst, float(m / mx))
        seq.append(int(torch.argmax(lg)))
    return seq[len(ids):], worst


# ---- Jamba routing (router = layers[i].feed_forward.router; softmax over all experts, top-k) ----
def routers(model):
    out = []
    for i, layer in enumerate(model.model.layers):
        router = getattr(getattr(layer, "feed_forward", None), "router", None)
        if router is not None:
            out.append((i, router))
    return out


def route(model, ids):
    seen, hooks = {}, []
    for i, router in routers(model):
        def pre(mod, args, i=i):
            seen[i] = args[0].reshape(-1, args[0].shape[-1]).detach().clone()
        hooks.append(router.register_forward_pre_hook(pre))
    with torch.no_grad():
        model(torch.tensor([ids]), use_cache=False)
    for h in hooks:
        h.remove()
    k = model.config.num_experts_per_tok
    out = {}
    for i, router in routers(model):
        probs = torch.softmax(F.linear(seen[i], router.weight).float(), dim=-1)
        vals, inds = torch.topk(probs, k + 1, dim=-1)
        out[i] = (torch.sort(inds[:, :k], dim=-1).values, vals[:, k - 1] - vals[:, k])
    return out


def gated_norm_group_size(model):
    """Width of the mean square in transformers' Mamba-2 gated RMSNorm, found by probing the module
    (None when neither width reproduces it; the fixture is still written)."""
    try:
        return probe_gated_norm(model)
    except Exception as e:  # noqa: BLE001 - a probe failure must not lose the fixture
        print(f"  mamba2: gated norm probe failed: {e!r}", flush=True)
        return None


def probe_gated_norm(model):
    mixer = model.backbone.layers[0].mixer
    d = mixer.intermediate_size
    g = torch.Generator().manual_seed(0)
    y, z = torch.randn(2, 3, d, generator=g), torch.randn(2, 3, d, generator=g)
    with torch.no_grad():
        got = mixer.norm(y, z)
        w = mixer.norm.weight
        eps = mixer.norm.variance_epsilon
        h = y * F.silu(z)
        found = None
        for size in sorted({d, d // mixer.n_groups}):
            hg = h.reshape(2, 3, d // size, size)
            want = (hg * torch.rsqrt(hg.pow(2).mean(-1, keepdim=True) + eps)).reshape(2, 3, d) * w
            if torch.allclose(got, want, rtol=1e-5, atol=1e-6):
                found = size
    return found


def make(name, out_dir):
    spec = FIXTURES[name]
    for seed in range(300):
        model, cfg = build(spec, seed)
        rng = np.random.default_rng(seed)
        prompts = [rng.integers(0, COMMON["vocab_size"], n).tolist() for n in mf.PROMPT_LENS]
        extra = {}
        if name == "jamba":
            routes = [route(model, p) for p in prompts]
            rmargin = min(float(r[1].min()) for rs in routes for r in rs.values())
            covered = all(
                len(set(torch.cat([rs[layer][0].flatten() for rs in routes]).tolist())) == cfg.num_experts
                for layer in routes[0])
            if rmargin < ROUTING_MARGIN or not covered:
                continue
            moe_layers = sorted(routes[0])
            extra = dict(moe_layers=moe_layers, min_routing_margin=rmargin,
                         routing=[[rs[layer][0].tolist() for layer in moe_layers] for rs in routes],
                         layer_types=["attention" if hasattr(layer, "self_attn") else "mamba"
                                      for layer in model.model.layers])
        logits = [run(model, p) for p in prompts]
        rel = min(float((mf.margins(l)[0] / mf.margins(l)[1]).min()) for l in logits)
        toks, gworst = greedy(model, prompts[0], mf.GREEDY_TOKENS)
        if rel > 2e-3 and gworst > 2e-3:
            break
    else:
        raise SystemExit(f"{name}: no seed gave large enough margins")
    if name == "mamba2":
        extra["gated_norm_group_size"] = gated_norm_group_size(model)
    d = os.path.join(out_dir, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    for f in os.listdir(d):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(d, f))
    for i, l in enumerate(logits):
        np.save(os.path.join(d, f"logits_{i}.npy"), l.numpy().astype(np.float32))
    from safetensors import safe_open
    with safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        keys = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
    ref = dict(prompts=prompts, greedy=toks, seed=seed, min_rel_margin=rel, greedy_min_rel_margin=gworst,
               storage="float32", keys=keys, **extra, transformers=transformers.__version__,
               torch=torch.__version__)
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: seed {seed} margin {rel:.4f} greedy {gworst:.4f} size {size} bytes "
          + " ".join(f"{k}={v}" for k, v in extra.items() if k in ("min_routing_margin", "gated_norm_group_size",
                                                                     "layer_types", "moe_layers")), flush=True)
    print("  keys:", {k: v for k, v in keys.items() if ".layers." not in k or ".layers.0." in k or ".layers.1." in k},
          flush=True)
    assert size < 250_000, f"{name}: {size} bytes is over the fixture budget"


if __name__ == "__main__":
    out = sys.argv[1]
    names = sys.argv[2:] or list(FIXTURES)
    for n in names:
        make(n, out)
