"""The refine tiers in benchmarks/beir.py (issue 12): NDCG@10 retention of stores with a
refine tier, in full retrieval and in the rerank use, against float32 on the same pipeline.

For each ``--refine-tiers`` value and each ``--seeds`` value one store is built
(``Store.create(..., refine=tier, seed=seed)`` + ``add``, default options). On that store:

  full      ``search_batch(k=10 (+1 when the query's own id is skipped))`` with the default
            refinement (the error-bounded shortlist from refine_k 100), and the same with
            ``refine=False`` (the hot ranking, shared bytes): retention = NDCG@10 / exact
            float32 NDCG@10
  rerank    a first stage returns 100 doc ids per query (``--first-stage``: BM25 over the
            collection's corpus.jsonl, k1 1.2, b 0.75, benchmarks/_bm25.py; or float top-100
            of another embedding directory, e.g. MiniLM in front of MPNet); ``store.rerank``
            reorders them (refined, and with ``refine=False``): retention = NDCG@10 /
            NDCG@10 of an exact float32 rerank of the same 100 ids

Rows refined per query (full retrieval) come from ``search_batch(refined_rows=)``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np

TARGET_INT8 = 0.995
DEPTH = 100


def add_arguments(p) -> None:
    g = p.add_argument_group("refine tiers (issue 12)")
    g.add_argument("--refine-tiers", nargs="+", default=[],
                   help="measure these refine tiers (e.g. int8 magnitude4); none by default")
    g.add_argument("--refine-seeds", nargs="+", type=int, default=[0, 1, 2], help="store seeds per tier")
    g.add_argument("--first-stage", nargs="+", default=["bm25"],
                   help="rerank first stages: 'bm25' and/or an embedding directory of the same collection "
                        "(float top-100), e.g. emb-minilm-l6-v2; one equal to the measured embedding is skipped")


def _jsonl(path: str) -> dict:
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[str(r["_id"])] = r
    return out


def first_stages(args, data, use: list[str], emb: str, load_embeddings) -> dict:
    """name -> per query (in ``use`` order) a list of doc positions (rows of data["D"])."""
    out = {}
    for fs in args.first_stage:
        if fs == emb:
            continue
        if fs == "bm25":
            from _bm25 import BM25

            corpus = _jsonl(os.path.join(args.collection, "corpus.jsonl"))
            queries = _jsonl(os.path.join(args.collection, "queries.jsonl"))
            texts = [(corpus[d].get("title", "") + " " + corpus[d].get("text", "")).strip() for d in data["dids"]]
            bm = BM25(texts)
            out["BM25 top-100"] = [bm.top(queries[q]["text"], DEPTH) for q in use]
        else:
            other = load_embeddings(args.collection, fs)
            if other["dids"] != data["dids"]:
                raise SystemExit(f"{fs}: its corpus ids differ from {emb}'s")
            qpos = {q: i for i, q in enumerate(other["qids"])}
            Qo = other["Q"][[qpos[q] for q in use]]
            S = Qo @ other["D"].T
            out[f"{fs} float top-100"] = [list(np.argsort(-s, kind="stable")[:DEPTH]) for s in S]
    return out


def run_refine(args, data, use: list[str], Qu: np.ndarray, extra: int, emb: str, evaluate_fn, qrels,
               float_full: dict, load_embeddings) -> dict:
    import zenstore

    D, dids = data["D"], data["dids"]
    Dn = D / np.linalg.norm(D, axis=1, keepdims=True)
    Qn = Qu / np.linalg.norm(Qu, axis=1, keepdims=True)
    stages = first_stages(args, data, use, emb, load_embeddings)
    depth10 = 10 + extra

    def ndcg(ranked):
        return evaluate_fn(ranked, use, qrels, args.keep_identical_ids)["ndcg@10"]

    float_rerank = {}
    for name, cands in stages.items():
        ranked = []
        for qi, c in enumerate(cands):
            c = np.asarray(c, np.int64)
            s = Dn[c] @ Qn[qi] if len(c) else np.zeros(0)
            ranked.append([dids[j] for j in c[np.argsort(-s, kind="stable")][:depth10]])
        float_rerank[name] = ndcg(ranked)
    rows = []
    for tier in args.refine_tiers:
        for seed in args.refine_seeds:
            tmp = tempfile.mkdtemp(prefix="beir-refine-", dir=args.work_dir)
            try:
                with zenstore.Store.create(os.path.join(tmp, "s.zen"), dim=D.shape[1], metric="cosine", seed=seed,
                                           refine=tier) as store:
                    store.add(dids, D)
                    st = store.stats()
                    for refine in (True, False):
                        rr = np.zeros(len(Qu), np.int64)
                        ids, _ = store.search_batch(Qu, k=depth10, refine=refine, refined_rows=rr)
                        ranked = [[x for x in row if x is not None] for row in ids]
                        row = {"tier": tier if refine else f"hot (refine=False, {tier} store)", "store_tier": tier,
                               "refine": refine, "seed": seed, "use": "full retrieval",
                               "hot_bytes_per_vector": st["bytes_per_vector"],
                               "refine_bytes_per_vector": st["refine_bytes_per_vector"] if refine else 0,
                               "n_base": st["n_base"], "ndcg@10": ndcg(ranked),
                               "rows_refined_mean": float(rr.mean())}
                        row["retention"] = row["ndcg@10"] / float_full["ndcg@10"] if float_full["ndcg@10"] else None
                        rows.append(row)
                        for name, cands in stages.items():
                            ranked = []
                            for qi, c in enumerate(cands):
                                hits = store.rerank(Qu[qi], [dids[j] for j in c], top_n=depth10, with_payload=False,
                                                    refine=refine) if len(c) else []
                                ranked.append([h.id for h in hits])
                            r2 = {**row, "use": f"rerank of {name}", "ndcg@10": ndcg(ranked),
                                  "rows_refined_mean": None}
                            r2["retention"] = r2["ndcg@10"] / float_rerank[name] if float_rerank[name] else None
                            rows.append(r2)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    summary = []
    keys = []
    for r in rows:
        k = (r["tier"], r["use"])
        if k not in keys:
            keys.append(k)
    for tier, use_ in keys:
        rs = [r for r in rows if r["tier"] == tier and r["use"] == use_]
        ret = np.array([r["retention"] if r["retention"] is not None else np.nan for r in rs])
        summary.append({"tier": tier, "use": use_, "seeds": len(rs), "refine": rs[0]["refine"],
                        "hot_bytes_per_vector": rs[0]["hot_bytes_per_vector"],
                        "refine_bytes_per_vector": rs[0]["refine_bytes_per_vector"],
                        "ndcg@10": float(np.mean([r["ndcg@10"] for r in rs])),
                        "retention": float(ret.mean()), "retention_min": float(ret.min()),
                        "retention_max": float(ret.max()),
                        "rows_refined_mean": (float(np.mean([r["rows_refined_mean"] for r in rs]))
                                              if rs[0]["rows_refined_mean"] is not None else None)})
    int8 = [s for s in summary if s["tier"] == "int8"]
    return {"float": {"full retrieval": float_full["ndcg@10"],
                      **{f"rerank of {n}": v for n, v in float_rerank.items()}},
            "rows": rows, "summary": summary,
            "target_int8": None if not int8 else {
                "retention_target": TARGET_INT8, "min_mean_retention": min(s["retention"] for s in int8),
                "met": all(s["retention"] >= TARGET_INT8 for s in int8)}}


def report_lines(e: dict) -> list[str]:
    import _common

    r = e.get("refine")
    if not r:
        return []
    lines = ["", f"refine tiers ({e['embeddings']}): NDCG@10 retention vs float32 on the same pipeline "
             f"(mean of seeds [min-max]); float32: " + ", ".join(f"{k} {v:.4f}" for k, v in r["float"].items()), ""]
    rows = [dict(s, range=f"{s['retention_min']:.2%}-{s['retention_max']:.2%}") for s in r["summary"]]
    lines.append(_common.table(rows, [("tier", "tier", ""), ("use", "use", ""),
                                      ("hot_bytes_per_vector", "hot B/vec", ",.0f"),
                                      ("refine_bytes_per_vector", "refine B/vec", ",.0f"),
                                      ("ndcg@10", "NDCG@10", ".4f"), ("retention", "retention", ".2%"),
                                      ("range", "seed range", ""), ("rows_refined_mean", "rows refined", ".1f")]))
    t = r["target_int8"]
    if t:
        lines.append(f"target: int8 NDCG@10 retention >= {t['retention_target']:.1%} in every use: lowest "
                     f"{t['min_mean_retention']:.2%} -> {'MET' if t['met'] else 'MISSED'}")
    return lines
