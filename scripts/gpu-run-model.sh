#!/usr/bin/env bash
# Runs a Llama-3.1-8B-shaped model (32 layers, random realistic weights) on a
# GPU from df11 weights against bf16, and DFloat11's own DFloat11Model on the
# same shapes, at batch 1. For a GPU machine without a Rust toolchain.
#
# Where Rust is installed, build and stage the binaries and wheels:
#     scripts/build-cuda.sh --bin df11 --example make_checkpoint
#     pip download --no-deps --only-binary=:all: -d .whl dfloat11==0.5.0 accelerate dahuffman==0.4.2
# (`.whl` listed in .git/info/exclude). Then on the GPU machine, from the
# repository root:
#     OUT=/some/log/dir scripts/gpu-run-model.sh [LAYERS] [NEW_TOKENS]
#
# Writes to $OUT: run-df11.json and run-bf16.json (`df11 run --json`, one
# model per process, so that each peak is its own), compare.json (df11
# against bf16 in one process: logits_identical), mem-*.txt (nvidia-smi's
# memory.used every 100 ms while each ran), dfloat11.json (DFloat11Model:
# tokens/s and torch's peak allocation), hf-bf16.json (the bf16 model in
# transformers, DFloat11's own baseline) and summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
layers="${1:-32}"
new="${2:-32}"
out="${OUT:-gpu-run-out}"
work="${DF11_WORK:-/tmp/df11-run-model}"
bin="${DF11_BIN:-target/release/df11}"
make="${DF11_MAKE:-target/release/examples/make_checkpoint}"
mkdir -p "$out" "$work"
for b in "$bin" "$make"; do
    [[ -x "$b" ]] || { echo "gpu-run-model: $b not found (scripts/build-cuda.sh --bin df11 --example make_checkpoint)" >&2; exit 2; }
done
prompt=1,450,7483,310,278,3303,338,263

# Llama-3.1-8B: hidden 4096, MLP 14336, 32 heads, 8 KV heads, vocabulary 128256, untied.
[[ -d "$work/bf16" ]] || "$make" "$work/bf16" "$layers" 4096 4 14336 128256 untied 2>/dev/null
[[ -d "$work/df11" ]] || "$bin" compress "$work/bf16" -o "$work/df11"
[[ -d "$work/dfloat11" ]] || "$bin" compress "$work/bf16" -o "$work/dfloat11" --format dfloat11

# Runs a command while sampling the GPU's memory in use into $out/mem-$1.txt.
sampled() {
    local name="$1"; shift
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/mem-$name.txt" &
    local smi=$!
    local rc=0
    "$@" || rc=$?
    kill "$smi" 2>/dev/null || true
    wait "$smi" 2>/dev/null || true
    return "$rc"
}
peak() { sort -n "$out/mem-$1.txt" 2>/dev/null | tail -n 1; }

nvidia-smi | tee "$out/nvidia-smi.txt"
run=(run --device cuda --prompt-tokens "$prompt" --max-new-tokens "$new" --json)
sampled df11 "$bin" "${run[@]}" "$work/df11" > "$out/run-df11.json"
sampled bf16 "$bin" "${run[@]}" "$work/bf16" > "$out/run-bf16.json"
# Exit status 1 when a logit differs: record it and go on to DFloat11.
compare_rc=0
"$bin" "${run[@]}" "$work/df11" --compare-bf16 "$work/bf16" > "$out/compare.json" || compare_rc=$?

# DFloat11's own loader and kernel, from carried wheels when they are here.
if [[ -d .whl ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
dfl_rc=0
PYTHONUNBUFFERED=1 sampled dfloat11 python3 scripts/dfloat11_run.py "$work/dfloat11" "$prompt" "$new" \
    > "$out/dfloat11.json" 2> "$out/dfloat11.log" || dfl_rc=$?
# The same bf16 model in transformers: DFloat11's slowdown against its own framework.
hf_rc=0
PYTHONUNBUFFERED=1 sampled hf-bf16 python3 scripts/dfloat11_run.py "$work/bf16" "$prompt" "$new" \
    > "$out/hf-bf16.json" 2> "$out/hf-bf16.log" || hf_rc=$?

python3 - "$out" "$compare_rc" "$dfl_rc" "$hf_rc" "$(peak df11)" "$(peak bf16)" "$(peak dfloat11)" "$(peak hf-bf16)" \
    <<'PY' | tee "$out/summary.txt"
import json, os, sys
out, compare_rc, dfl_rc, hf_rc, p_df11, p_bf16, p_dfl, p_hf = sys.argv[1:]
def load(name):
    try:
        with open(os.path.join(out, name)) as f:
            return json.load(f)
    except Exception as e:
        return {"error": str(e)}
d, b, c, f, h = (load(n) for n in ("run-df11.json", "run-bf16.json", "compare.json", "dfloat11.json", "hf-bf16.json"))
print(f"logits identical (df11 vs bf16, every step): {c.get('logits_identical')} (exit {compare_rc})")
print("| weights | tokens/s | time to first token (s) | peak GPU memory used (MiB) | decode per block (ms) |")
print("|---|---:|---:|---:|---:|")
print(f"| bf16, candle | {b.get('tokens_per_s', 0):.2f} | {b.get('ttft_s', 0):.3f} | {p_bf16} | - |")
print(f"| df11, candle | {d.get('tokens_per_s', 0):.2f} | {d.get('ttft_s', 0):.3f} | {p_df11} | {1e3 * d.get('block_decode_s', 0):.2f} |")
print(f"| bf16, transformers (exit {hf_rc}) | {h.get('tokens_per_s', 0):.2f} | {h.get('ttft_s', 0):.3f} | {p_hf} | - |")
print(f"| DFloat11Model, transformers (exit {dfl_rc}) | {f.get('tokens_per_s', 0):.2f} | {f.get('ttft_s', 0):.3f} | {p_dfl} | - |")
if "weight_bytes" in d:
    print(f"df11 resident weights: {d['weight_bytes_resident'] / d['weight_bytes_bf16']:.4f} of bf16 ({d['weight_bytes']})")
if b.get("tokens_per_s") and d.get("tokens_per_s"):
    print(f"df11 time per token / bf16: {b['tokens_per_s'] / d['tokens_per_s']:.3f}")
if h.get("tokens_per_s") and f.get("tokens_per_s"):
    print(f"DFloat11Model time per token / transformers bf16: {h['tokens_per_s'] / f['tokens_per_s']:.3f}")
PY
