"""Smoke tests of benchmarks/codec_grid.py (real stores over a grid of codec options) at a
tiny size, and of the benchmarks' thread control it relies on. The measured run is in
docs/codec_study.md."""

import importlib.util
import json
import os
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def codec_grid():
    spec = importlib.util.spec_from_file_location("bench_codec_grid", os.path.join(REPO, "benchmarks", "codec_grid.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve the module's annotations through sys.modules
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        del sys.modules[spec.name]


def test_axes_design_varies_one_option_at_a_time_and_full_takes_every_combination(codec_grid):
    O = codec_grid.CodecOptions
    axes = codec_grid.grid([1, 64], [1, 2], ["unbiased", "l2"], ["hadamard", "none"], "axes")
    assert axes == [O(1, 1, "unbiased", "hadamard"), O(1, 2, "unbiased", "hadamard"),
                    O(1, 1, "l2", "hadamard"), O(1, 1, "unbiased", "none"),
                    O(64, 1, "unbiased", "hadamard"), O(64, 2, "unbiased", "hadamard"),
                    O(64, 1, "l2", "hadamard"), O(64, 1, "unbiased", "none")]
    full = codec_grid.grid([8], [1, 2], ["unbiased", "l2"], ["hadamard", "none"], "full")
    assert len(full) == len(set(full)) == 8 and {p.n_base for p in full} == {8}
    with pytest.raises(ValueError, match="design"):
        codec_grid.grid([8], [1], ["unbiased"], ["none"], "diagonal")


def test_grid_on_generated_data_builds_each_store(tmp_path, codec_grid, capsys):
    out = tmp_path / "grid.json"
    r = codec_grid.main(["synth", "--n", "1500", "--dim", "128", "--nq", "20", "--n-base", "1", "8",
                         "--data-dir", str(tmp_path), "--work-dir", str(tmp_path), "--out", str(out)])
    assert json.loads(out.read_text())["benchmark"] == "codec_grid"
    assert r["n_docs"] == 1500 and r["dim"] == 128 and r["n_queries"] == 20
    assert len(r["rows"]) == len(r["summary"]) == 8
    for row in r["rows"]:
        assert row["n_base_effective"] == row["n_base"]  # the requested rows were trained
        assert row["bytes_per_vector"] == 128 // 8 + 2 * row["scale_blocks"] + 2  # real stores' own bytes
        assert set(row["recall@10"]) == {"default", "1000"} and row["ndcg@10"] == {}
        assert all(0.0 <= v <= 1.0 for v in row["recall@10"].values())
    ref = next(s for s in r["summary"] if (s["n_base"], s["scale_blocks"], s["scale_estimator"], s["rotation"])
               == (8, 1, "unbiased", "hadamard"))
    assert ref["recall@10 default"] > 0.4  # 1 bit/dim on this data: far above chance (10/1500)
    assert not [d for d in os.listdir(tmp_path) if d.startswith("codec-grid-")]  # each store removed after use
    text = capsys.readouterr().out
    assert "recall@10 (shortlist default)" in text and "rerun: OMP_WAIT_POLICY=passive python benchmarks/codec_grid.py synth" in text


def _tiny_collection(root, n_docs=240, n_queries=16, dim=64, seed=5):
    """A BEIR-layout collection whose relevant docs are each query's 2 exact neighbours."""
    rng = np.random.default_rng(seed)
    docs = rng.standard_normal((n_docs, dim)) + 2.0 * rng.standard_normal((8, dim))[rng.integers(0, 8, n_docs)]
    docs = (docs / np.linalg.norm(docs, axis=1, keepdims=True)).astype(np.float32)
    queries = docs[:n_queries] + 0.4 * rng.standard_normal((n_queries, dim))
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)
    emb = root / "emb-tiny"
    emb.mkdir(parents=True)
    (root / "qrels").mkdir()
    np.save(emb / "corpus.npy", docs)
    np.save(emb / "queries.npy", queries)
    (emb / "corpus_ids.json").write_text(json.dumps([f"doc{i}" for i in range(n_docs)]))
    (emb / "query_ids.json").write_text(json.dumps([f"q{i}" for i in range(n_queries)]))
    top = np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :2]
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\tdoc{j}\t1" for i, row in enumerate(top) for j in row]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


def test_grid_on_a_collection_reports_ndcg_retention_over_seeds(tmp_path, codec_grid, capsys):
    _tiny_collection(tmp_path / "coll")
    r = codec_grid.main([str(tmp_path / "coll"), "--n-base", "1", "32", "--scale-blocks", "1",
                         "--scale-estimators", "unbiased", "--rotations", "hadamard", "none", "--design", "full",
                         "--seeds", "0", "1", "--shortlists", "default", "--work-dir", str(tmp_path),
                         "--out", str(tmp_path / "grid.json")])
    assert r["float_ndcg"] == pytest.approx(1.0)  # the qrels are the exact neighbours
    assert r["n_queries"] == 16 and len(r["rows"]) == 2 * 2 * 2 and len(r["summary"]) == 4
    # 240 docs cannot train 32 rows at the default 16 per row: the grid lowers the minimum
    assert {row["n_base_effective"] for row in r["rows"]} == {1, 32}
    for line in r["summary"]:
        assert line["seeds"] == 2
        lo, hi = line["retention default range"]
        assert 0.3 < lo <= line["retention default"] <= hi <= 1.0 + 1e-9
        assert 0.0 <= line["recall@10 default"] <= 1.0
    text = capsys.readouterr().out
    assert "exact float32 NDCG@10: 1.0000" in text and "NDCG@10 retention (shortlist default)" in text


def test_set_threads_limits_numba_and_every_loaded_runtime(codec_grid):
    common = codec_grid._common
    import numba

    before = common.thread_counts()["numba"]
    try:
        counts = common.set_threads(1)
        assert counts["numba"] == 1 and numba.get_num_threads() == 1
        libs = {k: v for k, v in counts.items() if k != "numba"}
        # numpy's OpenBLAS, faiss's OpenBLAS and libgomp (numba's libgomp too once a parallel kernel ran)
        assert any(k.startswith("openblas") for k in libs) and any(k.startswith("openmp") for k in libs)
        assert set(libs.values()) == {1}
        import faiss

        assert faiss.omp_get_max_threads() == 1  # faiss's own OpenMP runtime, reached by threadpoolctl
    finally:
        common.set_threads(before)
    assert common.thread_counts()["numba"] == before


def test_codec_grid_runs_as_a_script():
    import subprocess

    res = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "codec_grid.py"), "--help"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "usage:" in res.stdout and "--scale-estimators" in res.stdout, res.stderr
