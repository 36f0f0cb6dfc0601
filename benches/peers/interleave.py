#!/usr/bin/env python3
"""Interleaved speed comparison: octet and faiss passes alternate on the same queries
inside one run, so machine load (other builds, turbo, noisy neighbours) hits both
alike; the result is the per-round ratio at matched recall, and its median.

    python3 benches/peers/interleave.py --octet target/release/octet \
        --base ../shared/data/base.fvecs --queries ../shared/data/queries.fvecs \
        --gt ../shared/data/gt.ivecs --configs transform96/i8 --rounds 5 \
        [--octet-ef 16,24,32,48,64] [--faiss-ef 16,24,32,48,64,96,128] [--targets 0.97,0.99]
        [--octet-baseline OLD_BINARY] [--baseline-args='--oversampling 3'] [-- EXTRA BENCH FLAGS]

How: `octet bench --passes-on-stdin` builds and seals each configuration, then waits;
this script builds faiss HNSW32_SQ8 (M 32, efConstruction 128, inner product) on the
same normalised vectors, then runs `--rounds` rounds. Each round runs, for every
configuration and ef, one octet pass (every query once, one at a time, one thread,
after an untimed pass) and one faiss pass per ef (one batch search on one thread via
omp_set_num_threads(1), after an untimed pass), alternating octet and faiss. Per
round and target recall, each method's QPS is interpolated between the two ef
values that bracket the target (linear in recall, log in QPS; recall does not
change between rounds); the table gives the median QPS over rounds and the median
of the per-round ratios to faiss.

Bytes per vector in RAM: octet's compact codes + graph (from `octet bench`),
faiss's codes + graph (its HNSW arrays). Standard library plus numpy and faiss-cpu
(`--venv DIR` creates or reuses a virtual environment with them, as run_peers.py).
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def ensure_venv(venv, script=None):
    """Creates `venv` with numpy and faiss-cpu (once) and re-executes `script` (this
    one by default) in it with the same arguments."""
    py = os.path.join(venv, "bin", "python")
    if os.path.realpath(sys.prefix) == os.path.realpath(venv):
        return
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    for pkg in ("numpy", "faiss-cpu"):
        probe = pkg.replace("-cpu", "")
        if subprocess.run([py, "-c", f"import {probe}"], capture_output=True).returncode != 0:
            subprocess.run([py, "-m", "pip", "install", "-q", pkg], check=True)
    os.execv(py, [py, os.path.abspath(script or __file__)] + sys.argv[1:])


def at_recall(points, target):
    """QPS at `target` recall from (recall, qps) points, None when none reaches it.
    Linear in recall, log in QPS between the bracketing points; when the lowest ef is
    already above the target, its QPS (a lower bound)."""
    import math

    points = sorted(points)
    prev = None
    for r, q in points:
        if r >= target:
            if prev is None or prev[0] >= r:
                return q
            f = (target - prev[0]) / (r - prev[0])
            return math.exp(math.log(prev[1]) + f * (math.log(q) - math.log(prev[1])))
        prev = (r, q)
    return None


class Octet:
    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.table = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                sys.exit(f"error: octet bench ended before it was ready (exit {self.proc.wait()})")
            if line.strip() == "ready":
                break
            self.table.append(line)

    def run(self, config, ef):
        self.proc.stdin.write(f"{config} {ef}\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            sys.exit(f"error: octet: {reply['error']}")
        return reply["recall"], reply["qps"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--octet", required=True, help="the octet binary")
    p.add_argument("--octet-baseline", help="a second octet binary (say, main's before a change) whose "
                   "passes alternate with the others; reported as `baseline CONFIG`")
    p.add_argument("--baseline-args", default="",
                   help="`octet bench` flags for the baseline in place of the extra flags after -- "
                   "(say, --baseline-args='--oversampling 3': with `=` when the value starts "
                   "with a dash); the baseline binary defaults to --octet")
    p.add_argument("--base", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--gt", required=True, help=".ivecs exact neighbours")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--configs", default="transform96/i8")
    p.add_argument("--octet-ef", default="16,24,32,48,64,96")
    p.add_argument("--faiss-ef", default="16,24,32,48,64,96,128,192")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--targets", default="0.97,0.99")
    p.add_argument("--m", type=int, default=32, help="faiss HNSW M")
    p.add_argument("--ef-construction", type=int, default=128)
    p.add_argument("--venv", help="create/use this virtual environment for faiss")
    p.add_argument("--json", help="write every pass and the summary here")
    p.add_argument("octet_args", nargs="*", help="extra `octet bench` flags (after --)")
    a = p.parse_args()
    if a.rounds < 3:
        sys.exit("error: --rounds must be at least 3")
    if a.venv:
        ensure_venv(os.path.abspath(a.venv))
    import numpy as np
    from run_peers import Faiss, read_vecs, recall

    configs = a.configs.split(",")
    octet_efs = [int(e) for e in a.octet_ef.split(",")]
    faiss_efs = [int(e) for e in a.faiss_ef.split(",")]
    targets = [float(t) for t in a.targets.split(",")]

    def start(binary, extra):
        return Octet([binary, "bench", "--base", a.base, "--queries", a.queries, "--gt", a.gt,
                      "--k", str(a.k), "--configs", a.configs, "--ef", str(octet_efs[0]),
                      "--reps", "1", "--json", "/dev/null", "--quiet", "--passes-on-stdin"] + extra)

    print("building octet collections (octet bench --passes-on-stdin)", file=sys.stderr)
    # (label, process): the binary under test first, then the baseline if any.
    octets = [("octet", start(a.octet, a.octet_args))]
    if a.octet_baseline or a.baseline_args:
        extra = shlex.split(a.baseline_args) if a.baseline_args else a.octet_args
        octets.append(("baseline", start(a.octet_baseline or a.octet, extra)))
    octet_bytes = {}
    for label, octet in octets:
        for line in octet.table:
            cols = line.split()
            if cols and cols[0] in configs and len(cols) > 4:
                octet_bytes[f"{label} {cols[0]}"] = float(cols[4])

    base = read_vecs(a.base, "<f4")
    queries = read_vecs(a.queries, "<f4", base.shape[1])
    for v in (base, queries):
        v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-30)
    base = np.ascontiguousarray(base, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    truth = read_vecs(a.gt, "<i4")[: len(queries), : a.k]
    print("building faiss HNSW32_SQ8", file=sys.stderr)
    faiss = Faiss("sq8", a.m, a.ef_construction)
    t = time.perf_counter()
    faiss.build(base)
    faiss_build_s = time.perf_counter() - t
    faiss_bytes = faiss.sizes(len(base))
    faiss.set_threads(1)

    def faiss_pass(ef):
        found = faiss.search(queries, a.k, ef)  # untimed, as octet's
        t = time.perf_counter()
        faiss.search(queries, a.k, ef)
        return recall(found, truth, a.k), len(queries) / (time.perf_counter() - t)

    passes = []
    for rnd in range(a.rounds):
        for config in configs:
            for label, octet in octets:
                for ef in octet_efs:
                    r, q = octet.run(config, ef)
                    passes.append({"round": rnd, "method": f"{label} {config}", "ef": ef, "recall": r, "qps": q})
            for ef in faiss_efs:
                r, q = faiss_pass(ef)
                passes.append({"round": rnd, "method": faiss.name, "ef": ef, "recall": r, "qps": q})
        print(f"round {rnd + 1}/{a.rounds} done", file=sys.stderr)
    for _, octet in octets:
        octet.close()

    methods = [f"{label} {c}" for c in configs for label, _ in octets] + [faiss.name]
    summary = []
    for target in targets:
        per_round = {m: [] for m in methods}
        for rnd in range(a.rounds):
            for m in methods:
                pts = [(x["recall"], x["qps"]) for x in passes if x["round"] == rnd and x["method"] == m]
                per_round[m].append(at_recall(pts, target))
        ref = per_round[faiss.name]
        for m in methods:
            qs = per_round[m]
            ok = all(q is not None for q in qs) and all(q is not None for q in ref)
            ratios = [q / r for q, r in zip(qs, ref)] if ok else []
            summary.append({
                "target": target, "method": m,
                "qps_rounds": qs, "qps_median": statistics.median(qs) if ok else None,
                "ratio_rounds": ratios, "ratio_median": statistics.median(ratios) if ratios else None,
            })

    ram = {m: octet_bytes.get(m) for m in methods[:-1]}
    ram[faiss.name] = faiss_bytes["codes"] + faiss_bytes["graph"]
    best = {m: max(x["recall"] for x in passes if x["method"] == m) for m in methods}
    print(f"\n{len(queries)} queries, k {a.k}, {a.rounds} alternating rounds, 1 thread; "
          f"faiss built in {faiss_build_s:.1f} s\n")
    head = "| method | RAM B/vec | best recall |"
    sep = "|---|---:|---:|"
    for t in targets:
        head += f" QPS @{t} (median) | x faiss (median of rounds) |"
        sep += "---:|---:|"
    print(head)
    print(sep)
    for m in methods:
        row = f"| {m} | {ram[m]:.0f} | {best[m]:.4f} |" if ram[m] is not None else f"| {m} | n/a | {best[m]:.4f} |"
        for t in targets:
            s = next(x for x in summary if x["target"] == t and x["method"] == m)
            q = "n/a" if s["qps_median"] is None else f"{s['qps_median']:.0f}"
            r = "n/a" if s["ratio_median"] is None else f"{s['ratio_median']:.2f}"
            row += f" {q} | {r} |"
        print(row)
    print("\nper-round ratios:")
    for s in summary:
        if s["ratio_rounds"]:
            print(f"  @{s['target']} {s['method']}: " + " ".join(f"{r:.2f}" for r in s["ratio_rounds"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rounds": a.rounds, "k": a.k, "n_queries": len(queries), "ram_bytes_per_vector": ram,
                       "faiss_build_s": faiss_build_s, "passes": passes, "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
