#!/usr/bin/env python3
"""Tiny random hybrid (recurrent + attention) reference checkpoints for loom's tests: qwen3_next and
recurrent_gemma.

Reuses make_fixtures.py (BASE shapes, perturbation, margins, prompts, greedy) and make_moe_fixtures.py
(router hooks, routing margin and expert coverage). On top of the plain perturbation:

qwen3_next: layers linear, full, linear (full_attention_interval 2, written by transformers as
  layer_types); gated DeltaNet with 2 key heads and 4 value heads (so the interleaved in_proj_qkvz /
  in_proj_ba layout and the key-head repeat matter); A_log = log(U(0.05, 1)) so the decays exp(g) keep
  memory over the 12-token prompt; MoE of 4 experts top-2 (renormalised) plus the sigmoid-gated shared
  expert in every layer, re-seeded until every expert is used and the routing margin >= 1e-3 (as in
  make_moe_fixtures.py; routing stored the same way). transformers runs its torch fallbacks here
  (no flash-linear-attention / causal-conv1d): torch_chunk_gated_delta_rule for the full pass.

recurrent_gemma: layers recurrent, recurrent, attention; local attention window 5 (shorter than both
  prompts, 12 and 7); hidden 36 so sqrt(hidden) = 6 is exact in bfloat16 (transformers multiplies the
  embeddings by sqrt(hidden) rounded to bfloat16, mlx-lm by the exact value: with 36 both agree);
  recurrent_param set so softplus(recurrent_param) ~ U(0.005, 0.1), i.e. a = exp(-8 * gate * softplus)
  in (0.45, 1), so the RG-LRU state carries over the whole prompt.
  The reference must apply Griffin's local attention (query i sees keys i-window+1 .. i, as mlx-lm's mask and
  RotatingKVCache do). Older transformers builds a plain causal mask in the full pass (the window only lives in
  its decode cache, which also has an off-by-one at the window boundary), so the script first checks from
  outputs alone whether this transformers' full pass (use_cache=False) windows: with every recurrent block's
  output projection zeroed, changing token 0 must move the logits before the window and no position after it.
  If it does not, the script replaces transformers' mask builder (RecurrentGemmaModel._update_causal_mask, or
  the masking functions the modeling module calls) with the local mask, re-checks the window the same way,
  and checks that the replaced mask agrees with transformers' own before the window binds. It also checks
  that the window changes the logits after that (so the fixture tests it), and records transformers' own bf16
  error under the reference's mask as hf_bf16_windowed (bf16_baseline.py's hf_bf16 runs the unpatched
  forward).

Writes per fixture config.json, model.safetensors, logits_<i>.npy, reference.json (prompts, greedy,
margins, versions; plus routing for qwen3_next and window facts for recurrent_gemma).

Usage: python3 make_hybrid_fixtures.py OUT_DIR [name ...]
"""
import copy
import json
import os
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
import make_moe_fixtures as mm  # noqa: E402

QWEN3_NEXT = dict(
    model_type="qwen3_next", hidden_size=32, num_hidden_layers=3, full_attention_interval=2,
    num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.25),
    linear_num_key_heads=2, linear_num_value_heads=4, linear_key_head_dim=8, linear_value_head_dim=8,
    linear_conv_kernel_dim=4, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=8,
    shared_expert_intermediate_size=16, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
    intermediate_size=48, tie_word_embeddings=False, vocab_size=128, max_position_embeddings=64,
    rms_norm_eps=1e-6)

RECURRENT_GEMMA = dict(
    model_type="recurrent_gemma", hidden_size=36, intermediate_size=72, num_hidden_layers=3,
    num_attention_heads=3, num_key_value_heads=1, lru_width=36, attention_window_size=5, conv1d_width=4,
    logits_soft_cap=30.0, rms_norm_eps=1e-6,
    rope_parameters=dict(rope_type="default", rope_theta=10000.0, partial_rotary_factor=0.5),
    block_types=["recurrent", "recurrent", "attention"], vocab_size=128, tie_word_embeddings=True,
    pad_token_id=0, bos_token_id=2, eos_token_id=1)

FIXTURES = {"qwen3_next": QWEN3_NEXT, "recurrent_gemma": RECURRENT_GEMMA}


def build(spec, seed):
    spec = dict(spec)
    model_type = spec.pop("model_type")
    cfg_cls = transformers.AutoConfig.for_model(model_type).__class__
    cfg = cfg_cls(**spec)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float().eval()
    gen = torch.Generator().manual_seed(seed)
    mf.perturb(model, gen)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_log"):  # qwen3_next: A in (0.05, 1)
                p.copy_(torch.log(0.05 + 0.95 * torch.rand(p.shape, generator=gen)))
            elif name.endswith("rg_lru.recurrent_param"):  # recurrent_gemma: softplus(param) in (0.005, 0.1)
                s = 0.005 + 0.095 * torch.rand(p.shape, generator=gen)
                p.copy_(torch.log(torch.expm1(s)))
    return model, cfg


