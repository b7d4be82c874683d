#!/usr/bin/env python3
"""Test vectors for loom's loader of Hugging Face quantization_config formats (loom/models/hf_quant.h).

Independent of loom: numpy only (Debian /usr/bin/python3), with a minimal safetensors writer. Each format is
packed here from its reference implementation's description (AutoAWQ WQLinear_GEMM.from_linear, AutoGPTQ
QuantLinear.pack, compressed_tensors pack_to_int32, DeepSeek-V3's weight_dequant, the OCP MX spec), and the
expected matrix is the format's own dequantization formula evaluated in float32 numpy.

Writes tests/fixtures/hf_quant/ (or OUT_DIR):
  <case>.safetensors  the tensors of one layer "layer" (prefix) as the checkpoint stores them
  <case>.json         {"quantization_config": {...}, "expect": "affine BITS GROUP" | "float" | "mxfp4"}
  <case>.npy          the expected dequantized weight, float32 [out, in] ([E, out, in] for mxfp4)
  llama_awq/, llama_gptq/, llama_twin/   tests/fixtures/llama's config with its linear weights quantized
      (4-bit, group 32, asymmetric) and stored as AutoAWQ and as GPTQ v1; the twin holds the same weights
      dequantized in float32 (embedding and head stored float16 in all three), so all three must give the
      same logits.

Usage: /usr/bin/python3 tools/refgen/make_hf_quant_vectors.py [OUT_DIR]
"""
import json
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# ---------------------------------------------------------------------------------------------- safetensors

ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.int32): "I32",
             np.dtype(np.int64): "I64", np.dtype(np.uint8): "U8", np.dtype(np.int8): "I8"}


class Tagged:
    """A raw array stored under an explicit safetensors dtype (BF16 as uint16 bits, F8_E4M3 as uint8 bytes)."""

    def __init__(self, arr, dtype):
        self.arr, self.dtype = np.ascontiguousarray(arr), dtype


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        if isinstance(t, Tagged):
            arr, dt = t.arr, t.dtype
        else:
            arr = np.ascontiguousarray(t)
            dt = ST_DTYPES[arr.dtype]
        data = arr.tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    np_dt = {"F32": np.float32, "F16": np.float16, "I32": np.int32, "I64": np.int64}
    out = {}
    for k, v in header.items():
        if k == "__metadata__":
            continue
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(data[b:e], dtype=np_dt[v["dtype"]]).reshape(v["shape"]).copy()
    return out


def bf16_bits(x):
    """float32 -> bfloat16 bits, round to nearest even (values here are finite)."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def e4m3_value(b):
    """float8_e4m3fn byte -> float32 (sign, 4-bit exponent bias 7, 3-bit mantissa; exponent 0 is subnormal
    m * 2^-9). 0x7F/0xFF (NaN) are never generated here."""
    b = b.astype(np.int64)
    sign = np.where(b & 0x80, -1.0, 1.0)
    e, m = (b >> 3) & 0xF, b & 7
    mag = np.where(e == 0, m * 2.0 ** -9, (1 + m / 8.0) * 2.0 ** (e - 7))
    return (sign * mag).astype(np.float32)


def random_e4m3(rng, shape):
    b = rng.integers(0, 256, size=shape, dtype=np.uint8)
    return np.where((b & 0x7F) == 0x7F, b ^ 0x01, b).astype(np.uint8)  # 0x7F -> 0x7E, 0xFF -> 0xFE


def f16_scales(rng, shape, lo=0.004, hi=0.05):
    return rng.uniform(lo, hi, size=shape).astype(np.float16)


# ------------------------------------------------------------------------------------------------ packers

def pack_lsb(codes, bits, axis):
    """Packs unsigned codes along `axis` into int32 words, 32/bits per word, element j of a word at bits
    j*bits (LSB first): AutoGPTQ's qweight/qzeros packing and compressed_tensors pack_to_int32 for bits 2/4/8."""
    codes = np.moveaxis(codes.astype(np.uint64), axis, -1)
    pf = 32 // bits
    assert codes.shape[-1] % pf == 0
    c = codes.reshape(*codes.shape[:-1], codes.shape[-1] // pf, pf)
    words = np.zeros(c.shape[:-1], np.uint64)
    for j in range(pf):
        words |= c[..., j] << np.uint64(j * bits)
    return np.moveaxis(words.astype(np.uint32).view(np.int32), -1, axis)


# AutoAWQ (awq/modules/linear/gemm.py, WQLinear_GEMM.from_linear): for word column c, nibble n (bits 4n) holds
# output column 8c + AWQ_ORDER[n].
AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]


