"""LangChain's QdrantVectorStore (langchain-qdrant, gRPC) against `octet serve`.

    python clients/python/langchain_flow.py --addr HOST:GRPC_PORT --http HOST:HTTP_PORT \
        [--api-key KEY] [--data ../shared/data] [--texts 300]

The server runs with `--http-addr` so qdrant-client's version check (a REST
`GET /`, made even with prefer_grpc=True) passes: warnings are errors here, so a
failed check fails the run. Embeddings come from langchain-core's
DeterministicFakeEmbedding (a seeded vector per text: no model to download),
texts and metadata from ../shared/data/passages.jsonl. Steps, each checked:
construct the store (creates the collection), add texts with metadata,
similarity_search (top hit is the query's own passage), a metadata filter, a
numeric range filter, similarity_search_with_score, get_by_ids, delete, and
from_existing_collection (its config validation reads get_collection).
Exits non-zero on the first failed check.
"""

import argparse
import json
import os
import sys
import uuid
import warnings

from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_qdrant import QdrantVectorStore
from qdrant_client import QdrantClient, models

HERE = os.path.dirname(os.path.abspath(__file__))
DIM = 64


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok  {what}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True, help="gRPC HOST:PORT")
    ap.add_argument("--http", required=True, help="HOST:PORT of --http-addr")
    ap.add_argument("--api-key", default=None)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data"))
    ap.add_argument("--texts", type=int, default=300)
    args = ap.parse_args()
    # A version check that cannot reach the server only warns: make it fail.
    warnings.simplefilter("error")
    # Loopback tests use a key without TLS on purpose.
    warnings.filterwarnings("ignore", message="Api key is used with an insecure connection")
    host, grpc_port = args.addr.rsplit(":", 1)
    _, http_port = args.http.rsplit(":", 1)

    with open(os.path.join(args.data, "passages.jsonl")) as f:
        passages = [json.loads(line) for _, line in zip(range(args.texts), f)]
    texts = [p["text"] for p in passages]
    metadatas = [{"source": p["source"], "n": p["id"]} for p in passages]
    sources = sorted({m["source"] for m in metadatas})
    check(len(texts) == args.texts and len(sources) >= 2, f"{len(texts)} passages from {sources}")

    emb = DeterministicFakeEmbedding(size=DIM)
    client_options = dict(
        host=host,
        port=int(http_port),
        grpc_port=int(grpc_port),
        prefer_grpc=True,
        https=False,
        api_key=args.api_key,
    )
    # The same client options a LangChain app passes; check_compatibility is
    # left at its default (on).
    client = QdrantClient(**client_options)
    name = "lc_flow"
    if client.collection_exists(name):
        client.delete_collection(name)

    store = QdrantVectorStore.construct_instance(
        embedding=emb,
        collection_name=name,
        client_options=client_options,
    )
    check(client.collection_exists(name), "construct_instance created the collection")
    info = client.get_collection(name)
    check(info.config.params.vectors.size == DIM, f"collection is {DIM}-d")
    check(info.config.params.vectors.distance == models.Distance.COSINE, "cosine distance")

    ids = store.add_texts(texts, metadatas=metadatas, batch_size=64)
    check(len(ids) == len(texts) and len(set(ids)) == len(ids), f"add_texts returned {len(ids)} ids")
    check(client.count(name).count == len(texts), "every text is stored")

    # A passage's own text embeds to its own vector: it is the top hit.
    for i in (0, 17, len(texts) - 1):
        docs = store.similarity_search(texts[i], k=4)
        check(len(docs) == 4, f"similarity_search returns k=4 for text {i}")
        check(docs[0].page_content == texts[i], f"top hit of text {i} is itself")
        check(docs[0].metadata["n"] == metadatas[i]["n"], f"metadata of text {i} round-trips")
        # add_texts hands out uuid4().hex; Qdrant (and Octet) answer the dashed form.
        check(uuid.UUID(str(docs[0].metadata["_id"])) == uuid.UUID(ids[i]), "the hit carries its UUID id")

    src = sources[0]
    want = [i for i, m in enumerate(metadatas) if m["source"] == src]
    flt = models.Filter(must=[models.FieldCondition(key="metadata.source", match=models.MatchValue(value=src))])
    docs = store.similarity_search(texts[want[0]], k=10, filter=flt)
    check(docs and all(d.metadata["source"] == src for d in docs), f"metadata filter source={src}: {len(docs)} hits")
    check(docs[0].page_content == texts[want[0]], "filtered top hit is the query's passage")
    other = next(i for i, m in enumerate(metadatas) if m["source"] != src)
    docs = store.similarity_search(texts[other], k=10, filter=flt)
    check(all(d.page_content != texts[other] for d in docs), "a passage outside the filter is never returned")
    check(len(docs) == min(10, len(want)), "the filter still fills k")

    lo, hi = 50, 99
    rng = models.Filter(must=[models.FieldCondition(key="metadata.n", range=models.Range(gte=lo, lte=hi))])
    docs = store.similarity_search(texts[0], k=20, filter=rng)
    check(len(docs) == 20 and all(lo <= d.metadata["n"] <= hi for d in docs), "numeric range filter on metadata.n")

    scored = store.similarity_search_with_score(texts[5], k=5)
    check(len(scored) == 5, "similarity_search_with_score returns 5")
    doc, score = scored[0]
    check(doc.page_content == texts[5] and abs(score - 1.0) < 1e-3, f"own passage scores cosine 1 ({score:.5f})")
    check(all(scored[j][1] >= scored[j + 1][1] for j in range(4)), "scores descend")

    got = store.get_by_ids([ids[3], ids[4]])
    check(sorted(d.page_content for d in got) == sorted([texts[3], texts[4]]), "get_by_ids")

    check(store.delete(ids=[ids[0], ids[1]]) is True, "delete returns True")
    check(client.count(name).count == len(texts) - 2, "two points fewer")
    docs = store.similarity_search(texts[0], k=3)
    check(all(d.page_content != texts[0] for d in docs), "a deleted text is gone")

    added = store.add_documents([Document(page_content="octet keeps compact codes", metadata={"source": "test", "n": -1})])
    docs = store.similarity_search("octet keeps compact codes", k=1)
    check(uuid.UUID(str(docs[0].metadata["_id"])) == uuid.UUID(added[0]), "add_documents then find it")

    again = QdrantVectorStore.from_existing_collection(
        embedding=emb, collection_name=name, **client_options
    )
    check(again.similarity_search(texts[9], k=1)[0].page_content == texts[9], "from_existing_collection validates and searches")
    wrong = DeterministicFakeEmbedding(size=DIM + 1)
    try:
        QdrantVectorStore.from_existing_collection(embedding=wrong, collection_name=name, **client_options)
        raise SystemExit("FAILED: a wrong embedding size was accepted")
    except Exception as e:  # QdrantVectorStoreError
        check("dimensions" in str(e), f"a wrong embedding size is refused: {type(e).__name__}")

    client.delete_collection(name)
    check(not client.collection_exists(name), "delete_collection")
    print("langchain flow passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
