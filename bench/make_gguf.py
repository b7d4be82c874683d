#!/usr/bin/env python3
"""GGUF files for llama.cpp benchmarks of the models `loom random-model` writes.

Two modes:

  convert  a loom random-model folder (dense, any float dtype) -> one GGUF with the same weights in
           F32, F16 or BF16, tensor names and metadata as llama.cpp's convert_hf_to_gguf.py writes them
           (Llama's q/k rows permuted to llama.cpp's rope layout, llama3 `rope_freqs`, norms and the MoE
           router in F32). `llama-quantize` then makes Q8_0 / Q4_0 from it.
  random   a config.json -> a GGUF written directly at its target type (Q4_0, Q8_0, BF16, F16, F32)
           from random numbers, with no float intermediate: what `llama-quantize` would produce for
           that type (llama-quant.cpp's default choices: the output matrix, or the tied embedding, in
           Q6_K for Q4_0; norms, rope_freqs and the router in F32). For models too large to convert.

Architectures: `llama` (llama, mistral-shaped), `qwen3` and `qwen3_moe`. The random checkpoints have no
tokenizer, so the vocabulary is synthesized: `--vocab none` (default) writes tokenizer model "none"
with `<arch>.vocab_size`, for which llama.cpp creates that many placeholder tokens; llama-bench only
draws random token ids below the vocab size. `--vocab spm` writes a SentencePiece-style list instead
(<unk>, <s>, </s>, 256 byte tokens, filler pieces).

Needs numpy and llama.cpp's gguf-py (`--gguf-py DIR`, the `gguf-py` folder of a llama.cpp tree).

  python3 bench/make_gguf.py --gguf-py ../llama.cpp/gguf-py convert --model M --out m-bf16.gguf --outtype bf16
  python3 bench/make_gguf.py --gguf-py ../llama.cpp/gguf-py random --config M/config.json --out m-q4_0.gguf --outtype q4_0
"""

import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np

gguf = None  # llama.cpp's gguf-py, imported from --gguf-py in main()


# ----------------------------------------------------------------------------------------------
# config.json -> architecture facts


class Arch:
    """The facts of a config.json that the GGUF metadata and tensor list need."""

    def __init__(self, cfg):
        mt = cfg["model_type"]
        names = {"llama": "llama", "mistral": "llama", "qwen3": "qwen3", "qwen3_moe": "qwen3moe"}
        if mt not in names:
            raise SystemExit(f"make_gguf: model_type '{mt}' is not supported ({', '.join(names)})")
        self.name = names[mt]
        self.cfg = cfg
        self.model_type = mt
        self.hidden = cfg["hidden_size"]
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.kv_heads = cfg.get("num_key_value_heads", self.heads)
        self.head_dim = cfg.get("head_dim") or self.hidden // self.heads
        self.ff = cfg["intermediate_size"]
        self.vocab = cfg["vocab_size"]
        self.tied = bool(cfg.get("tie_word_embeddings", False))
        self.experts = cfg.get("num_experts", cfg.get("num_local_experts", 0)) if mt == "qwen3_moe" else 0
        self.experts_used = cfg.get("num_experts_per_tok", 0)
        self.moe_ff = cfg.get("moe_intermediate_size", 0)
        if mt == "qwen3_moe":
            if cfg.get("mlp_only_layers") or cfg.get("decoder_sparse_step", 1) != 1:
                raise SystemExit("make_gguf: qwen3_moe with dense layers is not supported (llama.cpp's qwen3moe has none)")
            if not cfg.get("norm_topk_prob", False):
                raise SystemExit("make_gguf: llama.cpp's qwen3moe always renormalises the top-k weights; "
                                 "norm_topk_prob must be true")

    def rope_scaling(self):
        rs = self.cfg.get("rope_scaling") or self.cfg.get("rope_parameters") or {}
        return rs if rs.get("rope_type", rs.get("type")) not in (None, "default") else {}


