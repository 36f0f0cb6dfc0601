#!/usr/bin/env python3
"""Side-by-side table of `octet bench --json` and `run_peers.py --json` results:
bytes per vector in RAM, best recall@k, and queries per second at matched recall
(interpolated between the two ef values that bracket each target recall, linear in
recall and log QPS), with the ratio to a reference peer (faiss HNSW32_SQ8).

    python3 benches/peers/compare.py --octet octet.json --peers peers.json \
        [--targets 0.95,0.97] [--reference faiss-hnsw32-sq8] [--md table.md]

Standard library only.
"""

import argparse
import json
import math
import sys


def at_recall(runs, target, key):
    """QPS (`key`) at `target` recall, or None when no ef reaches it. When even the
    smallest ef exceeds the target, that ef's QPS (a lower bound) is returned."""
    runs = sorted(runs, key=lambda r: r["ef"])
    prev = None
    for r in runs:
        if r["recall"] >= target:
            if prev is None or prev["recall"] >= r["recall"]:
                return r[key]
            f = (target - prev["recall"]) / (r["recall"] - prev["recall"])
            return math.exp(math.log(prev[key]) + f * (math.log(r[key]) - math.log(prev[key])))
        prev = r
    return None


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {path}: {e}")


def rows(octet, peers):
    out = []
    for r in octet["results"]:
        b = r["bytes_per_vector"]
        out.append({"method": f"octet {r['config']}", "key": f"octet:{r['config']}",
                    "ram": b["ram"], "codes": b["codes"], "graph": b["graph"],
                    "rescore": b["rescore"], "runs": r["runs"]})
    for r in peers["results"]:
        b = r["bytes_per_vector"]
        out.append({"method": r["name"], "key": r["peer"], "ram": b["total"],
                    "codes": b.get("codes"), "graph": b.get("graph"), "rescore": 0.0,
                    "runs": r["runs"]})
    return out


def fmt(x, spec):
    return "n/a" if x is None else format(x, spec)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--octet", required=True)
    p.add_argument("--peers", required=True)
    p.add_argument("--targets", default="0.95,0.97")
    p.add_argument("--reference", default="faiss-hnsw32-sq8")
    p.add_argument("--md", help="also write the table to this file")
    a = p.parse_args()
    octet, peers = load(a.octet), load(a.peers)
    for key in ("n_base", "n_queries", "k"):
        if octet.get(key) != peers.get(key):
            sys.exit(f"error: the two runs differ in {key}: octet {octet.get(key)}, peers {peers.get(key)}")
    targets = [float(t) for t in a.targets.split(",")]
    table = rows(octet, peers)
    ref = next((r for r in table if r["key"] == a.reference), None)

    head = ["method", "RAM B/vec", "codes", "graph", "rescore (disk)", "best recall"]
    for t in targets:
        head += [f"QPS 1t @{t}", f"x ref", f"QPS {octet['threads']}t @{t}", "x ref"]
    lines = [
        f"{octet['n_base']} base x {octet['n_queries']} queries, dim {octet['dim']}, recall@{octet['k']}; "
        f"reference: {ref['method'] if ref else a.reference + ' (absent)'}; "
        f"QPS interpolated at each target recall; n/a: never reached",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in table:
        best = max(x["recall"] for x in r["runs"])
        cells = [r["method"], fmt(r["ram"], ".0f"), fmt(r["codes"], ".0f"), fmt(r["graph"], ".0f"),
                 fmt(r["rescore"], ".0f") if r["rescore"] else "-", f"{best:.4f}"]
        for t in targets:
            for key in ("qps_1t", "qps_all"):
                q = at_recall(r["runs"], t, key)
                rq = at_recall(ref["runs"], t, key) if ref else None
                cells += [fmt(q, ".0f"), fmt(q / rq if q and rq else None, ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if a.md:
        with open(a.md, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
