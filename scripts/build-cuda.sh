#!/usr/bin/env bash
# Builds df11 with `--features candle-cuda` (the model runner on candle's
# CUDA backend) without a system CUDA installation: the toolkit is assembled
# from NVIDIA's wheels on PyPI and cached outside the repository, as setup.sh
# does for ptxas. Extra arguments go to `cargo build`.
#
# Needs: python3 with pip, a host C++ compiler for nvcc. candle links cudarc
# with `dynamic-linking`, df11's `cuda` feature with `dynamic-loading`, and
# cudarc refuses both, so this build leaves df11's default features off.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${DF11_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/df11}"
root="$cache/cuda"
wheels=(nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt nvidia-cuda-runtime nvidia-cublas
        nvidia-curand nvidia-cuda-nvrtc nvidia-cuda-cccl)
if [ ! -x "$root/bin/nvcc" ]; then
  mkdir -p "$cache"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp/whl" \
    --platform manylinux2014_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    "${wheels[@]}" >&2
  # Each wheel holds part of a toolkit under nvidia/<part>/{bin,include,lib,nvvm}:
  # merge them into one tree laid out like /usr/local/cuda.
  python3 - "$tmp/whl" "$tmp/root" <<'PY'
import glob, os, shutil, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
for whl in sorted(glob.glob(os.path.join(src, "*.whl"))):
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            parts = info.filename.split("/")
            if len(parts) < 4 or parts[0] != "nvidia" or info.is_dir():
                continue
            out = os.path.join(dst, *parts[2:])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(info) as f, open(out, "wb") as g:
                shutil.copyfileobj(f, g)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(out, mode)
# The wheels ship versioned shared libraries only; linkers look for the bare name.
lib = os.path.join(dst, "lib")
for so in glob.glob(os.path.join(lib, "lib*.so.*")):
    bare = os.path.join(lib, os.path.basename(so).split(".so.")[0] + ".so")
    if not os.path.exists(bare):
        os.symlink(os.path.basename(so), bare)
if os.path.isdir(lib) and not os.path.exists(os.path.join(dst, "lib64")):
    os.symlink("lib", os.path.join(dst, "lib64"))
PY
  rm -rf "$root"
  mv "$tmp/root" "$root"
fi
# candle's kernels are compiled for this compute capability (nvidia-smi is
# asked otherwise, which a build machine may lack); sm_80 is df11's minimum
# too, and its PTX runs on newer GPUs.
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_HOME="$root"
export PATH="$root/bin:$PATH"
export LD_LIBRARY_PATH="$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LIBRARY_PATH="$root/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
nvcc --version | tail -n 1 >&2
# candle links libcuda.so, the driver, which no wheel ships: link against a
# stub with the driver functions cudarc declares (same soname, so at run time
# the real driver is loaded). It lives in the cache only, never in the tree.
stubs="$root/stubs"
if [ ! -e "$stubs/libcuda.so" ]; then
  sys="$(cargo metadata --format-version 1 --no-default-features --features candle-cuda 2>/dev/null | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "cudarc":
        print(os.path.join(os.path.dirname(p["manifest_path"]), "src/driver/sys/mod.rs"))
        break')"
  mkdir -p "$stubs"
  grep -o 'fn cu[A-Za-z0-9_]*(' "$sys" | sort -u | sed 's/^fn \(.*\)($/void \1(void) {}/' > "$stubs/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so.1" "$stubs/cuda_stub.c"
  ln -sf libcuda.so.1 "$stubs/libcuda.so"
fi
export LIBRARY_PATH="$stubs:$LIBRARY_PATH"
# Without default features: df11's `cuda` loads the driver at run time, which
# cudarc cannot combine with candle's linking; `candle-cuda` brings the decoder.
cargo build --release --no-default-features --features candle-cuda "$@"