def add_metadata(w, a, file_type, vocab_mode):
    """Writes the keys llama.cpp's loader reads for `a`, as convert_hf_to_gguf.py names them."""
    c = a.cfg
    w.add_name(f"loom random {a.model_type}")
    w.add_block_count(a.layers)
    w.add_context_length(c.get("max_position_embeddings", 4096))
    w.add_embedding_length(a.hidden)
    w.add_feed_forward_length(a.ff)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_freq_base(float(c.get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(float(c.get("rms_norm_eps", 1e-6)))
    w.add_key_length(a.head_dim)
    w.add_value_length(a.head_dim)
    w.add_rope_dimension_count(a.head_dim)
    w.add_vocab_size(a.vocab)
    rs = a.rope_scaling()
    rtype = rs.get("rope_type", rs.get("type"))
    if rtype == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rs["factor"]))
    elif rtype not in (None, "llama3"):
        raise SystemExit(f"make_gguf: rope_type '{rtype}' is not supported here")
    if a.experts:
        w.add_expert_count(a.experts)
        w.add_expert_used_count(a.experts_used)
        w.add_expert_feed_forward_length(a.moe_ff)
    w.add_file_type(file_type)
    if file_type not in (gguf.LlamaFileType.ALL_F32, gguf.LlamaFileType.MOSTLY_F16, gguf.LlamaFileType.MOSTLY_BF16):
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_vocab(w, a.vocab, vocab_mode)


def add_vocab(w, n, mode):
    if mode == "none":
        w.add_tokenizer_model("none")
        return
    # SentencePiece-shaped: ids 0-2 control tokens, then the 256 byte-fallback tokens, then fillers.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL] + [gguf.TokenType.BYTE] * 256
    if n < len(tokens) + 1:
        raise SystemExit(f"make_gguf: vocab size {n} is too small for --vocab spm")
    tokens += [f"\u2581t{i}" for i in range(n - len(tokens))]
    types += [gguf.TokenType.NORMAL] * (n - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(n)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)


