#!/bin/bash
# Run on the GPU host (no Rust toolchain there): unpack the `octet` binary that
# scripts/build_cuda.sh built and packed, load budgets of the carried SmolLM2-135M
# prefix on the GPU, compare with the CPU rebuild, and write the results to $OUT.
#
#   MODEL    the .octet file or prefix (default dist/cuda/smollm2-135m.prefix.octet)
#   BUDGETS  comma-separated byte budgets, each within the carried prefix
#   OUT      results folder: gpu_check.json, gpu_check.log, nvidia-smi.txt
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/octet-gpu-check}
MODEL=${MODEL:-dist/cuda/smollm2-135m.prefix.octet}
BUDGETS=${BUDGETS:-34MB,39MB,44MB}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/nvidia/lib64:${LD_LIBRARY_PATH:-}
export CUDA_CACHE_PATH=${CUDA_CACHE_PATH:-/tmp/octet-cuda-cache}

BIN_DIR=$(mktemp -d)
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
"$BIN_DIR/octet" weights gpu-check "$MODEL" --budgets "$BUDGETS" --bench \
  --json "$OUT/gpu_check.json" > "$OUT/gpu_check.stdout" 2> "$OUT/gpu_check.log"
rc=$?
set -e
cat "$OUT/gpu_check.log"
echo "gpu-check exit status $rc"
exit $rc
