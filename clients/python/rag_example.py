"""A minimal RAG retrieval loop against a running Octet server.

    python clients/python/rag_example.py --addr 127.0.0.1:6334 [--api-key KEY]

Creates a collection, upserts text chunks with a tenant in their JSON payload,
searches with a tenant filter and prints the texts found. The embeddings here are
toy bag-of-words vectors so the example needs no model; a real service would call
its embedding model (e.g. all-MiniLM-L6-v2, 384-d) instead of `embed`.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import generate  # noqa: E402

DIM = 64

CHUNKS = [
    ("acme", "Octet stores embeddings compressed with a transform codec."),
    ("acme", "HNSW graphs find approximate nearest neighbours quickly."),
    ("acme", "The rescore tier keeps an i8 copy of every vector on disk."),
    ("globex", "Globex quarterly revenue grew by eight percent."),
    ("globex", "HNSW graphs were used in the globex recommendation engine."),
]


def embed(text: str) -> list:
    """A deterministic bag-of-words hash embedding, unit length."""
    v = [0.0] * DIM
    for word in text.lower().replace(".", " ").split():
        h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
        v[h % DIM] += 1.0
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1:6334")
    ap.add_argument("--api-key", default=os.environ.get("OCTET_API_KEY"))
    ap.add_argument("--collection", default="rag_demo")
    args = ap.parse_args()

    out = generate.generate(os.path.join(tempfile.gettempdir(), "octet_py_stubs"))
    sys.path.insert(0, out)
    import grpc
    from octet.v1 import collections_pb2 as cpb
    from octet.v1 import collections_pb2_grpc as cgrpc
    from octet.v1 import common_pb2 as common
    from octet.v1 import points_pb2 as ppb
    from octet.v1 import points_pb2_grpc as pgrpc
    from octet.v1 import search_pb2 as spb
    from octet.v1 import search_pb2_grpc as sgrpc

    md = [("authorization", f"Bearer {args.api_key}")] if args.api_key else []
    channel = grpc.insecure_channel(args.addr)
    collections = cgrpc.CollectionsStub(channel)
    points = pgrpc.PointsStub(channel)
    search = sgrpc.SearchStub(channel)

    try:
        collections.Delete(cpb.DeleteCollectionRequest(name=args.collection), metadata=md)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
    collections.Create(
        cpb.CreateCollectionRequest(
            name=args.collection,
            config=cpb.CollectionConfig(dim=DIM, metric=common.METRIC_COSINE),
        ),
        metadata=md,
    )
    batch = [
        common.Point(
            id=i,
            vector=embed(text),
            payload_json=json.dumps({"text": text, "tenant": tenant, "chunk": i}),
        )
        for i, (tenant, text) in enumerate(CHUNKS)
    ]
    points.Upsert(ppb.UpsertRequest(collection=args.collection, points=batch), metadata=md)

    question = "how do HNSW graphs find neighbours"
    tenant_only = common.Filter(
        must=[
            common.Condition(
                match=common.MatchCondition(
                    key="tenant", value=common.MatchValue(keyword="acme")
                )
            )
        ]
    )
    reply = search.Search(
        spb.SearchRequest(
            collection=args.collection,
            vector=embed(question),
            k=2,
            filter=tenant_only,
            with_payload=True,
        ),
        metadata=md,
    )
    print(f"question: {question}")
    for hit in reply.points:
        payload = json.loads(hit.payload_json)
        print(f"{hit.score:.3f}  [{payload['tenant']}] {payload['text']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
