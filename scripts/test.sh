#!/usr/bin/env bash
# The full test suite, as CI runs it: set-up, formatting, lints, every test,
# df11 as a dependency on its oldest supported Rust, and the packages.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/setup.sh)"
export DF11_REQUIRE_PTXAS=1
# build.rs must build the PTX from gpu/src, and it must match the committed file.
export DF11_REQUIRE_PTX_BUILD=1
cargo fmt --all --check
# `candle` (the model runner) is off by default; CI lints and tests it too.
cargo clippy --workspace --all-targets --locked --features candle -- -D warnings
# Library users who turn the default features (cuda, zstd) off.
cargo clippy -p df11 --no-default-features --all-targets --locked -- -D warnings
# The kernels' nvptx-only code (entry points, intrinsics) as well.
cargo clippy -p df11-gpu --lib --locked --target nvptx64-nvidia-cuda -Zbuild-std=core \
    --target-dir target/nvptx-clippy -- -D warnings
# The API documentation as docs.rs builds it: no broken or private links.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --locked -p df11-host -p df11-gpu -p df11 --features df11/candle
cargo test --workspace --locked --features candle -- --skip ptx_assembles_without_spills_or_stack
# Run on its own so its ptxas report (registers, spills, stack per kernel) is shown.
cargo test --locked --test ptx_check -- --nocapture

# A crate that depends on df11 by path, built with the `rust-version` toolchain
# (no nightly, llvm-tools or CUDA). It starts from the workspace's lock file, so
# it builds the dependency versions tested above.
cp Cargo.lock tests/consumer/Cargo.lock
if ! command -v nvidia-smi >/dev/null; then
    export DF11_CONSUMER_GPU=absent
fi
cargo "+$DF11_MSRV" run --manifest-path tests/consumer/Cargo.toml --target-dir target/consumer

# The packages as they would be published, each built from its own contents:
# df11's has no gpu/ sources, so it embeds the committed PTX from df11-gpu's.
# Cargo unpacks the workspace's own packages into its registry cache and does
# not unpack them again over an older copy of the same version, so a copy
# left by an earlier run (an older API) would be built instead: remove them.
# No df11 package is ever fetched from a registry, so nothing else is lost.
# Builds of those copies are never rebuilt either (a registry package's
# version names its contents), so the check builds in a directory of its
# own and forgets every df11 crate built there before.
rm -rf "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/df11-gpu-0.* "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/df11-host-0.*
rm -rf target/package-check/debug/.fingerprint/df11-* target/package-check/debug/deps/*df11*
cargo package --workspace --locked --allow-dirty --target-dir target/package-check
