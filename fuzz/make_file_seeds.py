#!/usr/bin/env python3
"""Seeds of the file-level fuzz targets, derived from existing inputs.

checkpoint_read: df11 safetensors files as `df11 compress` writes them (a U8
tensor holding a df11 container, described in __metadata__["df11"], next to a
raw BF16 tensor, listed as a raw fallback or not), built around containers from fuzz/seeds/container_parse
(written by `cargo run --manifest-path fuzz/Cargo.toml --example make_seeds`).

dfloat11_module: the six arrays of each module of the DFloat11 test fixtures,
in the target's input layout (six little-endian u16 lengths, then the arrays).

Run from the repository root: python3 fuzz/make_file_seeds.py
"""
import json
import os
import struct

SEEDS = "fuzz/seeds"
ARRAYS = ["luts", "encoded_exponent", "sign_mantissa", "output_positions", "gaps", "split_positions"]


def compact(v):
    return json.dumps(v, separators=(",", ":"))


def write(target, name, data):
    os.makedirs(f"{SEEDS}/{target}", exist_ok=True)
    with open(f"{SEEDS}/{target}/{name}", "wb") as f:
        f.write(data)


def checkpoint_seeds():
    # The *_raw seeds list b as a raw fallback (a BF16 tensor stored as is,
    # FORMAT.md section 11.1); the others leave it unlisted, as files written
    # before raw entries existed do.
    for name, src, shape, raw in [
        ("ckpt_7", "odd_7", [7], False),
        ("ckpt_3x100", "rows1_300", [3, 100], False),
        ("ckpt_7_raw", "odd_7", [7], True),
        ("ckpt_3x100_raw", "rows1_300", [3, 100], True),
        ("ckpt_lanes9_3x100", "lanes9_rows1_300", [3, 100], False),
        ("ckpt_lanes9_ones_4096", "lanes9_ones_4096", [4096], False),
    ]:
        with open(f"{SEEDS}/container_parse/{src}", "rb") as f:
            c = f.read()
        df11 = {"format_version": 1, "tensors": {"w": {"dtype": "BF16", "shape": shape}}}
        if raw:
            df11["raw"] = {"b": {"dtype": "BF16", "shape": [2]}}
        meta = compact(df11)
        header = compact({
            "__metadata__": {"df11": meta},
            "b": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]},
            "w": {"dtype": "U8", "shape": [len(c)], "data_offsets": [4, 4 + len(c)]},
        }).encode()
        write("checkpoint_read", name, struct.pack("<Q", len(header)) + header + bytes([0x80, 0x3F, 0, 0xC0]) + c)


def dfloat11_seeds():
    for fixture in ["odd_length", "gaussian_small", "edge_last_code_crosses_block_aligned"]:
        with open(f"tests/fixtures/dfloat11/{fixture}.df11.safetensors", "rb") as f:
            data = f.read()
        hlen = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8:8 + hlen])
        body = data[8 + hlen:]
        for key in header:
            if not key.endswith(".luts"):
                continue
            module = key[: -len(".luts")]
            entries = [header.get(f"{module}.{a}") for a in ARRAYS]
            if None in entries:
                continue
            arrays = [body[e["data_offsets"][0]:e["data_offsets"][1]] for e in entries]
            if any(len(a) > 0xFFFF for a in arrays[:5]):
                continue
            lens = b"".join(struct.pack("<H", len(a) & 0xFFFF) for a in arrays)
            write("dfloat11_module", f"{fixture}_{module}", lens + b"".join(arrays))


checkpoint_seeds()
dfloat11_seeds()
