#!/usr/bin/python3
"""Writes the IO test fixtures with implementations independent of loom.

reference.safetensors: the safetensors format written by hand (struct + json, per the spec: u64 LE
header length, JSON header, data section) -- not by loom and not by the safetensors package. The
header is padded to length % 8 == 3 on purpose, so every tensor's data is unaligned in the file.
numpy_written.npy / numpy_fortran.npy / numpy_v2.npy: written by numpy itself.
Run from this folder: /usr/bin/python3 make_fixtures.py
"""
import json
import struct

import numpy as np

tensors = {
    "f32": np.array([[0.5, -1.25, 3.0], [1e-3, 65504.0, -0.0]], dtype="<f4"),
    "f16": np.array([1.0, -2.0, 0.333251953125, 65504.0], dtype="<f2"),
    # bf16 written as raw bit patterns: 1.0, -2.5, 0.15625, and 0x7F61 = 2^127 * (1 + 97/128)
    "bf16": np.array([0x3F80, 0xC020, 0x3E20, 0x7F61], dtype="<u2"),
    "i64": np.array([[-(2**40), 7], [0, 2**62]], dtype="<i8"),
    "i8": np.array([-128, -1, 0, 127], dtype="i1"),
    "u8": np.array([0, 1, 200, 255], dtype="u1"),
    "boolean": np.array([True, False, True], dtype="?"),
    "f64": np.array([3.141592653589793, -1e300], dtype="<f8"),
    "scalar_i32": np.array(-123456, dtype="<i4"),
    "empty_f32": np.zeros((0, 4), dtype="<f4"),
    # F8_E4M3 bytes: 0x38 = 1.0, 0xC0 = -2.0, 0x7E = 448 (max finite), 0x01 = 2^-9 (smallest subnormal)
    "fp8": np.array([0x38, 0xC0, 0x7E, 0x01], dtype="u1"),
}
dtypes = {"f32": "F32", "f16": "F16", "bf16": "BF16", "i64": "I64", "i8": "I8", "u8": "U8",
          "boolean": "BOOL", "f64": "F64", "scalar_i32": "I32", "empty_f32": "F32", "fp8": "F8_E4M3"}

header = {"__metadata__": {"format": "pt", "producer": "make_fixtures.py"}}
data = b""
# Reverse alphabetical order in the data section, so file order differs from name order.
for name in sorted(tensors, reverse=True):
    raw = tensors[name].tobytes()
    header[name] = {"dtype": dtypes[name], "shape": list(tensors[name].shape),
                    "data_offsets": [len(data), len(data) + len(raw)]}
    data += raw
text = json.dumps(header).encode()
text += b" " * ((3 - len(text)) % 8)
assert len(text) % 8 == 3
with open("reference.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + data)

np.save("numpy_written.npy", np.arange(12, dtype="<f4").reshape(3, 4) / 8 - 0.5)
np.save("numpy_fortran.npy", np.asfortranarray(np.arange(6, dtype="<i8").reshape(2, 3) * 10 - 7))
with open("numpy_v2.npy", "wb") as f:
    np.lib.format.write_array(f, np.array([[1, 2], [3, 4]], dtype="<i4"), version=(2, 0))
