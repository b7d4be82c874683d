#!/usr/bin/env python3
"""How far HF transformers itself lands from its f32 reference when it computes in bfloat16 on the
fixtures: the yardstick for DESIGN.md's bf16 row. Records the numbers in each reference.json (hf_bf16).
Usage: python3 bf16_baseline.py tests/fixtures"""
import json
import os
import sys

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

root = sys.argv[1]
for name in sorted(os.listdir(root)):
    d = os.path.join(root, name)
    if not os.path.exists(os.path.join(d, "reference.json")):
        continue
    ref = json.load(open(os.path.join(d, "reference.json")))
    want = np.load(os.path.join(d, "logits_0.npy"))
    for dev in ["cpu", "cuda"]:
        try:
            m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager")
        except ValueError:  # vision-language checkpoints (mistral3, ...): the ConditionalGeneration class
            m = AutoModelForImageTextToText.from_pretrained(d, dtype=torch.bfloat16, attn_implementation="eager")
        m = m.to(dev).eval()
        with torch.no_grad():
            got = m(torch.tensor([ref["prompts"][0]], device=dev)).logits[0].float().cpu().numpy()
        diff = np.abs(got - want)
        if dev == "cpu":
            ref["hf_bf16"] = {"max_rel": round(float(diff.max() / np.abs(want).max()), 4),
                              "mean_rel": round(float(diff.sum() / np.abs(want).sum()), 4),
                              "made_by": "tools/refgen/bf16_baseline.py"}
            json.dump(ref, open(os.path.join(d, "reference.json"), "w"), indent=1)
        print(f"{name:12s} {dev:4s} max_rel {diff.max() / np.abs(want).max():.4f} "
              f"mean_rel {diff.sum() / np.abs(want).sum():.4f}", flush=True)
