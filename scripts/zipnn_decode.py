#!/usr/bin/env python3
"""ZipNN beside df11 on the same checkpoint, one thread each, in one run.

Compresses every BF16 tensor of ORIGINAL (a .safetensors file or a directory
of them) with ZipNN (`pip install zipnn`; its defaults for bf16 bytes, one
thread), checks that each decompresses to the same bytes, and times the
decompression of all of them, in memory. With --df11 and --compressed it also
times the whole `df11 -q --threads 1 verify ORIGINAL COMPRESSED` process
(which reads both checkpoints, decodes and compares), the two alternating run
by run so that a drifting machine affects both alike, and prints the ratio of
the medians in GB/s of bf16 output. After that it also runs `df11 bench
--threads 1` on each file of ORIGINAL, so that the two codecs' in-memory
decodes are side by side as well (df11's with and without its output CRC,
in the layout --layout names, df11's default if none).

Usage: scripts/zipnn_decode.py ORIGINAL [--df11 BIN --compressed DIR [--layout L]] [--runs N] [--json]
"""

import argparse
import json
import os
import statistics
import struct
import subprocess
import sys
import time


def safetensors_files(path):
    """The file itself, or a directory's .safetensors files in order."""
    if os.path.isdir(path):
        return sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".safetensors"))
    return [path]


def bf16_tensors(path):
    """(name, bytes) of every BF16 tensor of a safetensors file or directory."""
    out = []
    for f in safetensors_files(path):
        with open(f, "rb") as fh:
            data = fh.read()
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        base = 8 + n
        for name, t in header.items():
            if name == "__metadata__" or t["dtype"] != "BF16":
                continue
            a, b = t["data_offsets"]
            out.append((name, data[base + a : base + b]))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("original")
    p.add_argument("--df11", help="the df11 binary")
    p.add_argument("--compressed", help="ORIGINAL compressed with df11")
    p.add_argument("--layout", help="the layout `df11 bench` measures (default: df11's default)")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    if (a.df11 is None) != (a.compressed is None):
        p.error("--df11 and --compressed go together")

    try:
        from zipnn import ZipNN
    except ImportError as e:
        sys.exit(f"zipnn_decode: cannot import ZipNN ({e}); pip install zipnn")

    znn = ZipNN(input_format="byte", bytearray_dtype="bfloat16", threads=1)
    tensors = [(n, b) for n, b in bf16_tensors(a.original) if b]
    total = sum(len(b) for _, b in tensors)
    t0 = time.perf_counter()
    # ZipNN reorders the bits of its input in place: give it a copy.
    packed = [znn.compress(bytearray(b)) for _, b in tensors]
    enc_s = time.perf_counter() - t0
    for (name, b), c in zip(tensors, packed):
        if bytes(znn.decompress(c)) != b:
            sys.exit(f"ZipNN round trip differs in {name}")
    stored = sum(len(c) for c in packed)

    zipnn_cpu = []

    def zipnn_run():
        t, c0 = time.perf_counter(), time.process_time()
        for c in packed:
            znn.decompress(c)
        # Process CPU time over wall time: about 1 if ZipNN kept to one thread.
        zipnn_cpu.append(time.process_time() - c0)
        return time.perf_counter() - t

    def df11_run():
        t = time.perf_counter()
        cmd = [a.df11, "-q", "--threads", "1", "verify", a.original, a.compressed]
        subprocess.run(cmd, check=True)
        return time.perf_counter() - t

    zipnn_s, df11_s = [], []
    for _ in range(a.runs):
        zipnn_s.append(zipnn_run())
        if a.df11:
            df11_s.append(df11_run())
    r = {
        "tensors": len(tensors),
        "bf16_bytes": total,
        "zipnn_bits_per_weight": stored * 16 / total,
        "zipnn_encode_gbps": total / enc_s / 1e9,
        "zipnn_decode_gbps": total / statistics.median(zipnn_s) / 1e9,
        "zipnn_decode_s": zipnn_s,
        "zipnn_decode_cpu_s": zipnn_cpu,
    }
    if a.df11:
        r["df11_verify_gbps"] = total / statistics.median(df11_s) / 1e9
        r["df11_verify_s"] = df11_s
        r["df11_verify_over_zipnn_decode"] = r["df11_verify_gbps"] / r["zipnn_decode_gbps"]
        # df11's in-memory decode of the same tensors: each file's bench
        # (medians of its own repetitions), as seconds summed over files.
        secs = {"decode_gbps": 0.0, "decode_verified_gbps": 0.0}
        layout = None
        for f in safetensors_files(a.original):
            cmd = [a.df11, "bench", "--threads", "1", "--json", f]
            if a.layout:
                cmd[2:2] = ["--layout", a.layout]
            b = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            layout = b["layout"]
            for k in secs:
                secs[k] += 2 * b["elements"] / (b[k] * 1e9)
        r["df11_bench_layout"] = layout
        r["df11_decode_gbps"] = total / secs["decode_gbps"] / 1e9
        r["df11_decode_crc_gbps"] = total / secs["decode_verified_gbps"] / 1e9
        r["df11_decode_crc_over_zipnn_decode"] = r["df11_decode_crc_gbps"] / r["zipnn_decode_gbps"]
    if a.json:
        print(json.dumps(r))
        return
    print(f"{len(tensors)} bf16 tensors, {total / 1e9:.3f} GB, one thread, median of {a.runs}")
    print(f"ZipNN: {r['zipnn_bits_per_weight']:.4f} bits/weight, encode {r['zipnn_encode_gbps']:.3f} GB/s, "
          f"decode (in memory) {r['zipnn_decode_gbps']:.3f} GB/s")
    if a.df11:
        print(f"df11 verify (whole process): {r['df11_verify_gbps']:.3f} GB/s, "
              f"{r['df11_verify_over_zipnn_decode']:.2f}x ZipNN's decode")
        print(f"df11 decode (in memory, {r['df11_bench_layout']}): {r['df11_decode_gbps']:.3f} GB/s, "
              f"with its CRC {r['df11_decode_crc_gbps']:.3f} GB/s, "
              f"{r['df11_decode_crc_over_zipnn_decode']:.2f}x ZipNN's decode")


if __name__ == "__main__":
    main()
