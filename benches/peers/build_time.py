#!/usr/bin/env python3
"""Interleaved build-time comparison: octet's seal (fit the codec, encode, build the
HNSW graph, write and verify the segment) against faiss HNSW32_SQ8's train + add, on
the same vectors and the same number of threads, alternating within one run so
machine load hits both alike. Prints each method's median seconds and the median of
the per-round ratios (octet / faiss; below 1 means octet builds faster).

    python3 benches/peers/build_time.py --venv /tmp/octet-peers-venv \
        --octet target/release/octet --base ../shared/data/base.fvecs \
        --configs i8,transform96/i8 --threads 1,2 --rounds 3

Octet: `octet bench --configs CONFIG --threads T` on the base vectors (one query, one
pass: only its `seal_s` is read). faiss: IndexHNSWSQ(QT_8bit, M 32, efConstruction
128, inner product) on the normalised vectors, `omp_set_num_threads(T)`.
Standard library plus numpy and faiss-cpu (`--venv DIR` as in interleave.py).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from interleave import ensure_venv  # noqa: E402


def octet_seal(octet, base, config, threads, extra=()):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "bench.json")
        cmd = [octet, "bench", "--base", base, "--queries", base, "--max-queries", "1",
               "--configs", config, "--ef", "16", "--reps", "1", "--threads", str(threads),
               "--quiet", "--json", out] + list(extra)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return json.load(f)["results"][0]["seal_s"]


def faiss_build(faiss, x, threads, m, efc):
    faiss.omp_set_num_threads(threads)
    idx = faiss.IndexHNSWSQ(x.shape[1], faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = efc
    t = time.perf_counter()
    idx.train(x)
    idx.add(x)
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--venv")
    ap.add_argument("--octet", required=True)
    ap.add_argument("--base", required=True)
    ap.add_argument("--configs", default="i8,transform96/i8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--faiss-m", type=int, default=32)
    ap.add_argument("--faiss-efc", type=int, default=128)
    ap.add_argument("octet_args", nargs="*", help="extra `octet bench` flags (after --), e.g. -- --m 24")
    args = ap.parse_args()
    if args.venv:
        ensure_venv(args.venv, __file__)
    import faiss
    import numpy as np

    raw = np.fromfile(args.base, "<f4")
    dim = int(raw[:1].view("<i4")[0])
    x = raw.reshape(-1, dim + 1)[:, 1:].copy()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    configs = args.configs.split(",")
    threads = [int(t) for t in args.threads.split(",")]
    times = {(c, t): [] for c in configs + ["faiss"] for t in threads}
    for r in range(args.rounds):
        for t in threads:
            f = faiss_build(faiss, x, t, args.faiss_m, args.faiss_efc)
            times[("faiss", t)].append(f)
            line = [f"round {r + 1}, {t} thread(s): faiss {f:.2f} s"]
            for c in configs:
                s = octet_seal(args.octet, args.base, c, t, args.octet_args)
                times[(c, t)].append(s)
                line.append(f"octet {c} {s:.2f} s")
            print(", ".join(line), flush=True)
    print()
    print(f"{x.shape[0]} x {dim}, {args.rounds} alternating rounds; faiss HNSW{args.faiss_m}_SQ8 "
          f"efConstruction {args.faiss_efc}; octet's seal includes the codec fit and writing the segment")
    print()
    print("| method | threads | build s (median) | x faiss time (median of rounds) |")
    print("|---|---:|---:|---:|")
    for t in threads:
        fa = times[("faiss", t)]
        print(f"| faiss HNSW{args.faiss_m}_SQ8 | {t} | {statistics.median(fa):.2f} | 1.00 |")
        for c in configs:
            s = times[(c, t)]
            ratios = [a / b for a, b in zip(s, fa)]
            print(f"| octet {c} | {t} | {statistics.median(s):.2f} | {statistics.median(ratios):.2f} |")


if __name__ == "__main__":
    main()
