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
