#!/usr/bin/env python3
"""Tiny random mixture-of-experts reference checkpoints (mixtral, qwen2_moe, qwen3_moe, olmoe, phimoe) for loom's
MoE tests.

Reuses make_fixtures.py (BASE shapes, perturbation, margins, prompts, greedy) and adds what MoE needs:
re-seeds until EVERY expert of every MoE layer receives at least one token over the stored prompts,
and the routing margin (k-th minus (k+1)-th router score, the scores the router selects on) is
>= 1e-3 at every token and layer, so loom's routing must agree exactly. The router decisions are
stored in reference.json:

  routing[prompt][layer] = [[expert ids of token t, ascending] for t in prompt]   (MoE layers only)
  router = "softmax_topk" (softmax over all experts, top-k) or "sparsemixer" (PhiMoE, see sparsemixer_route)
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
    # 8 experts, top-2 with norm_topk_prob, tied head. Expert width 16: transformers' bf16 forward (grouped_mm)
    # needs expert rows of a multiple of 16 bytes, which 12 was not, so bf16_baseline.py could not run.
    "qwen3_moe": dict(model_type="qwen3_moe", tie_word_embeddings=True, num_experts=8, num_experts_per_tok=2,
                      moe_intermediate_size=16, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                      intermediate_size=64, rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
    # 4 experts top-2 without renormalisation, plus the sigmoid-gated shared expert; q/k/v biases
    "qwen2_moe": dict(model_type="qwen2_moe", tie_word_embeddings=False, num_experts=4, num_experts_per_tok=2,
                      moe_intermediate_size=16, shared_expert_intermediate_size=24, norm_topk_prob=False,
                      decoder_sparse_step=1, mlp_only_layers=[], intermediate_size=64, head_dim=8,
                      rope_parameters=dict(rope_type="default", rope_theta=1000000.0)),
    # OLMoE: q/k RMSNorm over the whole projection, clip_qkv, 8 experts top-3 without renormalisation.
    # head_dim must be hidden/heads (transformers sizes q_norm by hidden_size); num_key_value_heads left to the
    # config's default (= heads). None drops the BASE key so the config class's default applies.
    "olmoe": dict(model_type="olmoe", tie_word_embeddings=False, num_experts=8, num_experts_per_tok=3,
                  norm_topk_prob=False, intermediate_size=16, clip_qkv=1.5, head_dim=None, num_key_value_heads=None,
                  rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
    # PhiMoE: LayerNorm (with bias), q/k/v/o and lm_head biases, 4 experts routed by sparsemixer. A large
    # router_jitter_noise (0.25: mask threshold 0.5 relative) makes the masked softmax keep several experts
    # for some tokens and only the selected one for others, so both multiplier cases are exercised.
    "phimoe": dict(model_type="phimoe", tie_word_embeddings=False, num_local_experts=4, num_experts_per_tok=2,
                   intermediate_size=24, head_dim=None, attention_bias=True, lm_head_bias=True,
                   router_jitter_noise=0.25, rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
}


def build(spec, seed):
    """make_fixtures.build with the MoE keys allowed to override BASE (float32 storage only); a key set to None
    is left out so the config class's default applies."""
    spec = dict(spec)
    model_type = spec.pop("model_type")
    cfg_cls = transformers.AutoConfig.for_model(model_type).__class__
    kwargs = {k: v for k, v in {**mf.BASE, **spec}.items() if v is not None}
    cfg = cfg_cls(**kwargs)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    if model_type == "phimoe":
        check_phimoe(model)
    mf.perturb(model, torch.Generator().manual_seed(seed))
    return model, cfg, "float32"


