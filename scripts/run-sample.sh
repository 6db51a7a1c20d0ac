#!/usr/bin/env bash
# The main job on a sample, from a fresh machine: installs the toolchain,
# builds df11, writes a small synthetic Llama-style checkpoint (sharded, with
# config.json and an index), compresses it, verifies it bit for bit, shows
# the per-tensor ratio against the entropy bound, restores it, verifies the
# restored copy against the original (and, byte for byte, the whole
# directory), does the same with the warp layout
# (the first one, which readers still read) and the lanes layout (faster on
# a CPU, larger),
# runs the benchmark for each layout, and runs the model from its compressed
# checkpoint with per-block decoding (`df11 run`), checking that its logits
# are bit-identical to the bf16 model's.
#
# Usage: scripts/run-sample.sh [WORK_DIR]   (default: target/sample)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
cargo build --release --locked --features candle --bin df11 --example make_checkpoint

work="${1:-target/sample}"
rm -rf "$work"
mkdir -p "$work"
df11=target/release/df11

# 2 layers, hidden size 1024, 2 shards: about 60 MB of bf16 weights.
target/release/examples/make_checkpoint "$work/original" 2 1024 2
"$df11" compress "$work/original" -o "$work/compressed"
"$df11" verify "$work/original" "$work/compressed"
"$df11" inspect "$work/compressed"
"$df11" decompress "$work/compressed" -o "$work/restored"
"$df11" verify "$work/original" "$work/restored"
# Not only the tensors: the whole directory comes back byte for byte (its
# shards, index and config are written as transformers writes them).
diff -r "$work/original" "$work/restored"
# The warp layout (the default before lanes): still written on request and read.
"$df11" compress "$work/original" -o "$work/compressed-warp" --layout warp
"$df11" verify "$work/original" "$work/compressed-warp"
"$df11" decompress "$work/compressed-warp" -o "$work/restored-warp"
"$df11" verify "$work/original" "$work/restored-warp"
diff -r "$work/original" "$work/restored-warp"
# The lanes layout: 8-bit exponents, faster to decode on a CPU, larger.
"$df11" compress "$work/original" -o "$work/compressed-lanes" --layout lanes
"$df11" verify "$work/original" "$work/compressed-lanes"
"$df11" decompress "$work/compressed-lanes" -o "$work/restored-lanes"
"$df11" verify "$work/original" "$work/restored-lanes"
diff -r "$work/original" "$work/restored-lanes"
du -sb "$work/compressed" "$work/compressed-lanes"
"$df11" run "$work/compressed-lanes" --prompt-tokens 1,2,3,4 --max-new-tokens 4 --compare-bf16 "$work/original"
"$df11" bench --synthetic
"$df11" bench --synthetic --layout lanes
"$df11" bench --synthetic --layout warp
# Generate a few tokens from the compressed checkpoint, one block decoded at a
# time, and compare every logit with the original bf16 model (exit 1 if any differs).
"$df11" run "$work/compressed" --prompt-tokens 1,2,3,4 --max-new-tokens 4 --compare-bf16 "$work/original"
