#!/usr/bin/env python
"""The rerank pipeline on real collections: a first stage returns 100 candidates, the
embeddings stored in zenstore rerank them, NDCG@10 of the top 10.

Setups (``/work/shared/data`` layout, see its README):
    scifact-test / scifact-train   BM25 top-100 -> MiniLM (384-d) rerank
    cranfield                      BM25 top-100 -> MPNet (768-d) rerank
    cranfield                      MiniLM exact float top-100 -> MPNet rerank

Rows per setup: the first stage alone; exact float rerank (cosine of the float32
embeddings); zenstore rerank through ``zenstore.Reranker``, through the LangChain
integration (``ZenstoreReranker.compress_documents`` on ``Document``s) and through the
LlamaIndex one (``ZenstoreRerank.postprocess_nodes`` on ``NodeWithScore``s) -- one store
per seed holding the whole corpus (default options; the seed picks the k-means sample and
the rotation), queried with text through an embedder that looks the precomputed query
embeddings up (no model runs). Retention = zenstore NDCG@10 / float-rerank NDCG@10.
Latency: wall time of one rerank call on a query's candidates, every method in turn for
each query (side by side), ``--repeats`` rounds; p50 / p99 over queries x rounds.

Metrics are benchmarks/beir.py's (the eval_ndcg.py definitions); Cranfield keeps identical
ids (its query and doc numbers overlap by accident). BM25: benchmarks/_bm25.py (k1 1.2,
b 0.75, lowercase alphanumeric tokens) over ``title + " " + text``.

    python benchmarks/rerank_pipeline.py /work/shared/data            # all setups, seeds 0 1 2
    python benchmarks/rerank_pipeline.py DATA --setups scifact-test --seeds 0
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba load

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402
from _bm25 import BM25  # noqa: E402
from beir import evaluate, load_embeddings, load_qrels  # noqa: E402

SETUPS = {
    # name: (collection, qrels, first stage, rerank embedding, keep identical ids)
    "scifact-test": ("scifact", "qrels/test.tsv", "bm25", "emb-minilm-l6-v2", False),
    "scifact-train": ("scifact", "qrels/train.tsv", "bm25", "emb-minilm-l6-v2", False),
    "cranfield-bm25": ("cranfield", "qrels/test.tsv", "bm25", "emb-mpnet-base-v2", True),
    "cranfield-minilm": ("cranfield", "qrels/test.tsv", "emb-minilm-l6-v2", "emb-mpnet-base-v2", True),
}
PATHS = ("reranker", "langchain", "llama_index")


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_collection(coll: str) -> tuple[dict, dict]:
    docs = {str(d["_id"]): (d.get("title", "") + " " + d.get("text", "")).strip()
            for d in read_jsonl(os.path.join(coll, "corpus.jsonl"))}
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(os.path.join(coll, "queries.jsonl"))}
    return docs, queries


# --- embedders that look precomputed vectors up ----------------------------------------------


class Lookup:
    """text -> precomputed vector (queries and documents of one embedding model)."""

    def __init__(self, texts: list[str], vectors: np.ndarray) -> None:
        self.table = {}
        for t, v in zip(texts, vectors):
            self.table.setdefault(t, v)
        self.dim = int(vectors.shape[1])

    def embed_query(self, text: str) -> np.ndarray:
        return self.table[text]

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.table[t] for t in texts])


def langchain_embeddings(lookup: Lookup):
    from langchain_core.embeddings import Embeddings

    class LookupEmbeddings(Embeddings):
        def embed_documents(self, texts):
            return lookup.embed_documents(texts).tolist()

        def embed_query(self, text):
            return lookup.embed_query(text).tolist()

    return LookupEmbeddings()


def llama_embedding(lookup: Lookup):
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class LookupEmbedding(BaseEmbedding):
        def _get_query_embedding(self, query):
            return lookup.embed_query(query).tolist()

        async def _aget_query_embedding(self, query):
            return self._get_query_embedding(query)

        def _get_text_embedding(self, text):
            return lookup.embed_query(text).tolist()

    return LookupEmbedding(model_name="lookup")


# --- the pipeline ------------------------------------------------------------------------------


def first_stage(kind: str, coll: str, docs: dict, queries: dict, use: list[str], depth: int) -> list[list[str]]:
    if kind == "bm25":
        doc_ids = list(docs)
        index = BM25([docs[d] for d in doc_ids])
        return [[doc_ids[i] for i in index.top(queries[q], depth)] for q in use]
    data = load_embeddings(coll, kind)  # exact float search with another embedding
    qpos = {q: i for i, q in enumerate(data["qids"])}
    S = data["Q"][[qpos[q] for q in use]] @ data["D"].T
    order = np.argsort(-S, axis=1, kind="stable")[:, :depth]
    return [[data["dids"][j] for j in row] for row in order]


def float_rerank(data: dict, qvecs: np.ndarray, cands: list[list[str]], k: int) -> list[list[str]]:
    """Exact float32 cosine rerank (the embeddings are unit vectors)."""
    dpos = {d: i for i, d in enumerate(data["dids"])}
    ranked = []
    for qv, cand in zip(qvecs, cands):
        rows = np.fromiter((dpos[d] for d in cand), dtype=np.int64, count=len(cand))
        order = np.argsort(-(data["D"][rows] @ qv), kind="stable")[:k]
        ranked.append([cand[i] for i in order])
    return ranked


def rerank_calls(store, lookup: Lookup, docs: dict, k: int, paths) -> dict:
    """For each integration path, ``prepare(cands)`` (what the first stage hands over: ids,
    Documents, nodes; not timed) and ``call(query_text, prepared) -> ranked ids``."""
    import zenstore

    calls = {}
    if "reranker" in paths:
        rr = zenstore.Reranker(store, lookup)
        calls["reranker"] = (lambda cand: cand, lambda qt, c: [r.id for r in rr.rerank(qt, c, top_n=k)])
    if "langchain" in paths:
        from langchain_core.documents import Document

        from zenstore.integrations.langchain import ZenstoreReranker

        comp = ZenstoreReranker(store, langchain_embeddings(lookup), top_n=k)
        calls["langchain"] = (lambda cand: [Document(id=d, page_content=docs[d]) for d in cand],
                              lambda qt, c: [d.id for d in comp.compress_documents(c, qt)])
    if "llama_index" in paths:
        from llama_index.core.schema import NodeWithScore, TextNode

        from zenstore.integrations.llama_index import ZenstoreRerank

        post = ZenstoreRerank(store, embedder=llama_embedding(lookup), top_n=k)
        calls["llama_index"] = (
            lambda cand: [NodeWithScore(node=TextNode(id_=d, text=docs[d]), score=0.0) for d in cand],
            lambda qt, c: [n.node.node_id for n in post.postprocess_nodes(c, query_str=qt)])
    return calls


def zenstore_reranks(store, lookup: Lookup, docs: dict, query_texts: list[str], cands: list[list[str]],
                     k: int, paths) -> dict:
    """Ranked ids of each integration path over one store."""
    out = {}
    for path, (prepare, call) in rerank_calls(store, lookup, docs, k, paths).items():
        out[path] = [call(qt, prepare(cand)) for qt, cand in zip(query_texts, cands)]
    return out


def latencies(store, lookup: Lookup, data: dict, docs: dict, qvecs, query_texts, cands, k: int, paths,
              repeats: int) -> dict:
    """Per-call wall times, side by side: for each query, every method in turn, ``repeats``
    rounds (so load drifting during the run hits all methods alike)."""
    dpos = {d: i for i, d in enumerate(data["dids"])}
    calls = rerank_calls(store, lookup, docs, k, paths)

    def float_call(qv, cand):
        rows = np.fromiter((dpos[d] for d in cand), dtype=np.int64, count=len(cand))
        s = data["D"][rows] @ qv
        return [cand[i] for i in np.argsort(-s, kind="stable")[:k]]

    times = {m: [] for m in ("float numpy", "store.rerank", *calls)}
    for qv, qt, cand in zip(qvecs, query_texts, cands):
        prepared = {p: prep(cand) for p, (prep, _) in calls.items()}
        for _ in range(repeats):
            t0 = time.perf_counter()
            float_call(qv, cand)
            times["float numpy"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            store.rerank(qv, cand, top_n=k)
            times["store.rerank"].append(time.perf_counter() - t0)
            for p, (_, call) in calls.items():
                t0 = time.perf_counter()
                call(qt, prepared[p])
                times[p].append(time.perf_counter() - t0)
    return {m: _ms(np.asarray(t)) for m, t in times.items()}


def _ms(times: np.ndarray) -> dict:
    return {"p50_ms": float(np.percentile(times, 50) * 1e3), "p99_ms": float(np.percentile(times, 99) * 1e3),
            "mean_ms": float(times.mean() * 1e3)}


def run_setup(args, name: str) -> dict:
    import zenstore

    coll_name, qrels_file, stage, emb, keep = SETUPS[name]
    coll = os.path.join(args.data, coll_name)
    docs, queries = load_collection(coll)
    qrels = load_qrels(os.path.join(coll, qrels_file))
    data = load_embeddings(coll, emb)
    qpos = {q: i for i, q in enumerate(data["qids"])}
    use = [q for q in qrels if q in qpos and q in queries]
    if args.max_queries:
        use = use[: args.max_queries]
    depth = args.candidates
    t0 = time.perf_counter()
    cands = first_stage(stage, coll, docs, queries, use, depth + (0 if keep else 1))
    stage_s = time.perf_counter() - t0
    if not keep:  # BEIR skips a retrieved doc whose id is the query's; keep `depth` others
        cands = [[d for d in c if d != q][:depth] for q, c in zip(use, cands)]
    ev = lambda ranked: evaluate(ranked, use, qrels, keep)  # noqa: E731
    qvecs = data["Q"][[qpos[q] for q in use]]
    query_texts = [queries[q] for q in use]
    lookup = Lookup(query_texts, qvecs)
    first = ev(cands)
    flt = ev(float_rerank(data, qvecs, cands, 10))
    res = {"setup": name, "collection": coll_name, "qrels": qrels_file, "first_stage": stage,
           "rerank_embedding": emb, "dim": int(data["D"].shape[1]), "queries": len(use), "docs": len(data["dids"]),
           "candidates": depth, "mean_candidates": float(np.mean([len(c) for c in cands])),
           "first_stage_seconds": stage_s,
           "ndcg_first_stage": first["ndcg@10"], "recall100_first_stage": first["recall@100"],
           "ndcg_float_rerank": flt["ndcg@10"], "seeds": []}
    for seed in args.seeds:
        work = tempfile.mkdtemp(prefix="rerank-pipeline-", dir=args.work_dir)
        try:
            with zenstore.Store.create(os.path.join(work, "s.zen"), dim=res["dim"], metric="cosine",
                                       seed=seed) as store:
                t0 = time.perf_counter()
                store.add(data["dids"], data["D"], payloads=[{"text": docs.get(d, "")} for d in data["dids"]])
                build_s = time.perf_counter() - t0
                st = store.stats()
                paths = zenstore_reranks(store, lookup, docs, query_texts, cands, 10, args.paths)
                if seed == args.seeds[0]:
                    res["latency"] = latencies(store, lookup, data, docs, qvecs, query_texts, cands, 10,
                                               args.paths, args.repeats)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        row = {"seed": seed, "n_base": st["n_base"], "bytes_per_vector": st["bytes_per_vector"],
               "build_seconds": build_s}
        ref = None
        for path, ranked in paths.items():
            m = ev(ranked)
            row[path] = {"ndcg": m["ndcg@10"], "retention": m["ndcg@10"] / flt["ndcg@10"]}
            ref = ranked if ref is None else ref
            row[path]["same_ranking_as_first_path"] = ranked == ref
        res["seeds"].append(row)
    first_path = args.paths[0]
    nd = np.array([r[first_path]["ndcg"] for r in res["seeds"]])
    res["ndcg_zenstore_rerank_mean"] = float(nd.mean())
    res["retention_mean"] = float(nd.mean() / flt["ndcg@10"])
    res["retention_range"] = [float(nd.min() / flt["ndcg@10"]), float(nd.max() / flt["ndcg@10"])]
    return res


def report(res: dict) -> str:
    rows = []
    for r in res["results"]:
        s0 = r["seeds"][0]
        row = {"setup": r["setup"], "first": f"{r['first_stage']} -> {r['rerank_embedding'][4:]} ({r['dim']}-d)",
               "q": r["queries"], "nd1": r["ndcg_first_stage"], "ndf": r["ndcg_float_rerank"],
               "ndz": r["ndcg_zenstore_rerank_mean"], "ret": 100 * r["retention_mean"],
               "range": "{:.1f}-{:.1f}".format(*(100 * x for x in r["retention_range"])),
               "bpv": s0["bytes_per_vector"],
               "agree": all(s[p]["same_ranking_as_first_path"] for s in r["seeds"] for p in res["params"]["paths"])}
        rows.append(row)
    quality = _common.table(rows, [("setup", "setup", ""), ("first", "first stage -> rerank", ""),
                                   ("q", "queries", "d"), ("nd1", "first stage", ".4f"),
                                   ("ndf", "float rerank", ".4f"), ("ndz", "zenstore rerank", ".4f"),
                                   ("ret", "retention %", ".1f"), ("range", "over seeds", ""),
                                   ("bpv", "B/vector", "d"), ("agree", "3 paths agree", "")])
    lat = []
    methods = list(res["results"][0]["latency"])
    for r in res["results"]:
        entry = {"setup": r["setup"], "cand": r["mean_candidates"]}
        for m in methods:
            entry[m] = "{p50_ms:.2f} / {p99_ms:.2f}".format(**r["latency"][m])
        lat.append(entry)
    cols = [("setup", "setup", ""), ("cand", "candidates", ".1f")] + [(m, m, "") for m in methods]
    return (f"rerank pipeline, NDCG@10 (seeds {res['params']['seeds']}; {_common.machine_line(res['machine'])})\n"
            + quality + "\n\nrerank latency of one query's candidates, ms p50 / p99 over queries x "
            + f"{res['params']['repeats']} rounds, side by side (seed {res['params']['seeds'][0]}, "
            + "top 10 returned)\n" + _common.table(lat, cols))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="directory holding scifact/ and cranfield/ (BEIR layout + emb-*/)")
    p.add_argument("--setups", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    p.add_argument("--candidates", type=int, default=100, help="first-stage depth (default 100)")
    p.add_argument("--max-queries", type=int, default=0, help="only the first N queries (0: all)")
    p.add_argument("--repeats", type=int, default=3, help="latency rounds per query (default 3)")
    p.add_argument("--work-dir", default=None, help="where the temporary stores go")
    p.add_argument("--out", default=None, help="JSON output (default docs/benchmarks/rerank-pipeline.json)")
    return p


def main(argv=None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser().parse_args(argv)
    _common.set_threads(os.cpu_count() or 1)
    res = {"benchmark": "rerank_pipeline", "data": os.path.abspath(args.data),
           "command": _common.rerun_command("benchmarks/rerank_pipeline.py", argv),
           "machine": _common.machine_info(),
           "params": {k: v for k, v in vars(args).items() if k not in ("data", "work_dir", "out")},
           "results": [run_setup(args, s) for s in args.setups]}
    out = args.out or os.path.join(_common.OUT_DIR, "rerank-pipeline.json")
    res["json"] = out
    _common.write_json(out, res)
    print(report(res))
    print(f"json: {out}")
    return res


if __name__ == "__main__":
    main()
