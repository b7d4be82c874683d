#!/usr/bin/env python3
"""Tiny random reference checkpoints for loom's Llama 4 and Mistral 3 tests (llama4, llama4_text,
mistral3, ministral3), made with HF transformers.

The vision-language checkpoints (llama4, mistral3) are built from their ConditionalGeneration
classes with tiny vision towers, so the saved checkpoint carries vision and projector weights that
loom's sanitize must drop; only text input (token ids) is used and the logits are the language
model's. Reuses make_fixtures.py (perturbation, margins, prompt lengths) and, for the Llama 4 MoE
layers, the routing checks of make_moe_fixtures.py: re-seeds until every expert of every MoE layer
gets a token over the stored prompts and the top-1 routing margin (best minus second-best sigmoid
router score, the score Llama 4 selects on) is >= 1e-3 at every token and layer.

Features per fixture:
  llama4             Llama4ForConditionalGeneration: 4 text layers = RoPE+chunked+dense, RoPE+chunked+MoE,
                     NoPE+full+dense (attention temperature tuning), RoPE+chunked+MoE; chunk 4 < prompt;
                     L2 q/k norm; llama3 RoPE scaling (interleaved pairs); 4 experts top-1 + shared expert;
                     fused experts (gate_up_proj/down_proj); untied head.
  llama4_text        Llama4ForCausalLM: every layer MoE, default NoPE interval (layer 3), no q/k norm, chunk 3,
                     tied head.
  mistral3           Mistral3ForConditionalGeneration (Pixtral tower) over a Mistral text model with a
                     sliding window (5) shorter than the prompt.
  mistral3_ministral3 Mistral3ForConditionalGeneration over a Ministral3 text model (yarn RoPE and the
                     llama_4_scaling_beta query scaling), as the real Ministral 3 checkpoints are.
  ministral3         Ministral3ForCausalLM alone, with a sliding window (5).

Writes OUT_DIR/<name>/{config.json, model.safetensors, logits_<i>.npy, reference.json}; reference.json also
holds hf_bf16 (transformers' own bf16-compute error, as bf16_baseline.py measures it, on the CPU) and,
for Llama 4, moe_layers / routing[prompt][moe layer][token] = [expert] / min_routing_margin.

Usage: python3 make_vlm_fixtures.py OUT_DIR [name ...]
"""
import json
import os
import re
import sys

import numpy as np
import torch
import transformers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

ROUTING_MARGIN = 1e-3

# Text shapes shared by every fixture (make_fixtures.BASE, with head_dim 8 so four Llama 4 layers fit
# the size budget).
TEXT = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, vocab_size=128, max_position_embeddings=64,
            rms_norm_eps=1e-5)

LLAMA4_TEXT = dict(TEXT, head_dim=8, num_hidden_layers=4, intermediate_size=12, intermediate_size_mlp=48,
                   num_local_experts=4, num_experts_per_tok=1, attention_bias=False,
                   rope_parameters=dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                        high_freq_factor=4.0, original_max_position_embeddings=16))

# Llama 4's vision tower, as small as its constructor allows (never run: text input only).
LLAMA4_VISION = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                     vision_output_dim=32, image_size=8, patch_size=4, projector_input_dim=32,
                     projector_output_dim=32, pixel_shuffle_ratio=0.5)

PIXTRAL = dict(model_type="pixtral", hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
               num_channels=3, image_size=16, patch_size=4)

MISTRAL_TEXT = dict(TEXT, model_type="mistral", head_dim=16, num_hidden_layers=2, intermediate_size=64,
                    tie_word_embeddings=False, sliding_window=5,
                    rope_parameters=dict(rope_type="default", rope_theta=10000.0))


def ministral3_text(sliding_window, original_max, beta):
    # yarn with factor = max_position_embeddings / original_max (as the real checkpoints: 262144 / 16384),
    # so transformers' two readings of the yarn factor agree; the query scaling
    # 1 + beta * log(1 + floor(position / original_max)) changes within the prompts.
    factor = TEXT["max_position_embeddings"] / original_max
    return dict(TEXT, model_type="ministral3", head_dim=16, num_hidden_layers=2, intermediate_size=64,
                tie_word_embeddings=False, sliding_window=sliding_window,
                rope_parameters=dict(rope_type="yarn", rope_theta=1000000.0, factor=factor,
                                     original_max_position_embeddings=original_max, beta_fast=32.0, beta_slow=1.0,
                                     mscale=1.0, mscale_all_dim=1.0, llama_4_scaling_beta=beta))


