#!/bin/bash
# Run on the GPU host (no Rust toolchain there): unpack the `octet` binary that
# scripts/build_cuda.sh built and packed, load budgets of the carried SmolLM2-135M
# prefix (a rescaled nested palette file, format v4) on the GPU, compare with the CPU
# rebuild, do the same at every budget of a small synthetic file holding every
# encoding, and write the results to $OUT. Exits non-zero when a GPU tensor differs
# from the CPU rebuild beyond the tolerance or a forward pass picks another token.
#
#   MODEL    the .octet file or prefix (default dist/cuda/smollm2-135m-v4.prefix.octet)
#   BUDGETS  comma-separated byte budgets, each within the carried prefix (default:
#            the smallest, 48,142,528 bytes with no refinement step, then 50, 51 and
#            52 MB: 27, 46 and 66 of 840 steps)
#   OUT      results folder: gpu_check.json (the report), gpu_check.log (one line per
#            budget, the verdict), gpu_check.stdout, inspect.txt, inputs.txt,
#            nvidia-smi.txt
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/octet-gpu-check}
MODEL=${MODEL:-dist/cuda/smollm2-135m-v4.prefix.octet}
BUDGETS=${BUDGETS:-48142528,50MB,51MB,52MB}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-/tmp/octet-cuda-cache}

BIN_DIR=$(mktemp -d)
trap 'rm -rf "$BIN_DIR"' EXIT
if command -v xz >/dev/null; then
  xz -dc dist/cuda/octet.xz > "$BIN_DIR/octet"
else
  python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],"wb"))' \
    dist/cuda/octet.xz "$BIN_DIR/octet"
fi
chmod +x "$BIN_DIR/octet"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
ls -l "$MODEL" dist/cuda/ > "$OUT/inputs.txt"
"$BIN_DIR/octet" weights inspect "$MODEL" > "$OUT/inspect.txt" 2>&1 || true

set +e
timeout "${CHECK_TIMEOUT:-300}" "$BIN_DIR/octet" weights gpu-check "$MODEL" --budgets "$BUDGETS" --synthetic --bench \
  --json "$OUT/gpu_check.json" > "$OUT/gpu_check.stdout" 2> "$OUT/gpu_check.log"
rc=$?
set -e
cat "$OUT/gpu_check.log"
echo "gpu-check exit status $rc"
exit $rc
