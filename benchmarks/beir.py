#!/usr/bin/env python
"""Real-data quality: NDCG@10 and recall@100 of zenstore vs exact float search on a
BEIR-format collection with precomputed embeddings, and faiss peers at equal bits.

Layout read (as in /work/shared/data, see its README):
    COLL/qrels/test.tsv                 query-id <TAB> corpus-id <TAB> score (header optional)
    COLL/emb-<model>/corpus.npy         float32 (n_docs, d), row i <-> corpus_ids.json[i]
    COLL/emb-<model>/queries.npy        float32 (n_queries, d), row i <-> query_ids.json[i]

Metrics follow /work/shared/data/scripts/eval_ndcg.py exactly (trec_eval / BEIR): linear
gain = qrel score, discount 1/log2(rank+1), ideal DCG from all judged docs with score > 0;
recall@100 = judged docs found in the top 100 / judged docs; mean over queries with at
least one judged doc; a retrieved doc whose id equals the query id is skipped unless
``--keep-identical-ids`` (pass it for Cranfield, whose id spaces overlap by accident).

Rows: exact float32 (brute force); zenstore with default options (n_base 1024, which a
small corpus caps at n_docs / 24) and other ``--n-base`` values (min_rows_per_base lowered
when needed so the requested rows are trained), each over ``--seeds``
(the seed picks the k-means sample and the rotation), searched with default options
(k=10 for NDCG@10, k=100 for recall@100); faiss IndexRaBitQ (1-bit + 2 floats, qb=4,
plain and centered); plain sign bits (Hamming on both sides, faiss IndexBinaryFlat).
Retention = method NDCG@10 / float NDCG@10.

With ``--refine-tiers`` (issue 12): stores with those refine tiers, in full retrieval and
in the rerank use (``store.rerank`` of a first stage's top-100: BM25 or another
embedding's float top-100), refined and ``refine=False``; see benchmarks/_beir_refine.py.

    python benchmarks/beir.py /work/shared/data/scifact                      # MiniLM, 300 test queries
    python benchmarks/beir.py /work/shared/data/cranfield --keep-identical-ids   # MiniLM and MPNet
    python benchmarks/beir.py /work/shared/data/scifact --n-base default --seeds 0 --no-faiss \
        --refine-tiers int8 magnitude4 --out docs/benchmarks/beir-refine-scifact.json
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _beir_refine  # noqa: E402
import _common  # noqa: E402

TARGET_RETENTION = 0.98


# --- data and metrics ------------------------------------------------------------------------


def load_qrels(path: str, binary: bool = False) -> dict:
    qrels: dict = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            t = line.rstrip("\n").split("\t")
            if i == 0 and t[0] == "query-id":
                continue
            if len(t) < 3:
                continue
            s = int(t[2])
            s = (1 if s > 0 else 0) if binary else s
            if s > 0:
                qrels.setdefault(t[0], {})[t[1]] = s
    return qrels


def load_embeddings(coll: str, emb: str) -> dict:
    d = os.path.join(coll, emb)
    with open(os.path.join(d, "corpus_ids.json")) as f:
        dids = [str(x) for x in json.load(f)]
    with open(os.path.join(d, "query_ids.json")) as f:
        qids = [str(x) for x in json.load(f)]
    return {"D": np.load(os.path.join(d, "corpus.npy")).astype(np.float32),
            "Q": np.load(os.path.join(d, "queries.npy")).astype(np.float32), "dids": dids, "qids": qids}


def evaluate(ranked: list[list[str]], use: list[str], qrels: dict, keep_identical: bool,
             k: int = 10, recall_k: int = 100) -> dict:
    """Per-query NDCG@k and recall@recall_k (the eval_ndcg.py definitions), and their means."""
    nd, rc = [], []
    for q, docs in zip(use, ranked):
        docs = [d for d in docs if keep_identical or d != q]
        rel = qrels[q]
        dcg = sum(rel.get(d, 0) / np.log2(r + 2) for r, d in enumerate(docs[:k]))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = sum(g / np.log2(r + 2) for r, g in enumerate(ideal))
        nd.append(dcg / idcg)
        rc.append(sum(1 for d in docs[:recall_k] if d in rel) / len(rel))
    return {"ndcg@10": float(np.mean(nd)), "recall@100": float(np.mean(rc)),
            "per_query_ndcg": np.asarray(nd), "per_query_recall": np.asarray(rc)}


def bootstrap_ratio(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% paired-bootstrap interval of mean(a) / mean(b) over queries."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n, len(a)))
    r = a[idx].mean(1) / b[idx].mean(1)
    return float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))


# --- methods: each returns (ranked ids for NDCG@10, ranked ids for recall@100, info) -----------


def rank_float(data, Qu, depth):
    S = Qu @ data["D"].T
    order = np.argsort(-S, axis=1, kind="stable")[:, :depth]
    ranked = [[data["dids"][j] for j in row] for row in order]
    return ranked, ranked, {"bytes_per_vector": 4 * data["D"].shape[1], "bytes_all_in": 4 * data["D"].shape[1]}


def rank_zenstore(data, Qu, extra, n_base, seed, workdir):
    import zenstore

    dim = data["D"].shape[1]
    opts = {"seed": seed}
    if n_base is not None:
        # a small corpus gets at most n_docs / min_rows_per_base (24) base rows: lower the
        # minimum when needed so the requested row count is really used
        opts["n_base"] = n_base
        mr = max(1, min(24, len(data["D"]) // n_base))
        if mr < 24:
            opts["min_rows_per_base"] = mr
    path = tempfile.mkdtemp(prefix="beir-", dir=workdir)
    try:
        with zenstore.Store.create(os.path.join(path, "s.zen"), dim=dim, metric="cosine", **opts) as store:
            store.add(data["dids"], data["D"])  # first add trains the base on the corpus
            ids10, _ = store.search_batch(Qu, k=10 + extra)  # default shortlist
            ids100, _ = store.search_batch(Qu, k=100 + extra)
            st = store.stats()
    finally:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    clean = lambda ids: [[x for x in row if x is not None] for row in ids]  # noqa: E731
    return clean(ids10), clean(ids100), {"bytes_per_vector": st["bytes_per_vector"],
                                         "bytes_all_in": st["bytes_on_disk"]["total"] / st["count"],
                                         "base_bytes_per_doc": st["bytes_on_disk"]["base"] / st["count"],
                                         "n_base_effective": st["n_base"],
                                         "min_rows_per_base": st["config"]["min_rows_per_base"]}


def rank_rabitq(data, Qu, depth, qb, centered):
    import faiss

    D = data["D"]
    idx = faiss.IndexRaBitQ(D.shape[1], faiss.METRIC_INNER_PRODUCT)
    idx.train(D)
    idx.add(D)
    p = faiss.RaBitQSearchParameters()
    p.qb = qb
    p.centered = centered
    _, I = idx.search(Qu, depth, params=p)
    ranked = [[data["dids"][j] for j in row if j >= 0] for row in I]
    return ranked, ranked, {"bytes_per_vector": idx.code_size,
                            "bytes_all_in": len(faiss.serialize_index(idx)) / len(D)}


def rank_signbits(data, Qu, depth):
    import faiss

    D = data["D"]
    idx = faiss.IndexBinaryFlat(D.shape[1])
    idx.add(np.packbits(D > 0, axis=1))
    _, I = idx.search(np.packbits(Qu > 0, axis=1), depth)
    ranked = [[data["dids"][j] for j in row if j >= 0] for row in I]
    return ranked, ranked, {"bytes_per_vector": D.shape[1] // 8, "bytes_all_in": D.shape[1] // 8}


# --- the benchmark ---------------------------------------------------------------------------


def run_embedding(args, emb: str) -> dict:
    data = load_embeddings(args.collection, emb)
    qrels = load_qrels(os.path.join(args.collection, args.qrels), args.binary)
    qpos = {q: i for i, q in enumerate(data["qids"])}
    use = [q for q in qrels if q in qpos]
    Qu = np.ascontiguousarray(data["Q"][[qpos[q] for q in use]])
    extra = 0 if args.keep_identical_ids else 1  # one retrieved doc may be the query itself
    n_docs, dim = data["D"].shape
    rows = []

    def add_row(method, config, r10, r100, info, seed=None, n_base=None):
        m10 = evaluate(r10, use, qrels, args.keep_identical_ids)
        m100 = evaluate(r100, use, qrels, args.keep_identical_ids)
        rows.append({"method": method, "config": config, "seed": seed, "n_base_requested": n_base, **info,
                     "ndcg@10": m10["ndcg@10"], "recall@100": m100["recall@100"],
                     "_per_query": m10["per_query_ndcg"]})

    t0 = time.perf_counter()
    add_row("exact float32", "brute force", *rank_float(data, Qu, 200))
    float_row = rows[0]
    for nb in args.n_base:
        for seed in args.seeds:
            r10, r100, info = rank_zenstore(data, Qu, extra, nb, seed, args.work_dir)
            label = ("default options" if nb is None else f"n_base={nb}") + f" ({info['n_base_effective']} base rows" \
                + (f", min_rows_per_base={info['min_rows_per_base']})" if info["min_rows_per_base"] != 24 else ")")
            add_row("zenstore", label, r10, r100, info, seed=seed, n_base=nb)
    if not args.no_faiss:
        for centered in (False, True):
            add_row("faiss IndexRaBitQ", f"qb={args.qb}" + (" centered" if centered else ""),
                    *rank_rabitq(data, Qu, 100 + extra, args.qb, centered))
        add_row("sign bits (IndexBinaryFlat)", "Hamming, both sides", *rank_signbits(data, Qu, 100 + extra))
    fn = float_row["ndcg@10"]
    fr = float_row["recall@100"]
    for r in rows:
        r["retention"] = r["ndcg@10"] / fn if fn else None
        r["recall_retention"] = r["recall@100"] / fr if fr else None
    # zenstore: one summary row per n_base over the seeds
    summary = []
    for nb in args.n_base:
        zs = [r for r in rows if r["method"] == "zenstore" and r["n_base_requested"] == nb]
        nd = np.array([r["ndcg@10"] for r in zs])
        lo, hi = bootstrap_ratio(zs[0]["_per_query"], float_row["_per_query"])
        summary.append({"method": "zenstore", "config": zs[0]["config"] + f", mean of {len(zs)} seed(s)",
                        "n_base_requested": nb, "n_base_effective": zs[0]["n_base_effective"],
                        "bytes_per_vector": zs[0]["bytes_per_vector"], "bytes_all_in": zs[0]["bytes_all_in"],
                        "base_bytes_per_doc": zs[0]["base_bytes_per_doc"],
                        "ndcg@10": float(nd.mean()), "ndcg@10_min": float(nd.min()), "ndcg@10_max": float(nd.max()),
                        "recall@100": float(np.mean([r["recall@100"] for r in zs])),
                        "retention": float(nd.mean() / fn), "retention_min": float(nd.min() / fn),
                        "retention_max": float(nd.max() / fn),
                        "retention_ci95_seed0": [lo, hi],
                        "recall_retention": float(np.mean([r["recall@100"] for r in zs]) / fr)})
    for r in rows:
        r.pop("_per_query")
    default = next((s for s in summary if s["n_base_requested"] is None), summary[0] if summary else None)
    refine = None if not args.refine_tiers else _beir_refine.run_refine(
        args, data, use, Qu, extra, emb, evaluate, qrels, float_row, load_embeddings)
    return {"refine": refine, "embeddings": emb, "dim": dim, "n_docs": n_docs, "n_queries": len(use), "seconds": time.perf_counter() - t0,
            "float": {"ndcg@10": fn, "recall@100": fr}, "rows": rows, "zenstore_summary": summary,
            "target": None if default is None else {
                "retention_target": TARGET_RETENTION, "zenstore_default_retention": default["retention"],
                "met": default["retention"] >= TARGET_RETENTION,
                "official": os.path.basename(os.path.normpath(args.collection)) == "scifact" and dim == 384
                and args.qrels == "qrels/test.tsv"}}


def report(res: dict) -> str:
    lines = [f"BEIR quality: {res['collection']} ({res['params']['qrels']}"
             f"{', keep identical ids' if res['params']['keep_identical_ids'] else ''})",
             f"machine: {_common.machine_line(res['machine'])}"]
    cols = [("method", "method", ""), ("config", "config", ""), ("bytes_per_vector", "B/vec", ",.0f"),
            ("bytes_all_in", "all-in B/vec", ",.1f"), ("ndcg@10", "NDCG@10", ".4f"),
            ("retention", "retention", ".2%"), ("range", "seed range", ""),
            ("recall@100", "recall@100", ".4f"), ("recall_retention", "recall ret.", ".2%")]
    for e in res["results"]:
        rows = [r for r in e["rows"] if r["method"] != "zenstore"]
        rows = rows[:1] + [dict(s, range=f"{s['retention_min']:.1%}-{s['retention_max']:.1%}")
                           for s in e["zenstore_summary"]] + rows[1:]
        lines += ["", f"{e['embeddings']}: {e['n_docs']:,} docs x {e['dim']}, {e['n_queries']} queries", "",
                  _common.table(rows, cols)]
        for s in e["zenstore_summary"]:
            lo, hi = s["retention_ci95_seed0"]
            lines.append(f"  zenstore {s['config']}: per seed "
                         + ", ".join(f"{r['ndcg@10']:.4f}" for r in e["rows"]
                                     if r["method"] == "zenstore" and r["n_base_requested"] == s["n_base_requested"])
                         + f"; seed 0 retention 95% bootstrap CI over queries {lo:.1%}-{hi:.1%}")
        t = e["target"]
        if t:
            lines.append(f"target: zenstore (default options) NDCG@10 retention >= {t['retention_target']:.0%}"
                         f"{' [the SciFact/MiniLM target]' if t['official'] else ' [reported; the target is set on SciFact/MiniLM]'}: "
                         f"{t['zenstore_default_retention']:.2%} -> {'MET' if t['met'] else 'MISSED'}")
        lines += _beir_refine.report_lines(e)
    lines += ["", f"rerun: {res['command']}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("collection", help="BEIR collection directory (e.g. /work/shared/data/scifact)")
    p.add_argument("--embeddings", nargs="+", default=None,
                   help="embedding subdirectories (default: every emb-* directory)")
    p.add_argument("--qrels", default="qrels/test.tsv", help="qrels file inside the collection")
    p.add_argument("--binary", action="store_true", help="treat every qrel score > 0 as 1")
    p.add_argument("--keep-identical-ids", action="store_true",
                   help="do not skip a retrieved doc whose id equals the query id (Cranfield)")
    p.add_argument("--n-base", nargs="+", type=lambda s: None if s == "default" else int(s),
                   default=[None, 1024, 256, 64, 16],
                   help="zenstore base rows; 'default' = the store defaults (1024 requested, capped at docs/24); "
                        "a number lowers min_rows_per_base when needed so that many rows are trained")
    p.add_argument("--seeds", nargs="+", type=int, default=list(range(10)), help="zenstore seeds (default 0..9)")
    p.add_argument("--qb", type=int, default=4, help="faiss RaBitQ query bits")
    p.add_argument("--no-faiss", action="store_true", help="skip the faiss rows")
    p.add_argument("--work-dir", default=None, help="where temporary stores go (default: system temp)")
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/beir-<collection>.json)")
    _beir_refine.add_arguments(p)
    return p


def main(argv=None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser().parse_args(argv)
    _common.set_threads(os.cpu_count() or 1)
    embs = args.embeddings or sorted(d for d in os.listdir(args.collection)
                                     if d.startswith("emb-") and os.path.isdir(os.path.join(args.collection, d)))
    if not embs:
        raise SystemExit(f"{args.collection}: no emb-* directory")
    name = os.path.basename(os.path.normpath(args.collection))
    res = {"benchmark": "beir", "collection": name, "collection_path": os.path.abspath(args.collection),
           "command": _common.rerun_command("benchmarks/beir.py", argv), "machine": _common.machine_info(),
           "params": {k: v for k, v in vars(args).items() if k not in ("collection", "work_dir", "out")},
           "results": [run_embedding(args, e) for e in embs]}
    out = args.out or os.path.join(_common.OUT_DIR, f"beir-{name}.json")
    _common.publish(res, out, report)
    return res


if __name__ == "__main__":
    main()