FIXTURES = {
    "llama4": dict(kind="vlm", model_type="llama4", expect="Llama4ForConditionalGeneration",
                   text=dict(LLAMA4_TEXT, interleave_moe_layer_step=2, no_rope_layers=[1, 1, 0, 1], use_qk_norm=True,
                             attention_chunk_size=4, attn_temperature_tuning=True, floor_scale=4, attn_scale=0.5,
                             tie_word_embeddings=False),
                   vision=LLAMA4_VISION, top=dict(tie_word_embeddings=False)),
    "llama4_text": dict(kind="text", model_type="llama4_text", expect="Llama4ForCausalLM",
                        text=dict(LLAMA4_TEXT, interleave_moe_layer_step=1, use_qk_norm=False, attention_chunk_size=3,
                                  attn_temperature_tuning=True, floor_scale=3, attn_scale=0.3,
                                  tie_word_embeddings=True)),
    "mistral3": dict(kind="vlm", model_type="mistral3", expect="Mistral3ForConditionalGeneration",
                     text=MISTRAL_TEXT, vision=PIXTRAL,
                     top=dict(tie_word_embeddings=False, spatial_merge_size=2, image_token_index=10)),
    "mistral3_ministral3": dict(kind="vlm", model_type="mistral3", expect="Mistral3ForConditionalGeneration",
                                text=ministral3_text(None, 4, 0.5), vision=PIXTRAL,
                                top=dict(tie_word_embeddings=False, spatial_merge_size=2, image_token_index=10)),
    "ministral3": dict(kind="text", model_type="ministral3", expect="Ministral3ForCausalLM",
                       text=ministral3_text(5, 8, 0.3)),
}


def build(spec, seed):
    if spec["kind"] == "vlm":
        cfg_cls = transformers.AutoConfig.for_model(spec["model_type"]).__class__
        cfg = cfg_cls(text_config=dict(spec["text"]), vision_config=dict(spec["vision"]), **spec["top"])
        auto = transformers.AutoModelForImageTextToText
    else:
        text = dict(spec["text"])
        text.pop("model_type", None)
        cfg_cls = transformers.AutoConfig.for_model(spec["model_type"]).__class__
        cfg = cfg_cls(**text)
        auto = transformers.AutoModelForCausalLM
    torch.manual_seed(seed)
    model = auto.from_config(cfg, attn_implementation="eager").float().eval()
    if type(model).__name__ != spec["expect"]:
        raise RuntimeError(f"built {type(model).__name__}, expected {spec['expect']}")
    mf.perturb(model, torch.Generator().manual_seed(seed))
    return model, cfg, auto