# ---------------------------------------------------------------- recurrent_gemma's windowed reference

def _mask(L, window, batch, dtype):
    i = torch.arange(L)[:, None]
    j = torch.arange(L)[None, :]
    allowed = (j <= i) if window is None else (j <= i) & (j > i - window)
    m = torch.zeros(L, L, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
    return m[None, None].expand(batch, 1, L, L)


def _mask_fn(window):
    """A stand-in for transformers' mask builders: the additive [B, 1, L, L] mask of the call's
    inputs_embeds (any argument spelling), local with `window` or plain causal (None)."""
    def fn(*args, **kwargs):
        x = next((kwargs[k] for k in ("inputs_embeds", "input_embeds", "input_tensor") if kwargs.get(k) is not None),
                 None)
        if x is None:
            x = next(a for a in args if torch.is_tensor(a) and a.ndim == 3)
        return _mask(x.shape[1], window, x.shape[0], x.dtype)
    return fn


def mask_builders(model):
    """Ways to replace how this transformers builds RecurrentGemma's attention mask: ("method", name) shadows
    RecurrentGemmaModel.<name> on the instance; ("module", names) replaces those module-level functions of
    modeling_recurrent_gemma together."""
    cls = type(model.model)
    mod = sys.modules[cls.__module__]
    out = [("method", n) for n in ("_update_causal_mask",) if hasattr(cls, n)]
    names = tuple(n for n in ("create_causal_mask", "create_sliding_window_causal_mask", "create_masks_for_generate")
                  if hasattr(mod, n))
    if names:
        out.append(("module", names))
    return out


def run_rg(model, ids, patch=None):
    """Full pass without cache. patch None: transformers as it is; (builder, window): the mask replaced
    through `builder` (see mask_builders) by the local mask of `window` positions, or plain causal (None)."""
    saved = []
    if patch is not None:
        (kind, name), window = patch
        if kind == "method":
            setattr(model.model, name, _mask_fn(window))
        else:
            mod = sys.modules[type(model.model).__module__]
            for n in name:
                saved.append((mod, n, getattr(mod, n)))
                setattr(mod, n, _mask_fn(window))
    try:
        with torch.no_grad():
            return model(torch.tensor([ids]), use_cache=False).logits[0].float()
    finally:
        if patch is not None and patch[0][0] == "method":
            model.model.__dict__.pop(patch[0][1], None)
        for mod, n, f in saved:
            setattr(mod, n, f)


def windowed(model, ids, patch):
    """Whether this full pass applies the attention window, decided from outputs only: with every recurrent
    block's output projection zeroed, token 0 can reach position p only through attention, so changing it must
    move the logits before the window and leave every position >= window untouched."""
    w = model.config.attention_window_size
    probe = copy.deepcopy(model)
    with torch.no_grad():
        for layer in probe.model.layers:
            out = getattr(layer.temporal_block, "linear_out", None)
            if out is not None:
                out.weight.zero_()
                out.bias.zero_()
    other = [(ids[0] + 1) % probe.config.vocab_size] + list(ids[1:])
    a, b = run_rg(probe, ids, patch), run_rg(probe, other, patch)
    return rel(a[:w], b[:w]) > 1e-4 and rel(a[w:], b[w:]) < 1e-6


def reference_patch(model, ids):
    """The patch under which transformers computes Griffin's local attention (None if it does so itself),
    checked by `windowed`; a replaced mask must also agree with transformers' own where the window does not
    bind. Stops with transformers' source of the model forward when no way works."""
    w = model.config.attention_window_size
    if windowed(model, ids, None):
        return None
    own = run_rg(model, ids)
    for builder in mask_builders(model):
        patch = (builder, w)
        try:
            ok = windowed(model, ids, patch) and rel(run_rg(model, ids, patch)[:w], own[:w]) < 1e-5
        except Exception as e:  # noqa: BLE001 - a builder this version does not call the way we assume
            print(f"recurrent_gemma: mask builder {builder} failed: {e!r}", flush=True)
            ok = False
        if ok:
            return patch
    import inspect
    print(inspect.getsource(type(model.model).forward), flush=True)
    raise SystemExit(f"recurrent_gemma: no way found to apply the attention window (tried {mask_builders(model)})")


def greedy_rg(model, ids, n, patch):
    seq = list(ids)
    worst = float("inf")
    for _ in range(n):
        lg = run_rg(model, seq, patch)[-1]
        m, mx = mf.margins(lg)
        worst = min(worst, float(m / mx))
        seq.append(int(torch.argmax(lg)))
    return seq[len(ids):], worst


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


# ---------------------------------------------------------------- driver

def make(name, out_dir):
    spec = FIXTURES[name]
    extra = {}
    for seed in range(300):
        model, cfg = build(spec, seed)
        rng = np.random.default_rng(seed)
        prompts = [rng.integers(0, spec["vocab_size"], n).tolist() for n in mf.PROMPT_LENS]
        if name == "qwen3_next":
            routes = [mm.route(model, p) for p in prompts]
            if not routes[0]:
                raise SystemExit("qwen3_next: no router found (make_moe_fixtures.routers)")
            rmargin = min(float(r[1].min()) for rs in routes for r in rs.values())
            covered = all(
                len(set(torch.cat([rs[layer][0].flatten() for rs in routes]).tolist())) == cfg.num_experts
                for layer in routes[0])
            if rmargin < mm.ROUTING_MARGIN or not covered:
                continue
            logits = [mf.run(model, p) for p in prompts]
            toks, gworst = mf.greedy(model, prompts[0], mf.GREEDY_TOKENS)
            moe_layers = sorted(routes[0])
            extra = dict(moe_layers=moe_layers, min_routing_margin=rmargin,
                         routing=[[rs[layer][0].tolist() for layer in moe_layers] for rs in routes],
                         layer_types=list(cfg.layer_types))
        else:
            patch = reference_patch(model, prompts[0])
            logits = [run_rg(model, p, patch) for p in prompts]
            toks, gworst = greedy_rg(model, prompts[0], mf.GREEDY_TOKENS, patch)
        r = min(float((mf.margins(l)[0] / mf.margins(l)[1]).min()) for l in logits)
        if r > 2e-3 and gworst > 2e-3:
            break
    else:
        raise SystemExit(f"{name}: no seed gave large enough margins")

    if name == "recurrent_gemma":
        w = cfg.attention_window_size
        hf_own = run_rg(model, prompts[0])
        if patch is None:  # transformers windows by itself: no window = a window longer than the prompt
            wide = copy.deepcopy(model)
            wide.config.attention_window_size = 1 << 12
            causal = run_rg(wide, prompts[0])
        else:
            causal = run_rg(model, prompts[0], (patch[0], None))
        agree = rel(logits[0][:w], hf_own[:w])
        effect = rel(logits[0][w:], causal[w:])
        if agree > 1e-5:
            raise SystemExit(f"recurrent_gemma: windowed mask disagrees with transformers' own mask before the "
                             f"window binds (max rel {agree:.2e})")
        if effect < 1e-2:
            raise SystemExit(f"recurrent_gemma: the attention window hardly changes the logits ({effect:.2e})")
        hf_full = "windowed" if rel(hf_own, logits[0]) < 1e-5 else (
            "global" if rel(hf_own, causal) < 1e-5 else "neither")
        # transformers' bf16 error under the reference's own mask (bf16_baseline.py's hf_bf16 runs transformers'
        # plain forward, which does not window unless transformers_full_pass_mask says "windowed").
        m16 = copy.deepcopy(model).to(torch.bfloat16)
        got16 = run_rg(m16, prompts[0], patch)
        d16 = (got16 - logits[0]).abs()
        extra = dict(attention_window_size=w, window_effect_max_rel=effect, window_agree_max_rel=agree,
                     hf_bf16_windowed={"max_rel": round(float(d16.max() / logits[0].abs().max()), 4),
                                       "mean_rel": round(float(d16.sum() / logits[0].abs().sum()), 4),
                                       "made_by": "tools/refgen/make_hybrid_fixtures.py (CPU)"},
                     transformers_full_pass_mask=hf_full,
                     reference_mask=("transformers' own" if patch is None else
                                     f"local window (query i sees keys i-window+1..i) through {patch[0]}") +
                                    "; use_cache=False")

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
    if name == "qwen3_next":
        extra["layout"] = "fused" if any(k.endswith("experts.gate_up_proj") for k in keys) else "per_expert"
    ref = dict(prompts=prompts, greedy=toks, seed=seed, min_rel_margin=r, greedy_min_rel_margin=gworst,
               storage="float32", **extra, transformers=transformers.__version__, torch=torch.__version__)
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: seed {seed} margin {r:.4f} greedy {gworst:.4f} size {size} bytes "
          f"{ {k: v for k, v in extra.items() if k != 'routing'} }", flush=True)
    print("  keys:", sorted(k for k in keys if ".0." in k or ".2." in k or "layers" not in k), flush=True)
    print("  config:", json.load(open(os.path.join(d, "config.json"))), flush=True)


if __name__ == "__main__":
    out = sys.argv[1]
    names = sys.argv[2:] or list(FIXTURES)
    for n in names:
        make(n, out)
