"""A RAG service's qdrant-client calls, run against `octet serve`.

    python clients/python/qdrant_flow.py --addr HOST:PORT [--api-key KEY] \
        [--http HOST:PORT] [--data ../shared/data] [--queries 500] [--json OUT]

Uses only what `pip install qdrant-client grpcio-tools` provides (grpcio-tools
generates octet.v1's stubs for the side-by-side part). Steps, each checked:

1. create a collection (MiniLM, 384-d cosine; with `--seal N`, an
   `indexing_threshold` that makes Octet seal every N points), upsert
   ../shared/data in batches with payloads;
   the same vectors through octet.v1 into a second collection of the same config;
2. recall@10 against gt.ivecs of `query_points`, of the raw `Search` RPC, and of
   octet.v1's Search, on both collections, plus queries per second of each path;
3. query_points / search with a keyword filter and a range filter; scroll, count,
   retrieve, set / overwrite / delete payload, delete by id and by filter,
   get_collection, collection_exists, UUID ids, delete_collection;
4. error cases: wrong vector size, unknown collection, malformed filter,
   unsupported features: the gRPC status codes a qdrant-client user expects.

Prints one JSON object of measurements on the last line; exits non-zero on the
first failed check.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
import warnings

import grpc
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as qgrpc
from qdrant_client.conversions.conversion import RestToGrpc

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import generate  # noqa: E402

DIM = 384


def fvecs(path):
    a = np.fromfile(path, "<f4")
    d = a[:1].view("<i4")[0]
    return a.reshape(-1, d + 1)[:, 1:]


def ivecs(path):
    a = np.fromfile(path, "<i4")
    return a.reshape(-1, a[0] + 1)[:, 1:]


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok  {what}")


def expect_code(code, fn, what):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: {e.code()} ({e.details()})")
        return e.details()
    raise SystemExit(f"FAILED: {what}: no error")


def recall(found, gt):
    hits = sum(len(set(f[:10]) & set(g[:10].tolist())) for f, g in zip(found, gt))
    return hits / (10 * len(found))


def wait_sealed(client, name, n, timeout=1800):
    """Waits until every point is in a sealed segment (graph built)."""
    t = time.perf_counter()
    while time.perf_counter() - t < timeout:
        info = client.get_collection(name)
        if info.points_count == n and info.indexed_vectors_count == n:
            print(f"ok  {name}: all {n} points sealed after {time.perf_counter() - t:.1f} s")
            return info
        time.sleep(0.2)
    raise SystemExit(f"FAILED: {name} did not seal in {timeout} s: {info}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--api-key", default=None)
    ap.add_argument(
        "--http",
        default=None,
        help="HOST:PORT of the server's --http-addr: run qdrant-client's version check "
        "(a REST GET /) and fail if it does not pass",
    )
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data"))
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--json", default=None)
    ap.add_argument("--rounds", type=int, default=1, help="timing rounds (paths alternate)")
    ap.add_argument(
        "--seal",
        type=int,
        default=0,
        help="seal (build the HNSW graph) every N points; 0 keeps all 20k in the growing "
        "segment (exact search): sealing 10k points takes minutes in a debug build",
    )
    args = ap.parse_args()
    host, port = args.addr.rsplit(":", 1)

    base = fvecs(os.path.join(args.data, "base.fvecs"))
    queries = fvecs(os.path.join(args.data, "queries.fvecs"))[: args.queries]
    gt = ivecs(os.path.join(args.data, "gt.ivecs"))[: args.queries]
    with open(os.path.join(args.data, "passages.jsonl")) as f:
        passages = [json.loads(line) for line in f]
    n = len(base)
    check(len(passages) == n and base.shape[1] == DIM, f"data: {n} x {DIM}")

    rest = {}
    if args.http:
        # The version check only warns when it fails: make that an error.
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
        rest = dict(port=int(args.http.rsplit(":", 1)[1]), check_compatibility=True)
    client = QdrantClient(
        host=host,
        grpc_port=int(port),
        prefer_grpc=True,
        api_key=args.api_key,
        https=False,
        **(rest or dict(check_compatibility=False)),
    )
    name, ov1 = "qflow", "qflow_octet_v1"
    for c in (name, ov1):
        if client.collection_exists(c):
            client.delete_collection(c)

    # 1. Load through qdrant-client.
    seal = args.seal
    client.create_collection(
        name,
        vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
        hnsw_config=models.HnswConfigDiff(m=16, ef_construct=128),
        optimizers_config=(
            models.OptimizersConfigDiff(indexing_threshold=seal * DIM * 4 // 1024) if seal else None
        ),
    )
    check(client.collection_exists(name), "collection_exists after create")
    client.create_payload_index(name, "source", models.PayloadSchemaType.KEYWORD)
    t = time.perf_counter()
    batch = 1000
    for lo in range(0, n, batch):
        pts = [
            models.PointStruct(
                id=i,
                vector=base[i].tolist(),
                payload={
                    "source": passages[i]["source"],
                    "text": passages[i]["text"],
                    "row": i,
                    "meta": {"len": len(passages[i]["text"])},
                },
            )
            for i in range(lo, min(n, lo + batch))
        ]
        client.upsert(name, points=pts, wait=True)
    upsert_s = time.perf_counter() - t
    info = wait_sealed(client, name, n) if seal else client.get_collection(name)
    check(info.points_count == n, f"get_collection: points_count {n}")
    check(info.config.params.vectors.size == DIM, "get_collection: size")
    check(info.config.params.vectors.distance == models.Distance.COSINE, "get_collection: distance")
    check(info.config.hnsw_config.m == 16, "get_collection: hnsw m")

    # The same vectors and config through octet.v1.
    gen = generate.generate(os.path.join(tempfile.mkdtemp(), "gen"))
    sys.path.insert(0, gen)
    from octet.v1 import collections_pb2 as cpb
    from octet.v1 import collections_pb2_grpc as cgrpc
    from octet.v1 import common_pb2 as common
    from octet.v1 import points_pb2 as ppb
    from octet.v1 import points_pb2_grpc as pgrpc
    from octet.v1 import search_pb2 as spb
    from octet.v1 import search_pb2_grpc as sgrpc

    channel = grpc.insecure_channel(args.addr)
    md = [("api-key", args.api_key)] if args.api_key else []
    cgrpc.CollectionsStub(channel).Create(
        cpb.CreateCollectionRequest(
            name=ov1,
            config=cpb.CollectionConfig(
                dim=DIM, metric=1, hnsw_m=16, ef_construction=128, seal_threshold=seal
            ),
        ),
        metadata=md,
    )
    pstub = pgrpc.PointsStub(channel)
    for lo in range(0, n, batch):
        pstub.Upsert(
            ppb.UpsertRequest(
                collection=ov1,
                points=[
                    common.Point(id=i, vector=base[i].tolist(), payload_json=json.dumps({"row": i}))
                    for i in range(lo, min(n, lo + batch))
                ],
            ),
            metadata=md,
        )
    if seal:
        wait_sealed(client, ov1, n)
    sstub = sgrpc.SearchStub(channel)

    # 2. Recall and speed, path by path.
    qlist = [q.tolist() for q in queries]

    def via_query(coll, qlist):
        return [
            [p.id for p in client.query_points(coll, query=q, limit=10).points] for q in qlist
        ]

    def via_raw_query(coll, qlist):
        req = [
            qgrpc.QueryPoints(
                collection_name=coll,
                query=qgrpc.Query(nearest=qgrpc.VectorInput(dense=qgrpc.DenseVector(data=q))),
                limit=10,
            )
            for q in qlist
        ]
        return [
            [p.id.num for p in client.grpc_points.Query(r, metadata=md).result] for r in req
        ]

    def via_raw_search(coll, qlist):
        req = [qgrpc.SearchPoints(collection_name=coll, vector=q, limit=10) for q in qlist]
        return [
            [p.id.num for p in client.grpc_points.Search(r, metadata=md).result] for r in req
        ]

    def via_octet(coll, qlist):
        req = [spb.SearchRequest(collection=coll, vector=q, k=10) for q in qlist]
        return [[p.id for p in sstub.Search(r, metadata=md).points] for r in req]

    out = {"points": n, "queries": len(qlist), "upsert_seconds_qdrant_client": round(upsert_s, 2)}
    results = {}
    paths = [
        ("query_points", via_query),
        ("raw_query", via_raw_query),
        ("raw_search", via_raw_search),
        ("octet_v1", via_octet),
    ]
    # Query by query, every path in turn (the order rotating), so machine load
    # hits each path alike; each round sums a path's time; medians over rounds.
    timings = {}
    for path, fn in paths:
        for coll in (name, ov1):
            fn(coll, qlist[:20])  # warm-up
            results[(path, coll)] = []
    keys = [(path, fn, coll) for path, fn in paths for coll in (name, ov1)]
    for r in range(args.rounds):
        spent = {(path, coll): 0.0 for path, _, coll in keys}
        for i, q in enumerate(qlist):
            shift = i % len(keys)
            for path, fn, coll in keys[shift:] + keys[:shift]:
                t = time.perf_counter()
                ids = fn(coll, [q])[0]
                spent[(path, coll)] += time.perf_counter() - t
                if r == 0:
                    results[(path, coll)].append(ids)
        for k, v in spent.items():
            timings.setdefault(k, []).append(v)
    for path, _ in paths:
        for coll in (name, ov1):
            dt = float(np.median(timings[(path, coll)]))
            out[f"recall@10 {path} on {coll}"] = round(recall(results[(path, coll)], gt), 4)
            out[f"qps {path} on {coll}"] = round(len(qlist) / dt, 1)
    for path in ("query_points", "raw_query", "raw_search"):
        out[f"{path} / octet_v1 qps"] = round(out[f"qps {path} on {ov1}"] / out[f"qps octet_v1 on {ov1}"], 3)
    for coll in (name, ov1):
        same = all(
            results[(p, coll)] == results[("octet_v1", coll)]
            for p in ("query_points", "raw_query", "raw_search")
        )
        check(same, f"{coll}: query_points, Query, Search and octet.v1 Search return the same ids")
    r_q, r_o = out[f"recall@10 query_points on {name}"], out[f"recall@10 octet_v1 on {ov1}"]
    check(abs(r_q - r_o) <= 0.01, f"recall@10 qdrant-loaded {r_q} vs octet.v1-loaded {r_o}")
    check(r_q >= 0.9, f"recall@10 {r_q} >= 0.9")

    # 3. Filters, scroll, count, retrieve, payload updates, deletes.
    sources = [p["source"] for p in passages]
    common_src = max(set(sources), key=sources.count)
    kw = models.Filter(
        must=[models.FieldCondition(key="source", match=models.MatchValue(value=common_src))]
    )
    rng = models.Filter(must=[models.FieldCondition(key="row", range=models.Range(gte=100, lt=5000))])
    nested = models.Filter(
        must=[models.FieldCondition(key="meta.len", range=models.Range(gt=500))],
        must_not=[models.FieldCondition(key="source", match=models.MatchValue(value=common_src))],
    )
    want = {
        "keyword": sum(s == common_src for s in sources),
        "range": 4900,
        "nested": sum(len(p["text"]) > 500 and p["source"] != common_src for p in passages),
    }
    for label, flt in [("keyword", kw), ("range", rng), ("nested", nested)]:
        check(client.count(name, count_filter=flt).count == want[label], f"count {label} filter = {want[label]}")
        hits = client.query_points(name, query=qlist[0], query_filter=flt, limit=10, with_payload=True).points
        check(len(hits) == 10, f"query_points {label} filter: 10 hits")
        ok = all(
            (label != "keyword" or h.payload["source"] == common_src)
            and (label != "range" or 100 <= h.payload["row"] < 5000)
            and (label != "nested" or (h.payload["meta"]["len"] > 500 and h.payload["source"] != common_src))
            for h in hits
        )
        check(ok, f"query_points {label} filter: every hit passes")
        raw = client.grpc_points.Search(
            qgrpc.SearchPoints(
                collection_name=name,
                vector=qlist[0],
                limit=10,
                filter=RestToGrpc.convert_filter(flt),
            ),
            metadata=md,
        )
        check([p.id.num for p in raw.result] == [h.id for h in hits], f"Search RPC with the {label} filter: same hits")
    exact_gt = [int(i) for i in np.argsort(-(base @ queries[0]))]
    fil_gt = [i for i in exact_gt if sources[i] == common_src][:10]
    fil = [h.id for h in client.query_points(name, query=qlist[0], query_filter=kw, limit=10).points]
    check(len(set(fil) & set(fil_gt)) >= 8, f"keyword-filtered top-10 overlaps exact: {len(set(fil) & set(fil_gt))}/10")

    seen, offset = 0, None
    while True:
        page, offset = client.scroll(name, scroll_filter=rng, limit=1000, offset=offset, with_payload=False)
        seen += len(page)
        if offset is None:
            break
    check(seen == 4900, f"scroll through the range filter: {seen} points")
    got = client.retrieve(name, ids=[3, 7, n + 5], with_payload=True, with_vectors=True)
    check([p.id for p in got] == [3, 7], "retrieve returns existing ids in order")
    check(got[0].payload["text"] == passages[3]["text"], "retrieve: payload text")
    check(np.allclose(got[0].vector, base[3], atol=0.02), "retrieve: vector")

    client.set_payload(name, payload={"tag": "gold"}, points=[3, 7], wait=True)
    tag = models.Filter(must=[models.FieldCondition(key="tag", match=models.MatchValue(value="gold"))])
    check(client.count(name, count_filter=tag).count == 2, "set_payload by ids")
    client.set_payload(name, payload={"tag": "gold"}, points=models.Filter(must=[models.HasIdCondition(has_id=[11])]), wait=True)
    check(client.count(name, count_filter=tag).count == 3, "set_payload by has_id filter")
    client.overwrite_payload(name, payload={"only": 1}, points=[7], wait=True)
    check(client.retrieve(name, ids=[7])[0].payload == {"only": 1}, "overwrite_payload")
    client.delete_payload(name, keys=["tag"], points=[3], wait=True)
    check("tag" not in client.retrieve(name, ids=[3])[0].payload, "delete_payload")
    check(client.retrieve(name, ids=[3])[0].payload["source"] == sources[3], "delete_payload keeps the rest")

    client.delete(name, points_selector=models.PointIdsList(points=[3, 7]), wait=True)
    check(client.count(name).count == n - 2, "delete by ids")
    client.delete(name, points_selector=models.FilterSelector(filter=rng), wait=True)
    left = client.count(name).count
    check(left == n - 2 - 4900, f"delete by filter: {left} left")  # 3 and 7 are below the range
    check(client.count(name, count_filter=rng).count == 0, "nothing left in the deleted range")
    check(client.get_collection(name).points_count == left, "get_collection points_count")

    # UUID ids round-trip beside integers; has_id, is_empty, is_null, except.
    small = "qflow_small"
    client.create_collection(small, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    u1, u2 = str(uuid.uuid4()), str(uuid.uuid4())
    client.upsert(
        small,
        points=[
            models.PointStruct(id=u1, vector=[1, 0, 0, 0], payload={"k": "a", "n": None}),
            models.PointStruct(id=u2, vector=[0, 1, 0, 0], payload={"k": ["b", "c"], "e": []}),
            models.PointStruct(id=5, vector=[0, 0, 1, 0], payload={"k": "c"}),
        ],
        wait=True,
    )
    ids = {str(p.id) for p in client.scroll(small, limit=10)[0]}
    check(ids == {u1, u2, "5"}, f"scroll returns UUID and integer ids: {ids}")
    top = client.query_points(small, query=[0.9, 0.1, 0, 0], limit=1).points
    check(str(top[0].id) == u1 and top[0].payload == {"k": "a", "n": None}, "query_points returns the UUID and its payload")
    top = client.query_points(small, query=[0.9, 0.1, 0, 0], limit=1, with_payload=False).points
    check(str(top[0].id) == u1 and not top[0].payload, "query_points without payload still returns the UUID")
    check(str(client.retrieve(small, ids=[u2])[0].id) == u2, "retrieve by UUID")

    def cnt(**kw):
        return client.count(small, count_filter=models.Filter(**kw)).count

    check(cnt(must=[models.HasIdCondition(has_id=[u1, 5])]) == 2, "has_id with a UUID and an integer")
    check(cnt(must_not=[models.HasIdCondition(has_id=[u1])]) == 2, "must_not has_id with a UUID")
    on_v1 = client.count(ov1, count_filter=models.Filter(must=[models.HasIdCondition(has_id=[1, 2, 3, 10**9])])).count
    check(on_v1 == 3, f"has_id sees points written through octet.v1 ({on_v1})")
    check(cnt(must=[models.IsNullCondition(is_null=models.PayloadField(key="n"))]) == 1, "is_null")
    check(cnt(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="e"))]) == 3, "is_empty (empty array or missing)")
    check(cnt(must=[models.IsEmptyCondition(is_empty=models.PayloadField(key="k"))]) == 0, "is_empty on a filled key")
    check(cnt(must=[models.FieldCondition(key="k", match=models.MatchExcept(**{"except": ["a", "c"]}))]) == 1, "match except keywords")
    check(cnt(must=[models.FieldCondition(key="k", match=models.MatchAny(any=["a", "b"]))]) == 2, "match any keywords")
    check(cnt(should=[models.FieldCondition(key="k", match=models.MatchValue(value="a")), models.HasIdCondition(has_id=[5])]) == 2, "should")
    client.delete(small, points_selector=models.PointIdsList(points=[u1]), wait=True)
    check(client.count(small).count == 2, "delete by UUID")

    # 4. Errors.
    C = grpc.StatusCode
    expect_code(C.INVALID_ARGUMENT, lambda: client.upsert(small, points=[models.PointStruct(id=9, vector=[1, 2, 3])]), "wrong vector size on upsert")
    expect_code(C.INVALID_ARGUMENT, lambda: client.query_points(small, query=[1, 2, 3], limit=3), "wrong vector size on query")
    expect_code(C.NOT_FOUND, lambda: client.query_points("no_such_collection", query=[1, 2, 3, 4]), "unknown collection (query)")
    expect_code(C.NOT_FOUND, lambda: client.get_collection("no_such_collection"), "unknown collection (get)")
    bad_filter = qgrpc.Filter(must=[qgrpc.Condition(field=qgrpc.FieldCondition(key="k"))])
    expect_code(C.INVALID_ARGUMENT, lambda: client.grpc_points.Count(qgrpc.CountPoints(collection_name=small, filter=bad_filter), metadata=md), "malformed filter (field condition without a condition)")
    geo = models.Filter(must=[models.FieldCondition(key="loc", geo_radius=models.GeoRadius(center=models.GeoPoint(lon=0, lat=0), radius=1.0))])
    msg = expect_code(C.UNIMPLEMENTED, lambda: client.count(small, count_filter=geo), "geo filter is unsupported")
    check("geo_radius" in msg, "the message names geo_radius")
    expect_code(C.UNIMPLEMENTED, lambda: client.create_collection("named", vectors_config={"a": models.VectorParams(size=4, distance=models.Distance.DOT)}), "named vectors are unsupported")
    expect_code(C.UNIMPLEMENTED, lambda: client.query_points(small, query=models.FusionQuery(fusion=models.Fusion.RRF), prefetch=[models.Prefetch(query=[1, 0, 0, 0])]), "prefetch / fusion are unsupported")
    expect_code(C.UNIMPLEMENTED, lambda: client.count(small, count_filter=models.Filter(must=[models.FieldCondition(key="k", match=models.MatchText(text="x"))])), "full-text match is unsupported")

    for c in (small, name, ov1):
        client.delete_collection(c)
        check(not client.collection_exists(c), f"delete_collection {c}")
    print(json.dumps(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
