#!/usr/bin/env bash
# The full test suite, as CI runs it: set-up, formatting, lints, every test.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
export DF11_REQUIRE_PTXAS=1
cargo fmt --all --check
# `candle` (the model runner) is off by default; CI lints and tests it too.
cargo clippy --workspace --all-targets --locked --features candle -- -D warnings
cargo test --workspace --locked --features candle -- --skip ptx_assembles_without_spills_or_stack
# Run on its own so its ptxas report (registers, spills, stack per kernel) is shown.
cargo test --locked --test ptx_check -- --nocapture
