#!/usr/bin/env python3
"""PyTorch eager baseline for `loom bench`: transformers' model for a config.json, random weights
initialised on the GPU (no checkpoint is read), bf16, no torch.compile, with llama-bench's meanings:

  ppN  at depth D: time of one forward over N prompt tokens after D tokens are in the KV cache
  tgN  at depth D: N single-token decode steps (greedy argmax feeding the next step) after D tokens

Prints the same table as `loom bench`, then peak GPU memory (torch.cuda.max_memory_allocated over
the whole run, weights included). Quantization keys of a loom quantized folder are ignored (the model
is always bf16 here).

  python3 bench/torch_bench.py --model DIR -p 512 -n 128 -d 0,4096 -r 3
"""

import argparse
import json
import os
import sys
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def make_model(model_dir, attn, dtype):
    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    for k in ("quantization", "quantization_config", "torch_dtype", "dtype"):
        cfg.pop(k, None)
    model_type = cfg.pop("model_type")
    if int(transformers.__version__.split(".")[0]) >= 5 and "rope_parameters" not in cfg:
        # transformers 5 configs take rope_parameters (rope_type + rope_theta + scaling keys)
        rope = dict(cfg.pop("rope_scaling", None) or {"rope_type": "default"})
        rope.setdefault("rope_type", rope.pop("type", "default"))
        rope["rope_theta"] = cfg.pop("rope_theta", 10000.0)
        cfg["rope_parameters"] = rope
    config = transformers.AutoConfig.for_model(model_type, **cfg)
    with torch.device("cuda"):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn)
        except TypeError:  # transformers < 4.56 names it torch_dtype
            model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype, attn_implementation=attn)
    model = model.to(device="cuda", dtype=dtype).eval()
    return model, model_type


def forward(model, ids, cache, last_only):
    kw = {"use_cache": True}
    if cache is not None:
        kw["past_key_values"] = cache
    if last_only:
        kw["logits_to_keep"] = 1
    out = model(ids, **kw)
    return out.logits, out.past_key_values


def sync():
    torch.cuda.synchronize()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="folder with config.json (weights are not read)")
    ap.add_argument("-p", "--n-prompt", type=int, default=512)
    ap.add_argument("-n", "--n-gen", type=int, default=128)
    ap.add_argument("-d", "--depth", default="0", help="comma-separated depths, e.g. 0,4096")
    ap.add_argument("-r", "--repetitions", type=int, default=3, help="best of this many runs is reported")
    ap.add_argument("--attn", default="sdpa", help="attn_implementation: sdpa (default), eager, ...")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_bench: no CUDA device")
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    model, model_type = make_model(args.model, args.attn, dtype)
    sync()
    n_params = sum(p.numel() for p in model.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    vocab = model.config.vocab_size
    print(f"model: {model_type} (transformers {transformers.__version__}, torch {torch.__version__}), "
          f"{n_params / 1e9:.2f} B params, {n_bytes / 1e9:.2f} GB weights, device {torch.cuda.get_device_name()}, "
          f"compute {args.dtype}, attn {args.attn}, eager (init {time.time() - t0:.1f}s)", flush=True)
    print(f"| {'test':<8} | {'depth':<12} | {'t/s':>10} |", flush=True)
    gen = torch.Generator(device="cuda").manual_seed(1)

    def tokens(n):
        return torch.randint(0, vocab, (1, n), device="cuda", generator=gen)

    def context(depth):
        if depth == 0:
            return None
        _, cache = forward(model, tokens(depth), None, True)
        return cache

    with torch.inference_mode():
        forward(model, tokens(16), None, True)  # warm-up: cuBLAS handles, kernels
        sync()
        for depth in [int(x) for x in args.depth.split(",") if x != ""]:
            if args.n_prompt > 0:
                best = 0.0
                for _ in range(args.repetitions):
                    cache = context(depth)
                    ids = tokens(args.n_prompt)
                    sync()
                    t = time.perf_counter()
                    forward(model, ids, cache, True)
                    sync()
                    best = max(best, args.n_prompt / (time.perf_counter() - t))
                    del cache
                print(f"| pp{args.n_prompt:<6} | {depth:<12} | {best:10.2f} |", flush=True)
            if args.n_gen > 0:
                best = 0.0
                for _ in range(args.repetitions):
                    cache = context(depth)
                    tok = tokens(1)
                    logits, cache = forward(model, tok, cache, True)  # warm-up step
                    sync()
                    t = time.perf_counter()
                    for _ in range(args.n_gen):
                        logits, cache = forward(model, tok, cache, True)
                        tok = logits[:, -1].argmax(-1, keepdim=True)
                    sync()
                    best = max(best, args.n_gen / (time.perf_counter() - t))
                    del cache
                print(f"| tg{args.n_gen:<6} | {depth:<12} | {best:10.2f} |", flush=True)
    print(f"peak memory: {torch.cuda.max_memory_allocated() / 1e9:.3f} GB allocated on cuda "
          f"(torch.cuda.max_memory_allocated), {torch.cuda.max_memory_reserved() / 1e9:.3f} GB reserved", flush=True)


if __name__ == "__main__":
    main()
