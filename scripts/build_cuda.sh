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

# The model for scripts/gpu_check.sh: SmolLM2-135M as a fit-4 rescaled nested palette
# (format v4) from `octet weights palette` (README, "Adaptive file: build time and load
# time"), its f16 embedding re-encoded as a 4-bit palette (the f16 one alone, 56.6 MB,
# would not fit the 64 MiB the GPU host receives; every nested palette stays byte for
# byte; 3 bits would leave room for more steps but takes the tied embedding's
# perplexity from 1.4e3 to 1.3e4), cut to the prefix of the largest budget within $CUT
# (52 MB, 66 of 840 steps, so that it and octet.xz, 11.4 MB, stay near 60 MiB): budgets
# from the smallest (48,142,528 bytes, no refinement step) load from it exactly as from
# the whole file.
SMOL=${SMOL_OCTET:-/tmp/smol-v4.octet}
CUT=${CUT:-52MB}
if [ -f "$SMOL" ]; then
  STUB=$(mktemp -d)
  # The repack never touches the GPU; the link-time stub only satisfies the loader.
  ln -s "$CUDA_HOME/lib/stubs/libcuda.so" "$STUB/libcuda.so.1"
  LD_LIBRARY_PATH="$STUB:$CUDA_HOME/lib:${LD_LIBRARY_PATH:-}" "$TARGET/release/octet" \
    weights repack "$SMOL" -o dist/cuda/smollm2-135m-v4.prefix.octet \
    --palette embed_tokens --bits 4 --group 256 --cut "$CUT"
  rm -r "$STUB"
  ls -l dist/cuda/
else
  echo "no $SMOL (set SMOL_OCTET): built the binary only"
fi
