#!/usr/bin/env bash
# Device check of the GPU decoder, for a machine with an NVIDIA driver (and
# optionally the CUDA toolkit's compute-sanitizer) but no Rust toolchain.
#
# Build the checker where Rust is installed:
#     cargo build --release --bin df11-gpu-check
# then on the GPU machine, from the repository root:
#     OUT=/some/log/dir scripts/gpu-check.sh [--quick]
#
# DF11_GPU_CHECK_BIN overrides where the binary is looked for. Logs (the result
# table, nvidia-smi, sanitizer reports) go to $OUT, default ./gpu-check-out.
# Where cargo is installed too, the GPU integration tests run first.
#
# DFloat11's own kernel as the side-by-side anchor: where `df11` and the
# `make_checkpoint` example are built (scripts/build-cuda.sh --bin df11
# --example make_checkpoint) and the wheels are staged in .whl (see
# scripts/gpu-run-model.sh), one 1B-shaped and one 8B-shaped Llama block are
# written as DFloat11 checkpoints and timed with scripts/dfloat11_kernel.py
# against a copy in the same run: $OUT/dfloat11-kernel-*.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# On this machine a missing driver or device is a failure, not a skip.
export DF11_REQUIRE_GPU=1
bin="${DF11_GPU_CHECK_BIN:-target/release/df11-gpu-check}"
out="${OUT:-gpu-check-out}"
mkdir -p "$out"
if [[ ! -x "$bin" ]]; then
    echo "gpu-check: $bin not found; build it with: cargo build --release --bin df11-gpu-check" >&2
    exit 2
fi
if command -v cargo >/dev/null; then
    cargo test --release --locked --test gpu_smoke --test gpu_decode 2>&1 | tee "$out/gpu-tests.log"
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi | tee "$out/nvidia-smi.txt"
fi
# The checker also prints nvidia-smi's summary into its log, runs the
# correctness and throughput checks and, when present, compute-sanitizer.
"$bin" "$@" "$out" 2>&1 | tee "$out/gpu-check.log"

df11_bin="${DF11_BIN:-target/release/df11}"
make="${DF11_MAKE:-target/release/examples/make_checkpoint}"
if [[ -d .whl && -x "$df11_bin" && -x "$make" ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    work="${DF11_WORK:-/tmp/df11-gpu-check}"
    # One layer each: Llama-3.2-1B (2048/8192) and Llama-3.1-8B (4096/14336).
    for shape in "1b 2048 8192" "8b 4096 14336"; do
        read -r name hidden inter <<< "$shape"
        [[ -d "$work/$name-bf16" ]] || "$make" "$work/$name-bf16" 1 "$hidden" 1 "$inter" 1024 2>/dev/null
        [[ -d "$work/$name-dfloat11" ]] || "$df11_bin" compress "$work/$name-bf16" -o "$work/$name-dfloat11" --format dfloat11
        python3 scripts/dfloat11_kernel.py "$work/$name-dfloat11" "$work/$name-bf16" 0 \
            2>&1 | tee "$out/dfloat11-kernel-$name.json" || true
    done
fi
