#!/usr/bin/env python3
"""Rewrites a safetensors file with every F32 tensor rounded to BF16.

Rounding is to nearest, ties to even: the same bits as PyTorch's
`.to(torch.bfloat16)` for every value but NaN. A NaN keeps its sign and top
payload bits and is made quiet (PyTorch writes one canonical NaN). Other
dtypes are copied unchanged. Only numpy is needed.

Usage: scripts/fp32_to_bf16.py INPUT.safetensors OUTPUT.safetensors
"""

import json
import struct
import sys

import numpy as np


def to_bf16(words):
    """BF16 bit patterns of float32 bit patterns (uint32 array)."""
    w = words.astype(np.uint64)
    rounded = ((w + 0x7FFF + ((w >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (words & 0x7FFFFFFF) > 0x7F800000
    rounded[nan] = ((words[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    src, dst = sys.argv[1:]
    with open(src, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    meta = header.pop("__metadata__", None)
    # The header as the safetensors library writes it: `__metadata__` first,
    # tensors in data order, compact JSON, spaces to a multiple of 8.
    out, blobs, offset = {}, [], 0
    if meta is not None:
        out["__metadata__"] = meta
    for name in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
        t = header[name]
        a, b = t["data_offsets"]
        raw = data[base + a : base + b]
        dtype = t["dtype"]
        if dtype == "F32":
            raw = to_bf16(np.frombuffer(raw, dtype="<u4")).astype("<u2").tobytes()
            dtype = "BF16"
        out[name] = {"dtype": dtype, "shape": t["shape"], "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode()
    head += b" " * (-len(head) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for blob in blobs:
            f.write(blob)


if __name__ == "__main__":
    main()