def llama3_rope_factors(a):
    """llama.cpp's `rope_freqs` for rope_type llama3: per frequency, the divisor of the base
    frequency that transformers' _compute_llama3_parameters applies (1 above the high-frequency
    wavelength bound, `factor` below the low one, a smooth blend between)."""
    rs = a.rope_scaling()
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return None
    base = float(a.cfg.get("rope_theta", 10000.0))
    dim = a.head_dim
    factor = rs.get("factor", 8.0)
    lo, hi = rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    out = []
    for i in range(0, dim, 2):
        freq = 1.0 / base ** (i / dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old / hi:
            out.append(1.0)
        elif wavelen > old / lo:
            out.append(factor)
        else:
            s = (old / wavelen - lo) / (hi - lo)
            out.append(1.0 / ((1 - s) / factor + s))
    return np.asarray(out, dtype=np.float32)


# ----------------------------------------------------------------------------------------------
# The tensor list: GGUF name, numpy-order shape, loom checkpoint name, role


def tensor_list(a):
    """Yields (gguf_name, shape, loom_name, role); shapes are in numpy (row-major) order, as the
    checkpoint stores them. role: 'norm' | 'router' | 'embed' | 'output' | 'q' | 'k' | 'matrix'."""
    h, hd = a.hidden, a.head_dim
    yield "token_embd.weight", (a.vocab, h), "model.embed_tokens.weight", "embed"
    for i in range(a.layers):
        p, b = f"model.layers.{i}.", f"blk.{i}."
        yield b + "attn_norm.weight", (h,), p + "input_layernorm.weight", "norm"
        yield b + "attn_q.weight", (a.heads * hd, h), p + "self_attn.q_proj.weight", "q"
        yield b + "attn_k.weight", (a.kv_heads * hd, h), p + "self_attn.k_proj.weight", "k"
        yield b + "attn_v.weight", (a.kv_heads * hd, h), p + "self_attn.v_proj.weight", "matrix"
        yield b + "attn_output.weight", (h, a.heads * hd), p + "self_attn.o_proj.weight", "matrix"
        if a.name in ("qwen3", "qwen3moe"):
            yield b + "attn_q_norm.weight", (hd,), p + "self_attn.q_norm.weight", "norm"
            yield b + "attn_k_norm.weight", (hd,), p + "self_attn.k_norm.weight", "norm"
        yield b + "ffn_norm.weight", (h,), p + "post_attention_layernorm.weight", "norm"
        if a.experts:
            e, f = a.experts, a.moe_ff
            yield b + "ffn_gate_inp.weight", (e, h), p + "mlp.gate.weight", "router"
            yield b + "ffn_gate_exps.weight", (e, f, h), p + "mlp.switch_mlp.gate_proj.weight", "matrix"
            yield b + "ffn_up_exps.weight", (e, f, h), p + "mlp.switch_mlp.up_proj.weight", "matrix"
            yield b + "ffn_down_exps.weight", (e, h, f), p + "mlp.switch_mlp.down_proj.weight", "matrix"
        else:
            yield b + "ffn_gate.weight", (a.ff, h), p + "mlp.gate_proj.weight", "matrix"
            yield b + "ffn_up.weight", (a.ff, h), p + "mlp.up_proj.weight", "matrix"
            yield b + "ffn_down.weight", (h, a.ff), p + "mlp.down_proj.weight", "matrix"
    yield "output_norm.weight", (h,), "model.norm.weight", "norm"
    if not a.tied:
        yield "output.weight", (a.vocab, h), "lm_head.weight", "output"


def ggml_type_for(role, a, target):
    """The GGML type a tensor gets in a file of type `target`, following convert_hf_to_gguf.py for
    float files and llama-quant.cpp's defaults for Q4_0/Q8_0 (not --pure)."""
    T = gguf.GGMLQuantizationType
    if role in ("norm", "router"):
        return T.F32
    if target == T.Q4_0 and (role == "output" or (role == "embed" and a.tied)):
        return T.Q6_K
    return target


# ----------------------------------------------------------------------------------------------
# Reading a loom folder (safetensors, no torch)


class SafetensorsFolder:
    """Memory-mapped tensors of every model*.safetensors file of a folder."""

    DT = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}

    def __init__(self, folder):
        self.index = {}
        files = sorted(f for f in os.listdir(folder) if f.startswith("model") and f.endswith(".safetensors"))
        if not files:
            raise SystemExit(f"make_gguf: no model*.safetensors in {folder}")
        for f in files:
            path = os.path.join(folder, f)
            with open(path, "rb") as fh:
                (n,) = struct.unpack("<Q", fh.read(8))
                header = json.loads(fh.read(n))
            for name, info in header.items():
                if name != "__metadata__":
                    self.index[name] = (path, 8 + n, info)

    def load_f32(self, name):
        if name not in self.index:
            raise SystemExit(f"make_gguf: tensor '{name}' is missing (is this a dense loom random-model folder?)")
        path, base, info = self.index[name]
        if info["dtype"] not in self.DT:
            raise SystemExit(f"make_gguf: tensor '{name}' has dtype {info['dtype']}; convert needs a dense float "
                             "checkpoint (use `random` for quantized targets)")
        start, end = info["data_offsets"]
        raw = np.memmap(path, dtype=self.DT[info["dtype"]], mode="r", offset=base + start,
                        shape=tuple(info["shape"]))
        if info["dtype"] == "BF16":
            return (raw.astype(np.uint32) << 16).view(np.float32)
        return np.asarray(raw, dtype=np.float32)


