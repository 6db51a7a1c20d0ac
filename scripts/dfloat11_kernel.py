"""DFloat11's own decode kernel (the `dfloat11` wheel, launched as its
forward hook launches it) on one transformer block of a DFloat11 checkpoint,
next to a device-to-device copy of the same bytes in the same run: the
side-by-side anchor for df11-gpu-check's block rows.

Decodes every DFloat11 module of `model.layers.LAYER.` (for Llama: the
attention and the MLP, one launch each), checks the bits against the bf16
checkpoint the DFloat11 one was made from, then times the block's launches
and the copy with CUDA events (median of 25 after 3 warm-up runs). Prints
one JSON object.

usage: dfloat11_kernel.py DFLOAT11_DIR BF16_DIR [LAYER]
"""
import glob
import json
import os
import re
import sys

import torch
from safetensors.torch import load_file

RUNS, WARMUP = 25, 3


def tensors(path):
    out = {}
    for f in sorted(glob.glob(os.path.join(path, "*.safetensors"))):
        out.update(load_file(f))
    return out


def median_ms(fn):
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(RUNS):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return sorted(times)[RUNS // 2]


def main():
    dfl_dir, bf16_dir = sys.argv[1], sys.argv[2]
    layer = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    import cupy as cp
    import dfloat11.dfloat11 as d

    with open(os.path.join(dfl_dir, "config.json")) as f:
        pattern = json.load(f)["dfloat11_config"]["pattern_dict"]
    dfl, ref = tensors(dfl_dir), tensors(bf16_dir)
    prefix = f"model.layers.{layer}."
    names = sorted({k.rsplit(".", 1)[0] for k in dfl if k.startswith(prefix) and k.endswith(".encoded_exponent")})
    if not names:
        sys.exit(f"no DFloat11 module under {prefix} in {dfl_dir}")
    dev = torch.device("cuda:0")
    threads = d.threads_per_block
    launches, total, payload, exact = [], 0, 0, True
    for name in names:
        a = {k: dfl[f"{name}.{k}"].to(dev) for k in ("luts", "encoded_exponent", "sign_mantissa", "output_positions", "gaps")}
        n, nbytes = a["sign_mantissa"].numel(), a["encoded_exponent"].numel()
        pos = dfl[f"{name}.output_positions"].view(torch.int32).numpy().astype("int64")
        shared = threads[0] * 4 + 4 + int((pos[1:] - pos[:-1]).max()) * 2
        grid = ((nbytes + threads[0] * d.bytes_per_thread - 1) // (threads[0] * d.bytes_per_thread),)
        out = torch.empty(n, dtype=torch.bfloat16, device=dev)
        args = [a["luts"].data_ptr(), a["encoded_exponent"].data_ptr(), a["sign_mantissa"].data_ptr(),
                a["output_positions"].data_ptr(), a["gaps"].data_ptr(), out.data_ptr(), a["luts"].shape[0], nbytes, n]
        launch = (lambda g=grid, s=shared, x=args: d._decode(grid=g, block=threads, shared_mem=s, args=x))
        out.fill_(float("nan"))
        with cp.cuda.Device(0):
            launch()
        torch.cuda.synchronize()
        # The module's weights, in its pattern's order, are what it must decode to.
        children = next(c for p, c in pattern.items() if re.fullmatch(p, name))
        want = torch.cat([ref[f"{name}.{c}.weight"].reshape(-1) for c in children]).view(torch.int16)
        exact &= bool(torch.equal(out.view(torch.int16).cpu(), want))
        launches.append((launch, a, out))
        total += n
        payload += sum(a[k].numel() * a[k].element_size() for k in a)

    def block():
        with cp.cuda.Device(0):
            for launch, _, _ in launches:
                launch()

    dec_ms = median_ms(block)
    src = torch.empty(total, dtype=torch.bfloat16, device=dev)
    dst = torch.empty_like(src)
    copy_ms = median_ms(lambda: dst.copy_(src))
    out_bytes = 2 * total
    print(json.dumps({
        "modules": names,
        "elements": total,
        "bits_exact": exact,
        "decode_ms": dec_ms,
        "copy_ms": copy_ms,
        "decode_traffic_gbs": (payload + out_bytes) / dec_ms / 1e6,
        "copy_traffic_gbs": 2 * out_bytes / copy_ms / 1e6,
        "traffic_over_copy": ((payload + out_bytes) / dec_ms) / (2 * out_bytes / copy_ms),
        "decode_over_copy_time": dec_ms / copy_ms,
        "stored_bytes_over_bf16": payload / out_bytes,
    }))


if __name__ == "__main__":
    main()
