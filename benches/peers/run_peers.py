#!/usr/bin/env python3
"""Peers of `octet bench` on the same vectors: faiss-cpu (HNSW32 flat, HNSW32 SQ8),
usearch (e4m3, i8) and hnswlib (f32).

Measures, per index and per ef: recall@k against the same exact f32 neighbours
octet bench uses (brute force over the base, or --gt), queries per second on one
thread and on all threads (median of --reps batch searches), build time, and bytes
per vector (the serialized index size / n, plus each library's own split into codes
and graph where it exposes one). Writes JSON.

    python3 benches/peers/run_peers.py --base ../shared/data/base.fvecs \
        --queries ../shared/data/queries.fvecs --json peers.json

Run it inside a virtual environment with the peers installed, or pass --venv DIR to
create one there (pip installs faiss-cpu, usearch, hnswlib and numpy) and re-run the
script with it. A peer that fails to install or import is skipped with a message.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

PACKAGES = ["numpy", "faiss-cpu", "usearch", "hnswlib"]


def ensure_venv(venv):
    """Creates `venv` (once), installs the peers into it and re-executes this script there."""
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    if not os.path.exists(py):
        print(f"creating {venv}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    for pkg in PACKAGES:
        probe = pkg.replace("-cpu", "")
        if subprocess.run([py, "-c", f"import {probe}"], capture_output=True).returncode == 0:
            continue
        print(f"pip install {pkg}", file=sys.stderr)
        r = subprocess.run([py, "-m", "pip", "install", "-q", pkg])
        if r.returncode != 0:
            print(f"warning: {pkg} did not install; it will be skipped", file=sys.stderr)
    args = [a for a in sys.argv[1:]]
    os.execv(py, [py, os.path.abspath(__file__)] + args)


def read_vecs(path, dtype, dim=None):
    import numpy as np

    raw = np.fromfile(path, dtype="<i4")
    if raw.size == 0:
        sys.exit(f"error: {path}: empty file")
    d = int(raw[0])
    if d <= 0 or raw.size % (d + 1) != 0:
        sys.exit(f"error: {path}: not a TEXMEX .{'f' if dtype == '<f4' else 'i'}vecs file (dimension {d}, {raw.size * 4} bytes)")
    rows = raw.reshape(-1, d + 1)
    if (rows[:, 0] != d).any():
        sys.exit(f"error: {path}: rows of different dimensions")
    if dim is not None and d != dim:
        sys.exit(f"error: {path}: dimension {d}, expected {dim}")
    return rows[:, 1:].copy().view(dtype) if dtype == "<f4" else rows[:, 1:].copy()


def exact_neighbours(base, queries, k):
    import numpy as np

    out = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), 256):
        s = queries[i : i + 256] @ base.T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
        out[i : i + 256] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found, truth, k):
    hits = sum(len(set(map(int, f[:k])) & set(map(int, t[:k]))) for f, t in zip(found, truth))
    return hits / (len(truth) * k)


def timed(fn, reps):
    times = []
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return out, times


def file_size(save):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "index")
        save(path)
        return os.path.getsize(path)


class Faiss:
    def __init__(self, kind, m, efc):
        import faiss

        self.faiss = faiss
        self.kind, self.m, self.efc = kind, m, efc
        self.name = f"faiss HNSW{m}" + ("_SQ8" if kind == "sq8" else " flat")

    def build(self, base):
        f = self.faiss
        d = base.shape[1]
        if self.kind == "sq8":
            idx = f.IndexHNSWSQ(d, f.ScalarQuantizer.QT_8bit, self.m, f.METRIC_INNER_PRODUCT)
        else:
            idx = f.IndexHNSWFlat(d, self.m, f.METRIC_INNER_PRODUCT)
        idx.hnsw.efConstruction = self.efc
        idx.train(base)
        idx.add(base)
        self.idx = idx

    def set_threads(self, t):
        self.faiss.omp_set_num_threads(t)

    def search(self, queries, k, ef):
        self.idx.hnsw.efSearch = ef
        return self.idx.search(queries, k)[1]

    def sizes(self, n):
        f = self.faiss
        total = f.serialize_index(self.idx).nbytes
        h = self.idx.hnsw
        graph = sum(
            f.vector_to_array(v).nbytes for v in (h.neighbors, h.offsets, h.levels)
        )
        codes = self.idx.storage.sa_code_size() * n
        return {"total": total / n, "codes": codes / n, "graph": graph / n}


class USearch:
    def __init__(self, dtype, m, efc):
        self.dtype, self.m, self.efc = dtype, m, efc
        self.name = f"usearch {dtype} (M={m})"

    def build(self, base):
        from usearch.index import Index

        self.idx = Index(
            ndim=base.shape[1], metric="ip", dtype=self.dtype,
            connectivity=self.m, expansion_add=self.efc,
        )
        self.idx.add(list(range(len(base))), base, threads=os.cpu_count())
        self.threads = 1

    def set_threads(self, t):
        self.threads = t

    def search(self, queries, k, ef):
        self.idx.expansion_search = ef
        return self.idx.search(queries, k, threads=self.threads).keys

    def sizes(self, n):
        total = file_size(self.idx.save)
        return {"total": total / n, "memory_usage": self.idx.memory_usage / n}


class Hnswlib:
    def __init__(self, m, efc):
        self.m, self.efc = m, efc
        self.name = f"hnswlib f32 (M={m})"

    def build(self, base):
        import hnswlib

        self.idx = hnswlib.Index(space="ip", dim=base.shape[1])
        self.idx.init_index(max_elements=len(base), ef_construction=self.efc, M=self.m)
        self.idx.set_num_threads(os.cpu_count())
        self.idx.add_items(base, list(range(len(base))))

    def set_threads(self, t):
        self.idx.set_num_threads(t)

    def search(self, queries, k, ef):
        self.idx.set_ef(max(ef, k))
        return self.idx.knn_query(queries, k=k)[0]

    def sizes(self, n):
        return {"total": file_size(self.idx.save_index) / n}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--gt", help=".ivecs exact neighbours (default: brute force)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--ef", default="16,32,64,128,256,512")
    p.add_argument("--ef-construction", type=int, default=128)
    p.add_argument("--m", type=int, default=16, help="M of usearch and hnswlib (faiss runs HNSW32 and HNSW16)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--limit", type=int)
    p.add_argument("--max-queries", type=int)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--peers", default="faiss-hnsw32-flat,faiss-hnsw32-sq8,faiss-hnsw16-sq8,usearch-e4m3,usearch-i8,hnswlib-f32")
    p.add_argument("--venv", help="create/use this virtual environment for the peers")
    p.add_argument("--json", required=True)
    a = p.parse_args()
    if a.venv:
        ensure_venv(os.path.abspath(a.venv))
    import numpy as np

    base = read_vecs(a.base, "<f4")
    if a.limit:
        base = base[: a.limit]
    queries = read_vecs(a.queries, "<f4", base.shape[1])
    if a.max_queries:
        queries = queries[: a.max_queries]
    for v in (base, queries):
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30)
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    n, k = len(base), a.k
    if a.gt:
        truth = read_vecs(a.gt, "<i4")[: len(queries), :k]
        if truth.shape[0] < len(queries) or truth.shape[1] < k or truth.max() >= n:
            sys.exit(f"error: {a.gt}: does not match {len(queries)} queries, k {k}, {n} base vectors")
        gt_source = a.gt
    else:
        truth = exact_neighbours(base, queries, k)
        gt_source = "exact f32 brute force"
    efs = [int(e) for e in a.ef.split(",")]

    makers = {
        "faiss-hnsw32-flat": lambda: Faiss("flat", 32, a.ef_construction),
        "faiss-hnsw32-sq8": lambda: Faiss("sq8", 32, a.ef_construction),
        "faiss-hnsw16-sq8": lambda: Faiss("sq8", 16, a.ef_construction),
        "usearch-e4m3": lambda: USearch("e4m3", a.m, a.ef_construction),
        "usearch-i8": lambda: USearch("i8", a.m, a.ef_construction),
        "hnswlib-f32": lambda: Hnswlib(a.m, a.ef_construction),
    }
    results = []
    for key in a.peers.split(","):
        if key not in makers:
            sys.exit(f"error: --peers: unknown peer {key!r}; known: {', '.join(makers)}")
        try:
            peer = makers[key]()
        except ImportError as e:
            print(f"skipping {key}: {e}", file=sys.stderr)
            continue
        try:
            t = time.perf_counter()
            peer.build(base)
            build_s = time.perf_counter() - t
        except Exception as e:  # a peer's build error must not lose the others' results
            print(f"skipping {key}: build failed: {e}", file=sys.stderr)
            continue
        sizes = peer.sizes(n)
        print(f"{peer.name}: built in {build_s:.2f} s, {sizes['total']:.1f} bytes/vector", file=sys.stderr)
        runs = []
        for ef in efs:
            peer.set_threads(a.threads)
            found = peer.search(queries, k, ef)  # warm-up and recall
            r = recall(found, truth, k)
            _, all_t = timed(lambda: peer.search(queries, k, ef), a.reps)
            peer.set_threads(1)
            _, one_t = timed(lambda: peer.search(queries, k, ef), a.reps)
            one = [len(queries) / t for t in one_t]
            allq = [len(queries) / t for t in all_t]
            runs.append({
                "ef": ef, "recall": r,
                "qps_1t": statistics.median(one), "qps_all": statistics.median(allq),
                "qps_1t_reps": one, "qps_all_reps": allq,
            })
            print(f"  ef {ef:>4}: recall@{k} {r:.4f}, {runs[-1]['qps_1t']:.0f} QPS 1 thread, "
                  f"{runs[-1]['qps_all']:.0f} QPS {a.threads} threads", file=sys.stderr)
        results.append({"peer": key, "name": peer.name, "build_s": build_s,
                        "bytes_per_vector": sizes, "runs": runs})
    versions = {}
    for mod in ("numpy", "faiss", "usearch", "hnswlib"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except ImportError:
            versions[mod] = None
    doc = {"base": a.base, "queries": a.queries, "n_base": n, "n_queries": len(queries),
           "dim": base.shape[1], "k": k, "ground_truth": gt_source, "threads": a.threads,
           "reps": a.reps, "ef_construction": a.ef_construction, "versions": versions,
           "search": "batch search of all queries per timing; 1 thread via omp_set_num_threads / threads=1 / set_num_threads",
           "results": results}
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)


if __name__ == "__main__":
    main()
