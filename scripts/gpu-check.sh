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
