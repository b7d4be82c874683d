#!/usr/bin/env python3
"""transformers' own dequantization of gpt-oss style mxfp4 expert weights, the oracle for loom's repack of
`*_blocks` / `*_scales` into MLX mxfp4 (tests/quant/hf_quant_test.cpp).

gpt-oss checkpoints (quantization_config.quant_method == "mxfp4") store each expert projection as
  <name>_blocks  uint8 [E, out, G, 16]   two E2M1 codes per byte, element 2j in the low nibble of byte j
  <name>_scales  uint8 [E, out, G]       E8M0 exponents, value 2^(s - 127), one per 32 inputs
transformers dequantizes them with transformers.integrations.mxfp4.convert_moe_packed_tensors, which returns
the [E, in, out] layout of its GptOss experts (it transposes the last two axes). This script calls that
function (the oracle: loom's test never sees how it decodes) and transposes back, so expected.npy is
[E, out, in] float32, the layout of an MLX quantized weight's dequantization.

The codes are random over all 16 E2M1 values (both zeros included); the exponents span 127 +/- 24 (all
finite in f32 after the product) plus a few fixed entries at exactly 127, so the scale bias is exercised.

Writes OUT_DIR/hf_mxfp4/{weights.safetensors, expected.npy, info.json}; no reference.json (so
bf16_baseline.py leaves the folder alone).

Usage: python3 make_mxfp4_oracle.py OUT_DIR
"""
import inspect
import json
import os
import sys

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

E, OUT, G = 2, 6, 3  # 2 experts, 6 output rows, 3 groups of 32 inputs (in = 96); OUT != in keeps axes unambiguous
NAME = "model.layers.0.mlp.experts.down_proj"


def main(out_root):
    rng = np.random.default_rng(20260822)
    blocks = rng.integers(0, 256, size=(E, OUT, G, 16), dtype=np.uint8)
    scales = rng.integers(127 - 24, 127 + 25, size=(E, OUT, G), dtype=np.uint8)
    scales[0, 0, :] = 127  # scale exactly 1: the codes themselves
    scales[1, OUT - 1, 0] = 127 - 24
    blocks[0, 0, 0, :] = np.arange(16, dtype=np.uint8) * 17  # every code in both nibbles: 0x00, 0x11, ... 0xff

    kwargs = {}
    if "dtype" in inspect.signature(convert_moe_packed_tensors).parameters:
        kwargs["dtype"] = torch.float32
    deq = convert_moe_packed_tensors(torch.from_numpy(blocks.copy()), torch.from_numpy(scales.copy()), **kwargs)
    deq = deq.float().cpu().numpy()
    if deq.shape == (E, G * 32, OUT):  # transformers' [E, in, out] layout
        deq = np.ascontiguousarray(deq.transpose(0, 2, 1))
    assert deq.shape == (E, OUT, G * 32), deq.shape
    assert np.isfinite(deq).all()

    out_dir = os.path.join(out_root, "hf_mxfp4")
    os.makedirs(out_dir, exist_ok=True)
    save_file({NAME + "_blocks": torch.from_numpy(blocks), NAME + "_scales": torch.from_numpy(scales)},
              os.path.join(out_dir, "weights.safetensors"))
    np.save(os.path.join(out_dir, "expected.npy"), deq.astype(np.float32))
    info = dict(tensor=NAME, blocks_shape=list(blocks.shape), expected_shape=list(deq.shape),
                expected_layout="[E, out, in] float32 (transformers' [E, in, out] output transposed back)",
                oracle="transformers.integrations.mxfp4.convert_moe_packed_tensors", oracle_kwargs=list(kwargs),
                versions=dict(torch=torch.__version__, transformers=transformers.__version__))
    with open(os.path.join(out_dir, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    print(f"hf_mxfp4: {deq.shape} max|w|={np.abs(deq).max():.4g} transformers {transformers.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
