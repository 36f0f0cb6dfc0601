#!/bin/bash
# Build the `octet` binary with the `cuda` feature on a machine without a GPU, and pack it
# (stripped, xz) into dist/cuda/ for scripts/gpu_check.sh to run on a GPU host.
#
# The toolkit is assembled from PyPI's CUDA 13.0 wheels by ../shared/gpu/setup_cuda.sh
# (see ../shared/gpu/README.md); the build uses its own target dir because a CUDA build of
# candle in the shared target/ would invalidate everyone else's CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_ROOT_DIR=${CUDA_ROOT_DIR:-/tmp/octet-cuda}
TARGET=${CUDA_TARGET_DIR:-/tmp/octet-cuda-target}
SETUP=${SETUP_CUDA:-../shared/gpu/setup_cuda.sh}

# setup_cuda.sh reads cudarc's sources to generate the libcuda link stub.
cargo fetch
if [ ! -f "$CUDA_ROOT_DIR/env.sh" ] || [ ! -e "$CUDA_ROOT_DIR/cuda/lib/stubs/libcuda.so" ]; then
  ROOT="$CUDA_ROOT_DIR" bash "$SETUP"
fi
# shellcheck disable=SC1091
source "$CUDA_ROOT_DIR/env.sh"
# The stub libcuda.so satisfies the linker only; the GPU host's driver is used at run time.
export LIBRARY_PATH="$CUDA_HOME/lib/stubs:$CUDA_HOME/lib:${LIBRARY_PATH:-}"
CARGO_TARGET_DIR="$TARGET" cargo build --release -p octet-tools --features cuda

mkdir -p dist/cuda
cp "$TARGET/release/octet" dist/cuda/octet
strip dist/cuda/octet
xz -T0 -6 -f dist/cuda/octet
ls -l dist/cuda/octet.xz

# The model for scripts/gpu_check.sh: SmolLM2-135M from `octet weights stack`, its f16
# embedding re-encoded as a 4-bit palette (the f16 one alone, 56.7 MB, would not fit
# the 64 MiB the GPU host receives), cut to the prefix the largest budget checked
# needs (44 MiB covers budgets up to 44MB in either unit). Every budget is a file
# prefix, so the cut file loads those budgets exactly as the whole file would.
SMOL=${SMOL_OCTET:-/tmp/smol16.octet}
if [ -f "$SMOL" ]; then
  STUB=$(mktemp -d)
  # The repack never touches the GPU; the link-time stub only satisfies the loader.
  ln -s "$CUDA_HOME/lib/stubs/libcuda.so" "$STUB/libcuda.so.1"
  LD_LIBRARY_PATH="$STUB:$CUDA_HOME/lib:${LD_LIBRARY_PATH:-}" "$TARGET/release/octet" \
    weights repack "$SMOL" -o /tmp/smollm2-135m.pal4.octet --palette embed_tokens --bits 4 --group 256
  head -c $((44 * 1024 * 1024)) /tmp/smollm2-135m.pal4.octet > dist/cuda/smollm2-135m.prefix.octet
  ls -l dist/cuda/
fi
