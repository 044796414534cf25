"""benchmarks/rerank_pipeline.py runs end to end on a tiny generated collection in the
/work/shared/data layout (real runs: docs/benchmarks.md, "Rerank pipeline")."""

from __future__ import annotations

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("llama_index.core")

from ._fixtures import REPO, corpus, embed  # noqa: E402


def _write_collection(root, name, emb_dims):
    coll = root / name
    (coll / "qrels").mkdir(parents=True)
    rows = corpus(n_per_topic=6)
    with open(coll / "corpus.jsonl", "w") as f:
        for doc_id, _topic, text in rows:
            f.write(json.dumps({"_id": doc_id, "title": "", "text": text}) + "\n")
    queries = {f"q{i}": text.split(" ", 3)[-1] for i, (_, _, text) in enumerate(rows[::5])}
    with open(coll / "queries.jsonl", "w") as f:
        for qid, text in queries.items():
            f.write(json.dumps({"_id": qid, "text": text}) + "\n")
    topic_of = {doc_id: topic for doc_id, topic, _ in rows}
    for split in ("test", "train"):
        with open(coll / "qrels" / f"{split}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for (qid, _), (src, _, _) in zip(queries.items(), rows[::5]):
                for doc_id, topic in topic_of.items():
                    if topic == topic_of[src]:
                        f.write(f"{qid}\t{doc_id}\t{2 if doc_id == src else 1}\n")
    for emb, dim in emb_dims.items():
        d = coll / emb
        d.mkdir()
        np.save(d / "corpus.npy", embed([t for _, _, t in rows], dim))
        np.save(d / "queries.npy", embed(list(queries.values()), dim))
        (d / "corpus_ids.json").write_text(json.dumps([r[0] for r in rows]))
        (d / "query_ids.json").write_text(json.dumps(list(queries)))


def test_rerank_pipeline_benchmark_runs(tmp_path, capsys):
    _write_collection(tmp_path, "scifact", {"emb-minilm-l6-v2": 96})
    _write_collection(tmp_path, "cranfield", {"emb-minilm-l6-v2": 40, "emb-mpnet-base-v2": 130})
    bench_dir = os.path.join(REPO, "benchmarks")
    sys.path.insert(0, bench_dir)
    try:
        spec = importlib.util.spec_from_file_location("bench_rerank_pipeline", os.path.join(bench_dir, "rerank_pipeline.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        out = tmp_path / "out.json"
        res = mod.main([str(tmp_path), "--seeds", "0", "1", "--candidates", "12", "--repeats", "1",
                        "--out", str(out), "--work-dir", str(tmp_path)])
    finally:
        sys.path.remove(bench_dir)
    assert json.loads(out.read_text())["benchmark"] == "rerank_pipeline"
    assert [r["setup"] for r in res["results"]] == list(mod.SETUPS)
    for r in res["results"]:
        assert 0 < r["ndcg_first_stage"] <= 1 and 0 < r["ndcg_float_rerank"] <= 1
        assert r["mean_candidates"] <= 12 and len(r["seeds"]) == 2
        for seed in r["seeds"]:
            assert all(seed[p]["same_ranking_as_first_path"] for p in mod.PATHS)  # one store, three paths
            assert 0 < seed["reranker"]["ndcg"] <= 1
        assert set(r["latency"]) == {"float numpy", "store.rerank", *mod.PATHS}
        assert all(v["p50_ms"] > 0 for v in r["latency"].values())
    assert "retention %" in capsys.readouterr().out