def check_phimoe(model):
    """PhiMoE's decoder and final norms are LayerNorm with bias (Phi-3.5-MoE checkpoints, mlx-lm phimoe.py); stop
    rather than write a reference of another architecture if this transformers builds something else."""
    norms = [model.model.norm] + [n for l in model.model.layers for n in (l.input_layernorm, l.post_attention_layernorm)]
    bad = [type(n).__name__ for n in norms if not isinstance(n, torch.nn.LayerNorm) or n.bias is None]
    if bad:
        raise SystemExit(f"phimoe: transformers {transformers.__version__} builds norms {bad}, not LayerNorm")


def top_k(cfg):
    return cfg.num_experts_per_tok


def num_experts(cfg):
    return getattr(cfg, "num_local_experts", None) or cfg.num_experts


def routers(model):
    """(layer index, router module) for each MoE layer; the router is `<layer>.mlp.gate` (PhiMoE in transformers
    5: `<layer>.mlp.router`), a module whose weight is [experts, hidden]."""
    out = []
    for i, layer in enumerate(model.model.layers):
        mlp = getattr(layer, "mlp", None) or getattr(layer, "block_sparse_moe", None)
        for name in ("gate", "router"):
            gate = getattr(mlp, name, None)
            if gate is not None and hasattr(gate, "weight") and gate.weight.shape[0] == num_experts(model.config):
                out.append((i, gate))
                break
    return out


def sparsemixer_route(logits, jitter_eps):
    """PhiMoE's sparsemixer at inference (transformers modeling_phimoe.py, training=False), always two experts:
    expert 1 = argmax of the logits; expert 2 = argmax of the others. For each, the logits whose relative gap to
    that pick, (pick - s_j) / max(|s_j|, pick), exceeds 2 * jitter_eps are masked out and the pick's weight is its
    softmax over what is left (expert 1 itself masked for the second pick). Returns (ids [T, 2] ascending,
    margin [T], kept [T, 2]): margin is the smallest of the two logit gaps that decide the picks and of the
    distances of every relative gap from the threshold; kept counts the experts in each masked softmax."""
    T, E = logits.shape
    two_eps = 2 * jitter_eps
    ids = torch.zeros(T, 2, dtype=torch.long)
    margin = torch.zeros(T)
    kept = torch.zeros(T, 2, dtype=torch.long)
    for t in range(T):
        s = logits[t].double()
        order = torch.argsort(s, descending=True)
        picks = [int(order[0]), int(order[1])]
        gaps = [float(s[order[0]] - s[order[1]]), float(s[order[1]] - s[order[2]]) if E > 2 else float("inf")]
        m = min(gaps)
        for r, pick in enumerate(picks):
            top = s[pick]
            for j in range(E):
                if j == pick or (r == 1 and j == picks[0]):
                    continue
                rel = float((top - s[j]) / max(abs(float(s[j])), float(top)))
                m = min(m, abs(rel - two_eps))
                kept[t, r] += int(rel <= two_eps)
            kept[t, r] += 1  # the pick itself
        ids[t] = torch.tensor(sorted(picks))
        margin[t] = m
    return ids, margin, kept


def route(model, ids):
    """Runs ids; returns {layer: (topk ids [T, k] ascending, margin [T], kept or None)} from the router inputs."""
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
        logits = F.linear(seen[i], gate.weight).float()
        if model.config.model_type == "phimoe":
            out[i] = sparsemixer_route(logits, model.config.router_jitter_noise)
            continue
        # The other routers select on softmax(logits) over all experts (monotone in the logits).
        probs = torch.softmax(logits, dim=-1)
        vals, inds = torch.topk(probs, k + 1, dim=-1)
        out[i] = (torch.sort(inds[:, :k], dim=-1).values, vals[:, k - 1] - vals[:, k], None)
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
        if name == "phimoe":
            # both sparsemixer cases occur for each pick: only the pick kept, and several experts kept
            kept = torch.cat([r[2] for rs in routes for r in rs.values()])
            if not all(bool((kept[:, c] == 1).any()) and bool((kept[:, c] > 1).any()) for c in range(2)):
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
               router="sparsemixer" if name == "phimoe" else "softmax_topk",
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
