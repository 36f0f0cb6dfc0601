#!/usr/bin/env python3
"""Cut the committed test fixture out of the real MiniLM embeddings.

Writes tests/data/minilm-base-1k.fvecs (1,000 base vectors), minilm-queries-100.fvecs
(100 queries) and minilm-gt-100.ivecs (each query's exact top-100 among those 1,000,
by dot product in float64, ties to the lower row), picked with a fixed seed from
../shared/data (see its README). Pure Python, no numpy, so it runs anywhere.

Usage: python3 scripts/make_fixture.py [SRC_DIR] [OUT_DIR]
"""
import random
import struct
import sys
from pathlib import Path

SRC = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data")
OUT = Path(sys.argv[2] if len(sys.argv) > 2 else "tests/data")
N_BASE, N_QUERIES, K, SEED = 1000, 100, 100, 20261127


def read_fvecs(path):
    raw = path.read_bytes()
    dim = struct.unpack_from("<i", raw, 0)[0]
    row = 4 * (dim + 1)
    return [list(struct.unpack_from(f"<{dim}f", raw, r * row + 4)) for r in range(len(raw) // row)]


def write_rows(path, rows, fmt):
    with open(path, "wb") as f:
        for r in rows:
            f.write(struct.pack("<i", len(r)))
            f.write(struct.pack(f"<{len(r)}{fmt}", *r))


rng = random.Random(SEED)
base_all = read_fvecs(SRC / "base.fvecs")
queries_all = read_fvecs(SRC / "queries.fvecs")
base = [base_all[i] for i in sorted(rng.sample(range(len(base_all)), N_BASE))]
queries = [queries_all[i] for i in sorted(rng.sample(range(len(queries_all)), N_QUERIES))]
gt = []
for q in queries:
    scores = [(-sum(a * b for a, b in zip(q, x)), i) for i, x in enumerate(base)]
    scores.sort()
    gt.append([i for _, i in scores[:K]])
OUT.mkdir(parents=True, exist_ok=True)
write_rows(OUT / "minilm-base-1k.fvecs", base, "f")
write_rows(OUT / "minilm-queries-100.fvecs", queries, "f")
write_rows(OUT / "minilm-gt-100.ivecs", gt, "i")
print(f"wrote {len(base)} base, {len(queries)} queries, top-{K} ground truth to {OUT}")