def pack_awq(codes_in_out):
    """codes [rows, out] (rows = inputs for qweight, groups for qzeros) -> int32 [rows, out/8]."""
    rows, out = codes_in_out.shape
    words = np.zeros((rows, out // 8), np.uint64)
    for c in range(out // 8):
        for n in range(8):
            words[:, c] |= codes_in_out[:, 8 * c + AWQ_ORDER[n]].astype(np.uint64) << np.uint64(4 * n)
    return words.astype(np.uint32).view(np.int32)


def asym_quantize(w, group, bits):
    """w [out, in] f32 -> (codes [out, in], scales f16 [out, ng], zeros [out, ng]) with zeros in 1..2^bits-1
    (GPTQ v1 cannot store a zero of 0, since it writes zero - 1)."""
    out, n = w.shape
    g = w.reshape(out, n // group, group)
    lo, hi = g.min(-1), g.max(-1)
    qmax = 2 ** bits - 1
    s = np.maximum((hi - lo) / qmax, 1e-4).astype(np.float16)
    z = np.clip(np.round(-lo / s.astype(np.float32)), 1, qmax).astype(np.int64)
    q = np.clip(np.round(g / s.astype(np.float32)[..., None]) + z[..., None], 0, qmax).astype(np.int64)
    return q.reshape(out, n), s, z


def dequant(q, s, z, gidx):
    """(q - z[g]) * s[g] in float32 with g = gidx[i]: every format's integer dequantization."""
    s32 = s.astype(np.float32)[:, gidx]
    return ((q - z[:, gidx]).astype(np.float32) * s32).astype(np.float32)


def awq_tensors(q, s, z):
    """AutoAWQ GEMM layout: qweight [in, out/8], qzeros [in/g, out/8], scales [in/g, out] (zeros as is)."""
    return {"qweight": pack_awq(q.T), "qzeros": pack_awq(z.T), "scales": np.ascontiguousarray(s.T)}


def gptq_tensors(q, s, z, bits, gidx, v1=True):
    """AutoGPTQ layout: qweight [in*bits/32, out] packed along in, qzeros [groups, out*bits/32] packed along out
    holding zero - 1 (v1; v2 holds the zero), scales [groups, out], g_idx [in]."""
    zs = z - 1 if v1 else z
    assert zs.min() >= 0
    return {"qweight": pack_lsb(q.T, bits, 0), "qzeros": pack_lsb(zs.T, bits, 1),
            "scales": np.ascontiguousarray(s.T), "g_idx": gidx.astype(np.int32)}


# -------------------------------------------------------------------------------------------------- cases

def layer(tensors, prefix="layer"):
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def write_case(out, name, tensors, qconfig, expect, expected):
    write_safetensors(os.path.join(out, name + ".safetensors"), tensors)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump({"quantization_config": qconfig, "expect": expect}, f, indent=1)
    np.save(os.path.join(out, name + ".npy"), expected.astype(np.float32))


def cases(out, rng):
    # AutoAWQ GEMM, 4-bit, group 64: random codes/zeros over the whole 0..15 range.
    o, n, g = 16, 128, 64
    q = rng.integers(0, 16, (o, n)); z = rng.integers(0, 16, (o, n // g)); s = f16_scales(rng, (o, n // g))
    write_case(out, "awq_g64", layer(awq_tensors(q, s, z)),
               dict(quant_method="awq", bits=4, group_size=64, zero_point=True, version="gemm"), "affine 4 64",
               dequant(q, s, z, np.arange(n) // g))

    # GPTQ v1, 4-bit, group 32, trivial g_idx (desc_act false): zeros 1..15 (stored as zero - 1).
    o, n, g = 16, 64, 32
    q = rng.integers(0, 16, (o, n)); z = rng.integers(1, 16, (o, n // g)); s = f16_scales(rng, (o, n // g))
    gi = np.arange(n) // g
    write_case(out, "gptq4_g32", layer(gptq_tensors(q, s, z, 4, gi)),
               dict(quant_method="gptq", bits=4, group_size=32, desc_act=False, sym=False), "affine 4 32",
               dequant(q, s, z, gi))

    # GPTQ v1 act-order (desc_act): each input's group from a random permutation of the trivial map, so the
    # groups are not contiguous -> dequantized at load.
    gi = rng.permutation(np.arange(n) // g)
    write_case(out, "gptq4_actorder", layer(gptq_tensors(q, s, z, 4, gi)),
               dict(quant_method="gptq", bits=4, group_size=32, desc_act=True, sym=False), "float",
               dequant(q, s, z, gi))

    # GPTQ v1, 8-bit, per channel (group_size -1): one group of 256 inputs -> MLX groups of 128, scale repeated.
    o, n = 8, 256
    q = rng.integers(0, 256, (o, n)); z = rng.integers(1, 256, (o, 1)); s = f16_scales(rng, (o, 1), 1e-4, 2e-3)
    gi = np.zeros(n, np.int64)
    write_case(out, "gptq8_channel", layer(gptq_tensors(q, s, z, 8, gi)),
               dict(quant_method="gptq", bits=8, group_size=-1, desc_act=False, sym=False), "affine 8 128",
               dequant(q, s, z, gi))

    # GPTQModel v2 checkpoint (zeros stored as is, 0 allowed), 2-bit, group 128, no g_idx tensor.
    o, n, g = 16, 128, 128
    q = rng.integers(0, 4, (o, n)); z = rng.integers(0, 4, (o, 1)); s = f16_scales(rng, (o, 1), 0.05, 0.3)
    t = gptq_tensors(q, s, z, 2, np.zeros(n), v1=False)
    del t["g_idx"]
    write_case(out, "gptq2_v2", layer(t),
               dict(quant_method="gptq", bits=2, group_size=128, desc_act=False, sym=False, checkpoint_format="gptq_v2"),
               "affine 2 128", dequant(q, s, z, np.arange(n) // g))

    # compressed-tensors pack-quantized, symmetric int4, group 32, bf16 scales: signed q in [-8, 7] stored as
    # q + 8 in an LSB-first stream along in (pack_to_int32); no zero point (symmetric) -> w = q * s.
    o, n, g = 8, 64, 32
    qs = rng.integers(-8, 8, (o, n)); sb = bf16_bits(rng.uniform(0.01, 0.1, (o, n // g)))
    gi = np.arange(n) // g
    ct_cfg = lambda strategy, group, sym, actorder=None: dict(  # noqa: E731
        quant_method="compressed-tensors", format="pack-quantized",
        config_groups=dict(group_0=dict(targets=["Linear"], weights=dict(num_bits=4, type="int", symmetric=sym,
                                                                         strategy=strategy, group_size=group,
                                                                         actorder=actorder))),
        ignore=["lm_head"])
    write_case(out, "ct_int4_sym_g32",
               layer({"weight_packed": pack_lsb(qs + 8, 4, 1), "weight_scale": Tagged(sb, "BF16"),
                      "weight_shape": np.array([o, n], np.int64)}),
               ct_cfg("group", 32, True), "affine 4 32", (qs * bf16_value(sb)[:, gi]).astype(np.float32))

    # compressed-tensors asymmetric int4, group 64: zero points signed in [-8, 7], stored + 8 and packed along
    # out (packed_dim=0): [out*4/32, groups]. w = (q - zp) * s.
    o, n, g = 16, 128, 64
    qs = rng.integers(-8, 8, (o, n)); zp = rng.integers(-8, 8, (o, n // g)); s = f16_scales(rng, (o, n // g))
    gi = np.arange(n) // g
    write_case(out, "ct_int4_asym_g64",
               layer({"weight_packed": pack_lsb(qs + 8, 4, 1), "weight_scale": s,
                      "weight_zero_point": pack_lsb(zp + 8, 4, 0), "weight_shape": np.array([o, n], np.int64)}),
               ct_cfg("group", 64, False), "affine 4 64", dequant(qs, s, zp, gi))

    # compressed-tensors group act-order: weight_g_idx non-trivial -> dequantized.
    gi = rng.permutation(np.arange(n) // g).astype(np.int32)
    write_case(out, "ct_int4_actorder",
               layer({"weight_packed": pack_lsb(qs + 8, 4, 1), "weight_scale": s,
                      "weight_zero_point": pack_lsb(zp + 8, 4, 0), "weight_shape": np.array([o, n], np.int64),
                      "weight_g_idx": gi}),
               ct_cfg("group", 64, False, "group"), "float", dequant(qs, s, zp, gi))

    # compressed-tensors naive-quantized int8, per channel: weight int8 [out, in] + weight_scale [out, 1];
    # kept as MLX affine 8-bit (codes q + 128) with group 64 (in = 64).
    o, n = 8, 64
    q8 = rng.integers(-128, 128, (o, n)).astype(np.int8); sb = bf16_bits(rng.uniform(1e-3, 1e-2, (o, 1)))
    cfg = ct_cfg("channel", None, True)
    cfg["format"] = "naive-quantized"
    cfg["config_groups"]["group_0"]["weights"]["num_bits"] = 8
    write_case(out, "ct_int8_channel", layer({"weight": q8, "weight_scale": Tagged(sb, "BF16")}), cfg, "affine 8 64",
               (q8.astype(np.float32) * bf16_value(sb)).astype(np.float32))

    # compressed-tensors float-quantized FP8 per channel (f32 scales [out, 1], plus an input_scale that is
    # dropped) and per tensor: w = e4m3(weight) * scale, one f32 product.
    o, n = 8, 48
    w8 = random_e4m3(rng, (o, n)); sc = rng.uniform(0.01, 2.0, (o, 1)).astype(np.float32)
    cfg = dict(quant_method="compressed-tensors", format="float-quantized",
               config_groups=dict(group_0=dict(targets=["Linear"], weights=dict(num_bits=8, type="float",
                                                                                strategy="channel", symmetric=True))))
    write_case(out, "ct_fp8_channel",
               layer({"weight": Tagged(w8, "F8_E4M3"), "weight_scale": sc, "input_scale": np.ones(1, np.float32)}),
               cfg, "float", (e4m3_value(w8) * sc).astype(np.float32))
    sc1 = np.array([0.37109375], np.float32)
    write_case(out, "ct_fp8_tensor", layer({"weight": Tagged(w8, "F8_E4M3"), "weight_scale": sc1}), cfg, "float",
               (e4m3_value(w8) * sc1[0]).astype(np.float32))

    # quant_method fp8 (DeepSeek-V3 / Qwen3-FP8): weight float8_e4m3fn [out, in] and weight_scale_inv f32
    # [ceil(out/bh), ceil(in/bw)]; block [16, 32] over [40, 72] leaves partial edge blocks (8 rows, 8 cols).
    o, n, bh, bw = 40, 72, 16, 32
    w8 = random_e4m3(rng, (o, n)); si = rng.uniform(1e-3, 1e-1, (-(-o // bh), -(-n // bw))).astype(np.float32)
    full = np.repeat(np.repeat(si, bh, 0), bw, 1)[:o, :n]
    write_case(out, "fp8_block", layer({"weight": Tagged(w8, "F8_E4M3"), "weight_scale_inv": si}),
               dict(quant_method="fp8", activation_scheme="dynamic", fmt="e4m3", weight_block_size=[bh, bw]), "float",
               (e4m3_value(w8) * full).astype(np.float32))
    # Mistral-style per-tensor scale (a 0-d weight_scale_inv, plus an activation_scale that is dropped).
    si0 = np.array(0.0625, np.float32)
    write_case(out, "fp8_tensor",
               layer({"weight": Tagged(w8[:8, :32], "F8_E4M3"), "weight_scale_inv": si0,
                      "activation_scale": np.array(1.0, np.float32)}),
               dict(quant_method="fp8", activation_scheme="static"), "float",
               (e4m3_value(w8[:8, :32]) * si0).astype(np.float32))

    # gpt-oss mxfp4: blocks uint8 [E, out, G, 16] (byte j: element 2j in the low nibble, 2j+1 in the high one),
    # scales uint8 [E, out, G] as E8M0 (2^(s-127)); w = E2M1[code] * 2^(s-127) (OCP MX v1.0).
    e2m1 = np.array([0, .5, 1, 1.5, 2, 3, 4, 6, -0., -.5, -1, -1.5, -2, -3, -4, -6], np.float32)
    E, o, G = 2, 4, 2
    blocks = rng.integers(0, 256, (E, o, G, 16), dtype=np.uint8)
    scales = rng.integers(127 - 20, 127 + 20, (E, o, G), dtype=np.uint8)
    codes = np.stack([blocks & 0xF, blocks >> 4], -1).reshape(E, o, G, 32)
    w = e2m1[codes] * np.exp2(scales.astype(np.float32) - 127)[..., None]
    name = "layer.experts.down_proj"
    write_safetensors(os.path.join(out, "mxfp4.safetensors"), {name + "_blocks": blocks, name + "_scales": scales})
    with open(os.path.join(out, "mxfp4.json"), "w") as f:
        json.dump({"quantization_config": dict(quant_method="mxfp4", modules_to_not_convert=["lm_head"]),
                   "expect": "mxfp4", "prefix": name}, f, indent=1)
    np.save(os.path.join(out, "mxfp4.npy"), w.reshape(E, o, G * 32).astype(np.float32))


def llama_models(out, rng):
    src = os.path.join(ROOT, "tests", "fixtures", "llama")
    cfg = json.load(open(os.path.join(src, "config.json")))
    weights = read_safetensors(os.path.join(src, "model.safetensors"))
    bits, group = 4, 32
    awq, gptq, twin = {}, {}, {}
    for k, v in sorted(weights.items()):
        if k.endswith("proj.weight"):  # q/k/v/o and gate/up/down: quantized
            p = k[: -len(".weight")]
            q, s, z = asym_quantize(v.astype(np.float32), group, bits)
            gi = np.arange(v.shape[1]) // group
            awq.update(layer(awq_tensors(q, s, z), p))
            gptq.update(layer(gptq_tensors(q, s, z, bits, gi), p))
            twin[k] = dequant(q, s, z, gi)
        elif v.ndim == 2:  # embedding and head: float16 everywhere
            awq[k] = gptq[k] = twin[k] = v.astype(np.float16)
        else:  # norms: as stored (f32)
            awq[k] = gptq[k] = twin[k] = v
    variants = {
        "llama_awq": (awq, dict(quant_method="awq", bits=4, group_size=group, zero_point=True, version="gemm")),
        "llama_gptq": (gptq, dict(quant_method="gptq", bits=4, group_size=group, desc_act=False, sym=False,
                                  checkpoint_format="gptq")),
        "llama_twin": (twin, None),
    }
    for name, (tensors, qc) in variants.items():
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        c = dict(cfg)
        if qc:
            c["quantization_config"] = qc
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=1)
        write_safetensors(os.path.join(d, "model.safetensors"), tensors)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "tests", "fixtures", "hf_quant")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(6)
    cases(out, rng)
    llama_models(out, rng)
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
