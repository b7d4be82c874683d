#!/usr/bin/python3
"""numpy oracle for tests/ops/numpy_test.cpp.

Usage: numpy_oracle.py DIR

DIR/manifest.txt has one case per line: `name<TAB>op<TAB>json-params<TAB>input,input,...`; input `x`
is DIR/x.npy (several cases may share one input; bf16 arrays arrive as float32 holding the exact bf16
values). The script computes
the expected output of `op` with numpy (float64 for float math, so loom's f32 result is checked against
a more precise value) and writes DIR/name.out.npy, or name.out0.npy, name.out1.npy ... for ops with
several outputs. The ops are a fixed list below; the C++ test states the op's name and parameters.
"""
import json
import math
import os
import sys

import numpy as np


def bf16_round(x):
    """float32 -> bfloat16 -> float32 with round-to-nearest-even, by bit manipulation on uint32 views."""
    f = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    u = f.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    out = (r & 0xFFFFFFFF).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(f), f, out)


def f16_round(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def f64(x):
    return np.asarray(x, dtype=np.float64)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def view(x, spec):
    """Applies a view description from the C++ side: {"transpose": [...]} and/or {"slice": [[start, stop, step], ...]}."""
    if spec is None:
        return x
    if "transpose" in spec:
        x = np.transpose(x, spec["transpose"])
    if "slice" in spec:
        x = x[tuple(slice(s[0], s[1], s[2]) for s in spec["slice"])]
    return x


def unary(name, a):
    a = f64(a)
    table = {
        "exp": np.exp,
        "log": np.log,
        "tanh": np.tanh,
        "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
        "sqrt": np.sqrt,
        "rsqrt": lambda x: 1.0 / np.sqrt(x),
        "abs": np.abs,
        "negative": np.negative,
        "square": np.square,
        "sin": np.sin,
        "cos": np.cos,
        "log1p": np.log1p,
        "floor": np.floor,
        "reciprocal": lambda x: 1.0 / x,
        "erf": _erf,
        "silu": lambda x: x / (1.0 + np.exp(-x)),
        "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
        "relu": lambda x: np.maximum(x, 0),
        "softplus": lambda x: np.log1p(np.exp(x)),
    }
    return table[name](a)


def binary(name, a, b):
    table = {
        "add": np.add,
        "subtract": np.subtract,
        "multiply": np.multiply,
        "divide": np.true_divide,
        "maximum": np.maximum,
        "minimum": np.minimum,
        "power": np.power,
        "equal": np.equal,
        "not_equal": np.not_equal,
        "less": np.less,
        "less_equal": np.less_equal,
        "greater": np.greater,
        "greater_equal": np.greater_equal,
        "logical_and": np.logical_and,
        "logical_or": np.logical_or,
    }
    return table[name](a, b)


def softmax(x, axis):
    x = f64(x)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


def logsumexp(x, axis, keepdims):
    x = f64(x)
    m = np.max(x, axis=axis, keepdims=True)
    r = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return r if keepdims else np.squeeze(r, axis=axis)


def compute(op, p, ins):
    ins = [view(x, v) for x, v in zip(ins, p.get("views", [None] * len(ins)))]
    compute_in = p.get("compute", "f64")  # integer ops keep their integer types
    if compute_in == "f64":
        fins = [f64(x) for x in ins]
    else:
        fins = ins
    if op == "matmul":
        return np.matmul(fins[0], fins[1])
    if op == "unary":
        return unary(p["fn"], fins[0])
    if op == "binary":
        if "scalar" in p:
            a, b = fins[0], p["scalar"]
            if p.get("scalar_first"):
                a, b = b, a
        else:
            a, b = fins[0], fins[1]
        return binary(p["fn"], a, b)
    if op == "where":
        return np.where(ins[0].astype(bool), fins[1], fins[2])
    if op == "reduce":
        axes = tuple(p["axes"]) if p["axes"] else None
        fn = {"sum": np.sum, "mean": np.mean, "max": np.max, "min": np.min, "prod": np.prod}[p["fn"]]
        return fn(fins[0], axis=axes, keepdims=p["keepdims"])
    if op == "argmax":
        r = np.argmax(fins[0], axis=p["axis"])
        return np.expand_dims(r, p["axis"]) if p["keepdims"] else r
    if op == "argmin":
        r = np.argmin(fins[0], axis=p["axis"])
        return np.expand_dims(r, p["axis"]) if p["keepdims"] else r
    if op == "softmax":
        return softmax(fins[0], p["axis"])
    if op == "logsumexp":
        return logsumexp(fins[0], p["axis"], p["keepdims"])
    if op == "take":
        return np.take(fins[0], ins[1].astype(np.int64), axis=p["axis"])
    if op == "concatenate":
        return np.concatenate(fins, axis=p["axis"])
    if op == "stack":
        return np.stack(fins, axis=p["axis"])
    if op == "split":
        if "parts" in p:
            return np.split(fins[0], p["parts"], axis=p["axis"])
        return np.split(fins[0], p["indices"], axis=p["axis"])
    if op == "identity":  # the view itself (slice with steps, transpose, broadcast)
        return fins[0]
    if op == "broadcast_to":
        return np.broadcast_to(fins[0], p["shape"])
    if op == "bf16_round":
        return bf16_round(ins[0])
    if op == "f16_round":
        return f16_round(ins[0])
    if op == "astype_int":  # float -> integer casts truncate toward zero
        return np.trunc(fins[0])
    raise SystemExit("numpy_oracle.py: unknown op " + op)


def main():
    d = sys.argv[1]
    with open(os.path.join(d, "manifest.txt")) as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip()]
    for ln in lines:
        name, op, params, inputs = ln.split("\t")
        ins = [np.load(os.path.join(d, x + ".npy")) for x in inputs.split(",") if x]
        p = json.loads(params)
        with np.errstate(all="ignore"):
            out = compute(op, p, ins)
            # Outputs stored in a half dtype: round the exact result as the dtype does.
            rnd = {"bf16": bf16_round, "f16": f16_round}.get(p.get("round"))
            if rnd is not None:
                out = [rnd(o) for o in out] if isinstance(out, (list, tuple)) else rnd(out)
        if isinstance(out, (list, tuple)):
            for i, o in enumerate(out):
                np.save(os.path.join(d, "%s.out%d.npy" % (name, i)), np.array(o, order="C"))
        else:
            out = np.asarray(out)
            if out.dtype == np.float16:
                out = out.astype(np.float32)
            np.save(os.path.join(d, "%s.out.npy" % name), np.array(out, order="C"))  # keeps 0-d shapes


if __name__ == "__main__":
    main()
