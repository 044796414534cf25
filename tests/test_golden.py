"""Golden stores: written once per format version by tools/make_golden.py, read forever.

``<store>.expected.json`` came with the store; ``<store>.expected-<kind>.json`` files were
added later (``make_golden.py --expectations``) for checks the first file lacked: nprobe
searches and rerank. None of them is ever rewritten.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import zenstore

GOLDEN = Path(__file__).parent / "golden"
STORES = sorted(p for p in GOLDEN.glob("v*.zen") if p.is_dir())
KINDS = ("nprobe", "rerank")


def expected(golden: Path, kind: str | None = None) -> dict:
    suffix = ".expected.json" if kind is None else f".expected-{kind}.json"
    return json.loads(Path(str(golden) + suffix).read_text())


@pytest.fixture
def opened(request, tmp_path):
    """The golden store, copied (opening it would add lock files), opened as asked."""
    golden, readonly = request.param
    path = tmp_path / golden.name
    shutil.copytree(golden, path)
    with zenstore.Store.open(path, readonly=readonly) as store:
        yield golden, store


CASES = [(g, ro) for g in STORES for ro in (True, False)]
CASE_IDS = [f"{g.name}-{'readonly' if ro else 'writer'}" for g, ro in CASES]
with_store = pytest.mark.parametrize("opened", CASES, ids=CASE_IDS, indirect=True)


def assert_same_ranking(got_ids, got_scores, want_ids, want_scores, what: str) -> None:
    """Scores to float32 accumulation-order noise (kernels may sum in a different order
    across versions; l2 scores subtract ~1.4-sized terms); ids exactly, except that ids
    whose saved scores tie within that noise may come in either order."""
    got_scores = np.asarray(got_scores, np.float64)
    want_scores = np.asarray(want_scores, np.float64)
    np.testing.assert_allclose(got_scores, want_scores, rtol=1e-4, atol=1e-4, err_msg=what)
    assert len(got_ids) == len(want_ids), what
    tie = np.isclose(want_scores[1:], want_scores[:-1], rtol=1e-4, atol=1e-4)
    start = 0
    for end in range(1, len(want_ids) + 1):
        if end == len(want_ids) or not tie[end - 1]:
            assert sorted(map(repr, got_ids[start:end])) == sorted(map(repr, want_ids[start:end])), \
                f"{what}: positions {start}..{end - 1}: {got_ids[start:end]} != {want_ids[start:end]}"
            start = end


def test_golden_stores_exist():
    assert {p.name for p in STORES} >= {"v1-cosine-str.zen", "v1-l2-int.zen"}
    for golden in STORES:
        for kind in KINDS:
            assert Path(f"{golden}.expected-{kind}.json").is_file(), "run: python tools/make_golden.py --expectations"


@with_store
def test_golden_store_reads_identically(opened):
    golden, store = opened
    want = expected(golden)
    assert store.verify() == []
    assert len(store) == want["len"]
    ids, scores = store.search_batch(np.array(want["queries"], np.float32), k=5, shortlist=50)
    assert ids.tolist() == want["ids"]
    # ids must match exactly; scores to float32 accumulation-order noise (kernels may
    # sum in a different order across versions; l2 scores subtract ~1.4-sized terms)
    np.testing.assert_allclose(scores, np.array(want["scores"], np.float32), rtol=1e-4, atol=1e-4)
    str_ids = store.stats()["id_type"] == "str"
    assert len(want["vectors"]) == 3
    for key, vector in want["vectors"].items():
        ext = key if str_ids else int(key)
        np.testing.assert_allclose(store.get(ext).vector, vector, rtol=1e-5, atol=1e-6, err_msg=key)
    payload_id = "doc-5" if str_ids else 4993
    assert store.get(payload_id).payload == want["payload_5"]


@with_store
def test_golden_nprobe_searches(opened):
    golden, store = opened
    want = expected(golden, "nprobe")
    queries = np.array(want["queries"], np.float32)
    assert want["searches"]
    for run in want["searches"]:
        opts = {key: run[key] for key in ("k", "shortlist", "nprobe")}
        ids, scores = store.search_batch(queries, **opts)
        for i, q in enumerate(queries):
            what = f"{golden.name} {opts} query {i}"
            assert_same_ranking(ids[i].tolist(), scores[i], run["batch_ids"][i], run["batch_scores"][i],
                                f"batch {what}")
            hits, saved = store.search(q, **opts), run["single"][i]
            assert_same_ranking([h.id for h in hits], [h.score for h in hits], saved["ids"], saved["scores"],
                                f"single {what}")
            assert_same_payloads(hits, saved, what)


@with_store
def test_golden_rerank(opened):
    golden, store = opened
    want = expected(golden, "rerank")
    assert len(set(map(repr, want["ids"]))) < len(want["ids"])  # a repeated id is scored once
    for i, (q, saved) in enumerate(zip(np.array(want["queries"], np.float32), want["hits"])):
        hits = store.rerank(q, want["ids"], top_n=want["top_n"])
        what = f"{golden.name} rerank query {i}"
        assert len(hits) == want["top_n"]
        assert_same_ranking([h.id for h in hits], [h.score for h in hits], saved["ids"], saved["scores"], what)
        assert_same_payloads(hits, saved, what)


def assert_same_payloads(hits, saved: dict, what: str) -> None:
    by_id = {repr(i): p for i, p in zip(saved["ids"], saved["payloads"])}
    assert [h.payload for h in hits] == [by_id[repr(h.id)] for h in hits], what


def test_make_golden_adds_only_missing_expectations(tmp_path, monkeypatch, capsys):
    """``make_golden.py --expectations`` writes what is missing and never rewrites a file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN.parents[1] / "tools" / "make_golden.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "golden"
    shutil.copytree(GOLDEN, out)
    monkeypatch.setattr(tool, "OUT", str(out))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert tool.add_expectations() == []  # everything exists: nothing written
    (out / "v1-l2-int.zen.expected-rerank.json").unlink()
    assert tool.add_expectations() == [str(out / "v1-l2-int.zen.expected-rerank.json")]
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[n] == before[n] for n in before if n != "v1-l2-int.zen.expected-rerank.json")
    rewritten = json.loads(after["v1-l2-int.zen.expected-rerank.json"])
    saved = json.loads(before["v1-l2-int.zen.expected-rerank.json"])
    assert rewritten["ids"] == saved["ids"]
    for got, want in zip(rewritten["hits"], saved["hits"]):  # rerunnable: the same answers
        assert_same_ranking(got["ids"], got["scores"], want["ids"], want["scores"], "regenerated rerank")
    assert "kept" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the stores themselves are written once
        tool.main([])