def permute_rope_rows(w, n_head):
    """HF's rotate-half rope pairs (i, i + d/2) of each head -> llama.cpp's adjacent pairs (2i, 2i+1):
    the row permutation convert_hf_to_gguf.py applies to Llama's q and k projections."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_type(x, t):
    T = gguf.GGMLQuantizationType
    if t == T.F32:
        return np.ascontiguousarray(x, dtype=np.float32)
    if t == T.F16:
        return np.ascontiguousarray(x.astype(np.float16))
    if t == T.BF16:
        u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
        # round to nearest even, as ggml's fp32 -> bf16 conversion
        return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    raise ValueError(t)


# ----------------------------------------------------------------------------------------------
# Random data at a target type, built in bulk (no per-block Python loops)


class RandomBytes:
    """Bulk random bytes, fast: a 64 MiB pool from numpy's PCG64, copied out in chunks of at least
    32 MiB from random offsets (benchmarks need varied values, not independent ones). Seeded, so
    outputs are reproducible. Returns fresh writable arrays."""

    POOL = 64 << 20

    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.pool = np.frombuffer(self.rng.bytes(self.POOL), dtype=np.uint8)

    def u8(self, n):
        out = np.empty(n, dtype=np.uint8)
        pos = 0
        while pos < n:
            off = int(self.rng.integers(0, self.POOL // 2))
            m = min(n - pos, self.POOL - off)
            out[pos:pos + m] = self.pool[off:off + m]
            pos += m
        return out

    def u16(self, n):
        return self.u8(2 * n).view(np.uint16)


def random_float_bits(rb, n, t, amp):
    """n random values of float type t: random sign and mantissa bits under the fixed exponent
    e - 1 (e = floor(log2 amp)), so magnitudes lie in [2^(e-1), 2^e), between amp/4 and amp."""
    T = gguf.GGMLQuantizationType
    e = math.floor(math.log2(amp))
    if t == T.BF16:
        return (rb.u16(n) & np.uint16(0x807F)) | np.uint16((e - 1 + 127) << 7)
    if t == T.F16:
        return (rb.u16(n) & np.uint16(0x83FF)) | np.uint16((e - 1 + 15) << 10)
    if t == T.F32:
        bits = (rb.u16(n).astype(np.uint32) << 16) | rb.u16(n)
        return ((bits & np.uint32(0x807FFFFF)) | np.uint32((e - 1 + 127) << 23)).view(np.float32)
    raise ValueError(t)


def random_quant_blocks(rb, shape, t, amp):
    """Random blocks of ggml type t (layouts from ggml-common.h) for a tensor of `shape` whose
    values span about [-amp, amp]; returns the raw bytes as a uint8 array [rows, bytes_per_row].
      Q4_0: f16 d, 16 bytes of nibbles (32 weights), value = d * (q - 8)
      Q8_0: f16 d, 32 int8,                          value = d * q
      Q6_K: 128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d (256 weights), value = d * scale * (q - 32)
    """
    T = gguf.GGMLQuantizationType
    block, size = gguf.GGML_QUANT_SIZES[t]
    n = int(np.prod(shape))
    nb = n // block
    out = rb.u8(nb * size).reshape(nb, size)
    if t == T.Q4_0:
        d_off, d = 0, amp / 8
    elif t == T.Q8_0:
        d_off, d = 0, amp / 127
        # int8 -128 is legal but keep the range symmetric
        qs = out[:, 2:]
        qs[qs == 0x80] = 0x81
    elif t == T.Q6_K:
        d_off, d = 208, amp / (32 * 64)
        out[:, 192:208] = 64  # every sub-block scale 64
    else:
        raise ValueError(t)
    out[:, d_off:d_off + 2] = np.frombuffer(np.float16(d).tobytes(), dtype=np.uint8)
    return out.reshape(*shape[:-1], shape[-1] // block * size)


# ----------------------------------------------------------------------------------------------


FILE_TYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}


def write_gguf(out, a, target_name, vocab_mode, make_tensor, log):
    """Streams the GGUF: metadata and tensor infos first, then each tensor made by
    make_tensor(gguf_name, shape, loom_name, role, ggml_type) -> np.ndarray, one at a time."""
    T = gguf.GGMLQuantizationType
    tname, ftname = FILE_TYPES[target_name]
    target, file_type = T[tname], gguf.LlamaFileType[ftname]
    tmp = out + ".tmp"
    w = gguf.GGUFWriter(tmp, a.name)
    add_metadata(w, a, file_type, vocab_mode)
    plan = []
    rope = llama3_rope_factors(a) if a.name == "llama" else None
    if rope is not None:
        plan.append(("rope_freqs.weight", rope.shape, None, "rope", T.F32))
    for gname, shape, lname, role in tensor_list(a):
        plan.append((gname, shape, lname, role, ggml_type_for(role, a, target)))
    total = 0
    for gname, shape, _, _, t in plan:
        block, size = gguf.GGML_QUANT_SIZES[t]
        nbytes = int(np.prod(shape)) // block * size
        total += nbytes
        w.add_tensor_info(gname, shape, np.dtype(np.float32), nbytes, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    t0 = time.time()
    tty = sys.stderr.isatty()
    for k, (gname, shape, lname, role, t) in enumerate(plan):
        data = rope if role == "rope" else make_tensor(gname, shape, lname, role, t)
        w.write_tensor_data(data)
        if tty:
            log(f"\r[make_gguf] {k + 1}/{len(plan)} tensors, {time.time() - t0:.0f}s")
        elif (k + 1) * 4 // len(plan) != k * 4 // len(plan):  # a line at each quarter in a log file
            log(f"[make_gguf] {k + 1}/{len(plan)} tensors, {time.time() - t0:.0f}s\n")
    w.close()
    os.replace(tmp, out)
    log(f"{chr(10) if tty else ''}[make_gguf] wrote {out} ({total / 1e9:.2f} GB, {target_name})\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py folder")
    sub = ap.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("convert", help="loom random-model folder -> F32/F16/BF16 GGUF with the same weights")
    c.add_argument("--model", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--outtype", default="bf16", choices=["f32", "f16", "bf16"])
    c.add_argument("--vocab", default="none", choices=["none", "spm"])
    r = sub.add_parser("random", help="config.json -> GGUF of random weights written directly at --outtype")
    r.add_argument("--config", required=True, help="config.json, or a folder holding one")
    r.add_argument("--out", required=True)
    r.add_argument("--outtype", required=True, choices=list(FILE_TYPES))
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--vocab", default="none", choices=["none", "spm"])
    args = ap.parse_args()

    global gguf
    sys.path.insert(0, os.path.abspath(args.gguf_py))
    import gguf as gguf_module  # noqa: E402
    gguf = gguf_module

    log = lambda s: (sys.stderr.write(s), sys.stderr.flush())  # noqa: E731
    T = gguf.GGMLQuantizationType
    if args.mode == "convert":
        with open(os.path.join(args.model, "config.json")) as f:
            cfg = json.load(f)
        if "quantization" in cfg:
            raise SystemExit("make_gguf: convert needs a dense checkpoint; this one is quantized")
        a = Arch(cfg)
        st = SafetensorsFolder(args.model)

        def make(gname, shape, lname, role, t):
            x = st.load_f32(lname)
            if tuple(x.shape) != tuple(shape):
                raise SystemExit(f"make_gguf: {lname} has shape {x.shape}, expected {shape}")
            if a.name == "llama" and role == "q":
                x = permute_rope_rows(x, a.heads)
            elif a.name == "llama" and role == "k":
                x = permute_rope_rows(x, a.kv_heads)
            return to_type(x, t)

        write_gguf(args.out, a, args.outtype, args.vocab, make, log)
    else:
        path = args.config
        if os.path.isdir(path):
            path = os.path.join(path, "config.json")
        with open(path) as f:
            cfg = json.load(f)
        a = Arch(cfg)
        rb = RandomBytes(args.seed)

        def make(gname, shape, lname, role, t):
            if role == "norm":
                return np.ones(shape, dtype=np.float32)
            amp = 1.0 / math.sqrt(shape[-1])
            n = int(np.prod(shape))
            if role == "router":
                return ((rb.u16(n).astype(np.float32) / 32768.0 - 1.0) * amp).reshape(shape)
            if t in (T.Q4_0, T.Q8_0, T.Q6_K):
                return random_quant_blocks(rb, shape, t, amp)
            return random_float_bits(rb, n, t, amp).reshape(shape)

        write_gguf(args.out, a, args.outtype, args.vocab, make, log)


if __name__ == "__main__":
    main()
