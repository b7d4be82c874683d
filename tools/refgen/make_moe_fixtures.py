#!/usr/bin/env python3
"""Tiny random mixture-of-experts reference checkpoints (mixtral, qwen2_moe, qwen3_moe) for loom's MoE tests.

Reuses make_fixtures.py (BASE shapes, perturbation, margins, prompts, greedy) and adds what MoE needs:
re-seeds until EVERY expert of every MoE layer receives at least one token over the stored prompts,
and the routing margin (k-th minus (k+1)-th router score, the scores the router selects on) is
>= 1e-3 at every token and layer, so loom's routing must agree exactly. The router decisions are
stored in reference.json:

  routing[prompt][layer] = [[expert ids of token t, ascending] for t in prompt]   (MoE layers only)
  moe_layers = [layer indices with a router]
  layout = "fused" (experts.gate_up_proj / experts.down_proj) or "per_expert" (experts.{e}.*)

The weights are saved as transformers writes them (save_pretrained); the tests convert them to the
other expert layouts themselves.

Usage: python3 make_moe_fixtures.py OUT_DIR [name ...]
"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

ROUTING_MARGIN = 1e-3

FIXTURES = {
    # 4 experts, top-2 renormalised (softmax over the selected), untied head
    "mixtral": dict(model_type="mixtral", tie_word_embeddings=False, num_local_experts=4, num_experts_per_tok=2,
                    intermediate_size=24, head_dim=8, rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
    # 8 experts of odd width, top-2 with norm_topk_prob, tied head
    "qwen3_moe": dict(model_type="qwen3_moe", tie_word_embeddings=True, num_experts=8, num_experts_per_tok=2,
                      moe_intermediate_size=12, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                      intermediate_size=64, rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
    # 4 experts top-2 without renormalisation, plus the sigmoid-gated shared expert; q/k/v biases
    "qwen2_moe": dict(model_type="qwen2_moe", tie_word_embeddings=False, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=16, shared_expert_intermediate_size=24, norm_topk_prob=False,
                      decoder_sparse_step=1, mlp_only_layers=[], intermediate_size=64, head_dim=8,
                      rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
}


def build(spec, seed):
    """make_fixtures.build with the MoE keys allowed to override BASE (float32 storage only)."""
    spec = dict(spec)
    model_type = spec.pop("model_type")
    cfg_cls = transformers.AutoConfig.for_model(model_type).__class__
    cfg = cfg_cls(**{**mf.BASE, **spec})
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    mf.perturb(model, torch.Generator().manual_seed(seed))
    return model, cfg, "float32"


def top_k(cfg):
    return cfg.num_experts_per_tok


def num_experts(cfg):
    return getattr(cfg, "num_local_experts", None) or cfg.num_experts


def routers(model):
    """(layer index, router module) for each MoE layer; the router is `<layer>.mlp.gate`."""
    out = []
    for i, layer in enumerate(model.model.layers):
        mlp = getattr(layer, "mlp", None) or getattr(layer, "block_sparse_moe", None)
        gate = getattr(mlp, "gate", None)
        if gate is not None and hasattr(gate, "weight") and gate.weight.shape[0] == num_experts(model.config):
            out.append((i, gate))
    return out


def route(model, ids):
    """Runs ids; returns {layer: (topk ids [T, k] ascending, margin [T])} from the router inputs."""
    seen = {}
    hooks = []
    for i, gate in routers(model):
        def pre(mod, args, i=i):
            seen[i] = args[0].reshape(-1, args[0].shape[-1]).detach().clone()
        hooks.append(gate.register_forward_pre_hook(pre))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    k = top_k(model.config)
    out = {}
    for i, gate in routers(model):
        # Every router here selects on softmax(logits) over all experts (monotone in the logits).
        probs = torch.softmax(F.linear(seen[i], gate.weight).float(), dim=-1)
        vals, inds = torch.topk(probs, k + 1, dim=-1)
        out[i] = (torch.sort(inds[:, :k], dim=-1).values, vals[:, k - 1] - vals[:, k])
    return out


def make(name, out_dir):
    spec = FIXTURES[name]
    for seed in range(300):
        model, cfg, storage = build(spec, seed)
        rng = np.random.default_rng(seed)
        prompts = [rng.integers(0, mf.BASE["vocab_size"], n).tolist() for n in mf.PROMPT_LENS]
        routes = [route(model, p) for p in prompts]
        rmargin = min(float(r[1].min()) for rs in routes for r in rs.values())
        covered = all(
            len(set(torch.cat([rs[layer][0].flatten() for rs in routes]).tolist())) == num_experts(cfg)
            for layer in routes[0])
        if rmargin < ROUTING_MARGIN or not covered:
            continue
        logits = [mf.run(model, p) for p in prompts]
        rel = min(float((mf.margins(l)[0] / mf.margins(l)[1]).min()) for l in logits)
        toks, gworst = mf.greedy(model, prompts[0], mf.GREEDY_TOKENS)
        if rel > 2e-3 and gworst > 2e-3:
            break
    else:
        raise SystemExit(f"{name}: no seed gave large enough margins")
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
        keys = list(f.keys())
    layout = "fused" if any(k.endswith("experts.gate_up_proj") for k in keys) else "per_expert"
    moe_layers = sorted(routes[0])
    routing = [[rs[layer][0].tolist() for layer in moe_layers] for rs in routes]
    ref = dict(prompts=prompts, greedy=toks, seed=seed, min_rel_margin=rel, greedy_min_rel_margin=gworst,
               storage=storage, moe_layers=moe_layers, routing=routing, min_routing_margin=rmargin, layout=layout,
               transformers=transformers.__version__, torch=torch.__version__)
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: seed {seed} margin {rel:.4f} greedy {gworst:.4f} routing {rmargin:.4f} layout {layout} "
          f"size {size} bytes", flush=True)
    print("  keys:", [k for k in keys if "layers.0." in k], flush=True)


if __name__ == "__main__":
    out = sys.argv[1]
    names = sys.argv[2:] or list(FIXTURES)
    for n in names:
        make(n, out)
