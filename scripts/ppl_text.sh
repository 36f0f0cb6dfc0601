#!/usr/bin/env bash
# Texts for `octet weights eval` / `octet weights sweep`, cut from the shared
# development passages (shared/data/passages.jsonl: real English paragraphs from
# Debian packages). Never commit what this writes.
#
#   scripts/ppl_text.sh [OUT_DIR]        (default /tmp/ppl)
#
# Writes
#   OUT_DIR/eval.txt   every `python-doc` passage (Python 3.11 documentation prose),
#                      in file order, one blank line between passages (~0.5 MB)
#   OUT_DIR/calib.txt  `fortunes` and `gcide` passages (no python-doc), for --calib,
#                      so calibration and evaluation texts share no passage
# The built-in calibration sample (tools/src/model/calib_text.txt) is in neither.
set -euo pipefail

OUT="${1:-/tmp/ppl}"
HERE="$(cd "$(dirname "$0")" && pwd)"
DATA="${OCTET_PASSAGES:-$HERE/../../shared/data/passages.jsonl}"
[ -f "$DATA" ] || { echo "passages not found at $DATA (set OCTET_PASSAGES)" >&2; exit 1; }
mkdir -p "$OUT"
python3 - "$DATA" "$OUT" <<'PY'
import json, os, sys
data, out = sys.argv[1:]
evals, calib = [], []
with open(data, encoding="utf-8") as f:
    for line in f:
        p = json.loads(line)
        if p["source"] == "python-doc":
            evals.append(p["text"].strip())
        elif p["source"] in ("fortunes", "gcide"):
            calib.append(p["text"].strip())
for name, parts in (("eval.txt", evals), ("calib.txt", calib)):
    path = os.path.join(out, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(parts) + "\n")
    print(f"{path}: {len(parts)} passages, {os.path.getsize(path)} bytes")
PY