def run(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()


def greedy(model, ids, n):
    seq = list(ids)
    worst = float("inf")
    for _ in range(n):
        lg = run(model, seq)[-1]
        m, mx = mf.margins(lg)
        worst = min(worst, float(m / mx))
        seq.append(int(torch.argmax(lg)))
    return seq[len(ids):], worst


def routers(model):
    """(layer index, Llama 4 router) for each MoE layer, found by class name wherever the layers sit."""
    out = []
    for name, mod in model.named_modules():
        if type(mod).__name__ == "Llama4Router":
            out.append((int(re.search(r"layers\.(\d+)\.", name).group(1)), mod))
    return sorted(out, key=lambda t: t[0])


def route(model, ids):
    """Runs ids; returns {layer: (top-1 expert [T], margin [T])} from the router inputs."""
    seen = {}
    hooks = []
    for i, r in routers(model):
        def pre(mod, args, i=i):
            seen[i] = args[0].reshape(-1, args[0].shape[-1]).detach().clone()
        hooks.append(r.register_forward_pre_hook(pre))
    run(model, ids)
    for h in hooks:
        h.remove()
    out = {}
    for i, r in routers(model):
        # transformers' Llama4Router: top-k of the logits, weights sigmoid(selected logits).
        scores = torch.sigmoid(torch.nn.functional.linear(seen[i], r.weight).float())
        vals, inds = torch.topk(scores, 2, dim=-1)
        out[i] = (inds[:, 0], vals[:, 0] - vals[:, 1])
    return out


def hf_bf16(auto, d, prompt, want):
    """transformers' own bf16-compute error on prompt 0, as tools/refgen/bf16_baseline.py measures it."""
    m = auto.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager").eval()
    with torch.no_grad():
        got = m(input_ids=torch.tensor([prompt]), use_cache=False).logits[0].float().numpy()
    diff = np.abs(got - want)
    return {"max_rel": round(float(diff.max() / np.abs(want).max()), 4),
            "mean_rel": round(float(diff.sum() / np.abs(want).sum()), 4), "made_by": "tools/refgen/make_vlm_fixtures.py"}


def make(name, out_dir):
    spec = FIXTURES[name]
    vocab = TEXT["vocab_size"]
    for seed in range(300):
        model, cfg, auto = build(spec, seed)
        rng = np.random.default_rng(seed)
        prompts = [rng.integers(0, vocab, n).tolist() for n in mf.PROMPT_LENS]
        routes = [route(model, p) for p in prompts]
        rmargin = None
        if routes[0]:
            rmargin = min(float(r[1].min()) for rs in routes for r in rs.values())
            n_exp = spec["text"]["num_local_experts"]
            covered = all(len(set(torch.cat([rs[layer][0] for rs in routes]).tolist())) == n_exp for layer in routes[0])
            if rmargin < ROUTING_MARGIN or not covered:
                continue
        logits = [run(model, p) for p in prompts]
        rel = min(float((mf.margins(l)[0] / mf.margins(l)[1]).min()) for l in logits)
        toks, gworst = greedy(model, prompts[0], mf.GREEDY_TOKENS)
        if rel > 2e-3 and gworst > 2e-3:
            break
    else:
        raise RuntimeError(f"{name}: no seed gave large enough margins")
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
        keys = sorted(f.keys())
        shapes = {k: list(f.get_slice(k).get_shape()) for k in keys}
    if not spec["text"].get("tie_word_embeddings", False) and not any(k.endswith("lm_head.weight") for k in keys):
        raise RuntimeError(f"{name}: untied fixture saved without an lm_head weight: {keys}")
    ref = dict(prompts=prompts, greedy=toks, seed=seed, min_rel_margin=rel, greedy_min_rel_margin=gworst,
               storage="float32", model_class=type(model).__name__,
               transformers=transformers.__version__, torch=torch.__version__)
    if routes[0]:
        moe_layers = sorted(routes[0])
        ref.update(moe_layers=moe_layers, min_routing_margin=rmargin,
                   routing=[[[[int(e)] for e in rs[layer][0].tolist()] for layer in moe_layers] for rs in routes])
    try:
        ref["hf_bf16"] = hf_bf16(auto, d, prompts[0], logits[0].numpy())
    except Exception as e:  # recorded, not fatal: the f32 reference stands on its own
        print(f"  {name}: transformers' bf16 forward failed: {e!r}", flush=True)
    with open(os.path.join(d, "reference.json"), "w") as f:
        json.dump(ref, f, indent=1)
    size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
    print(f"{name}: seed {seed} margin {rel:.4f} greedy {gworst:.4f} routing {rmargin} size {size} bytes "
          f"hf_bf16 {ref.get('hf_bf16')}", flush=True)
    # The key layout (prefixes and the first two text layers), for the loader's sanitize.
    prefixes = sorted({re.sub(r"layers\.\d+\..*", "layers.*", k) for k in keys})
    print("  prefixes:", prefixes, flush=True)
    print("  layer keys:", {k: shapes[k] for k in keys if re.search(r"layers\.[01]\.", k) and "vision" not in k},
          flush=True)


if __name__ == "__main__":
    out = sys.argv[1]
    names = sys.argv[2:] or list(FIXTURES)
    failed = []
    for n in names:
        try:
            make(n, out)
        except Exception:  # one broken fixture must not stop the others
            import traceback
            traceback.print_exc()
            failed.append(n)
    if failed:
        raise SystemExit(f"failed: {failed}")
