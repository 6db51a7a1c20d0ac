#!/usr/bin/env bash
# Installs what building and testing df11 needs, idempotently:
#  * the pinned nightly from rust-toolchain.toml (with rust-src, llvm-tools,
#    clippy, rustfmt), because the GPU kernel is built for nvptx64 with
#    -Zbuild-std and linked with the llvm-tools binaries;
#  * the oldest Rust df11 supports (Cargo.toml's `rust-version`), minimal
#    profile, which the test script builds a dependent crate with;
#  * NVIDIA's PTX assembler, ptxas, taken from the `nvidia-cuda-nvcc` wheel on
#    PyPI (no CUDA installation needed), cached outside the repository. The
#    tests use it to check the PTX for spills and stack use.
# Prints export lines for DF11_PTXAS and DF11_MSRV (that toolchain) on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup toolchain install >&2
msrv="$(sed -n 's/^rust-version = "\(.*\)"$/\1/p' Cargo.toml)"
rustup toolchain install "$msrv" --profile minimal >&2

cache="${DF11_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/df11}"
ptxas="$cache/ptxas"
if [ ! -x "$ptxas" ]; then
  mkdir -p "$cache"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
    --platform manylinux2014_x86_64 nvidia-cuda-nvcc >&2
  python3 - "$tmp" "$ptxas" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "nvidia_cuda_nvcc-*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/bin/ptxas"))
    data = z.read(name)
tmp = sys.argv[2] + ".part"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, sys.argv[2])
PY
fi
"$ptxas" --version | tail -n 1 >&2
echo "export DF11_PTXAS=$ptxas"
echo "export DF11_MSRV=$msrv"
