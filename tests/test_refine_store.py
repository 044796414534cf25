"""A store with a refine tier (issue 12): its files, config and stats, merges and deletes,
search with and without refinement, get/rerank, corruption, and compatibility with
stores that have no tier. The codec itself is tested in tests/test_refine_codec.py."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zenstore
from zenstore import Store, verify_store
from zenstore import format as fmt
from zenstore.errors import CorruptStore, FileMissing, FormatVersionError, InvalidArgument

from .conftest import slow_run

DIM = 192  # not a power of two; three code words
DETECTED = (CorruptStore, FileMissing, FormatVersionError)


def clustered(seed: int, n: int, nq: int, dim: int = DIM):
    """Docs and queries around shared centres: the hot code ranks them imperfectly."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((24, dim))
    docs = centres[rng.integers(0, 24, n)] + 0.7 * rng.standard_normal((n, dim))
    queries = centres[rng.integers(0, 24, nq)] + 0.7 * rng.standard_normal((nq, dim))
    return docs.astype(np.float32), queries.astype(np.float32)


def exact_top(docs, queries, k, metric="cosine"):
    if metric == "cosine":
        d = docs / np.linalg.norm(docs, axis=1, keepdims=True)
        q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        return np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :k]
    if metric == "ip":
        return np.argsort(-(queries @ docs.T), axis=1, kind="stable")[:, :k]
    dist = (queries ** 2).sum(1)[:, None] - 2 * queries @ docs.T + (docs ** 2).sum(1)[None, :]
    return np.argsort(dist, axis=1, kind="stable")[:, :k]


def recall(ids, truth) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(ids, truth)]))


def make(path, refine, docs, metric="cosine", batches=1, **options):
    s = Store.create(path, dim=docs.shape[1], metric=metric, refine=refine, n_base=16, seed=3, **options)
    for part in np.array_split(np.arange(len(docs)), batches):
        s.add(part, docs[part])
    return s


@pytest.fixture(scope="module")
def data():
    return clustered(0, 3000, 60)


# --- the config and the files ------------------------------------------------------------


def test_refine_tier_recorded_and_files_beside_segments(tmp_path, data):
    docs, _ = data
    with make(tmp_path / "s", "int8", docs[:500], batches=2, segment_fanout=4) as s:
        assert s.config.refine == {"kind": "int8", "bits": 8}
        st_ = s.stats()
        assert st_["bytes_per_vector"] == 192 // 8 + 4  # the hot code is unchanged
        assert st_["refine"] == "int8" and st_["refine_bytes_per_vector"] == 192 + 4
        assert st_["format_version"] == 4
        segs = s.snapshot().manifest.segments
        assert len(segs) == 2
        on_disk = sorted(os.listdir(tmp_path / "s" / "segments"))
        assert on_disk == sorted(os.path.basename(f) for r in segs for f in r.files)
        sizes = sum(os.path.getsize(tmp_path / "s" / r.refine.file) for r in segs)
        assert st_["refine_file_bytes"] == sizes == st_["bytes_on_disk"]["refine_files"]
        assert sizes >= 500 * (192 + 4)
    with Store.open(tmp_path / "s", readonly=True) as ro:
        assert ro.config.refine_tier.name == "int8" and ro.verify() == []


@pytest.mark.parametrize("value", ["int4", "magnitude5", 8, {"kind": "int8", "bits": 4}, {"kind": "x"}])
def test_bad_refine_option_refused(tmp_path, value):
    with pytest.raises(InvalidArgument):
        Store.create(tmp_path / "s", dim=64, refine=value)
    assert not (tmp_path / "s").exists()


def test_store_without_tier_keeps_its_bytes(tmp_path, data):
    """No refine tier: no 'refine' key in the config or the manifest, format version 1."""
    docs, _ = data
    with make(tmp_path / "s", None, docs[:300]) as s:
        assert "refine" not in s.config.to_dict()
        manifest = s.snapshot().manifest.to_dict()
        assert all("refine" not in seg for seg in manifest["segments"])
        assert s.stats()["format_version"] == 1 and s.stats()["refine"] is None
        assert s.stats()["refine_bytes_per_vector"] == 0
        assert not [n for n in os.listdir(tmp_path / "s" / "segments") if n.endswith(".zref")]


def test_older_reader_refuses_a_refine_store_by_version(tmp_path, data, monkeypatch):
    """What a zenstore of format version 3 does with a refine store: refuses it, naming
    both versions (the version is checked before the config's new field is read)."""
    docs, _ = data
    make(tmp_path / "s", "magnitude4", docs[:200]).close()
    monkeypatch.setattr(fmt, "FORMAT_VERSION", 3)
    with pytest.raises(FormatVersionError, match="version 4.*up to version 3"):
        Store.open(tmp_path / "s", readonly=True)


# --- values -------------------------------------------------------------------------------


@pytest.mark.parametrize("tier,floor", [("int8", 0.9999), ("magnitude4", 0.99)])
def test_get_returns_the_refined_vector_through_merges(tmp_path, data, tier, floor):
    """get() and iter_records() return refined vectors; merges, upserts and deletes keep
    each refine row with its own row (a mismatch would drop the cosine far below)."""
    docs, _ = data
    n = 600
    with make(tmp_path / "s", tier, docs[:n], batches=6, segment_fanout=2) as s:
        s.upsert(np.arange(10), docs[n:n + 10])
        s.delete(np.arange(10, 40))
        want = dict(enumerate(docs[:n]))
        want.update({i: docs[n + i] for i in range(10)})
        for i in range(10, 40):
            del want[i]
        for phase in ("merged", "compacted"):
            got = {}
            for ids, vecs, _ in s.iter_records(batch_size=97):
                got.update(zip(ids.tolist(), vecs))
            assert set(got) == set(want), phase
            cos = [float(v @ want[i] / np.linalg.norm(v) / np.linalg.norm(want[i])) for i, v in got.items()]
            assert min(cos) > floor, phase
            r = s.get(5).vector
            assert np.allclose(r, got[5])
            s.compact()
        assert s.verify() == []
        assert len(os.listdir(tmp_path / "s" / "segments")) == 2  # one segment, one refine file
    with make(tmp_path / "hot", None, docs[:n]) as hot:  # the hot code alone is much coarser
        v = hot.get(100).vector
        assert float(v @ docs[100] / np.linalg.norm(v) / np.linalg.norm(docs[100])) < 0.95


def test_refinement_raises_recall(tmp_path, data):
    """The point of the tier: recall@10 vs exact search, with and without refinement,
    on the same store (refine=False is the hot ranking)."""
    docs, queries = data
    truth = exact_top(docs, queries, 10)
    with make(tmp_path / "s", "int8", docs) as s:
        refined = np.zeros(len(queries), np.int64)
        ids_r, _ = s.search_batch(queries, k=10, refined_rows=refined)
        ids_h, _ = s.search_batch(queries, k=10, refine=False)
        r_ref, r_hot = recall(ids_r, truth), recall(ids_h, truth)
        assert r_ref >= 0.97, (r_ref, r_hot)
        assert r_ref >= r_hot + 0.15, (r_ref, r_hot)
        assert (refined >= 10).all() and (refined <= 100).all()  # the pool cap (refine_k 100)
        assert refined.mean() < 100  # the bound stops early on most queries
        ids_k, _ = s.search_batch(queries, k=10, refine_k=10)
        assert recall(ids_k, truth) <= r_ref + 1e-9


def test_refine_false_is_the_store_without_a_tier(tmp_path, data):
    """Same seed, same hot code: refine=False must give exactly a tierless store's answers."""
    docs, queries = data
    with make(tmp_path / "a", "magnitude4", docs[:1500]) as a, make(tmp_path / "b", None, docs[:1500]) as b:
        ia, sa = a.search_batch(queries, k=10, refine=False)
        ib, sb = b.search_batch(queries, k=10)
        assert np.array_equal(ia, ib) and np.array_equal(sa, sb)
        hits = b.search(queries[0], k=10)
        assert [h.id for h in a.rerank(queries[0], [h.id for h in hits], refine=False)] == \
            [h.id for h in b.rerank(queries[0], [h.id for h in hits])]


@settings(max_examples=6, deadline=None)
@given(metric=st.sampled_from(["cosine", "ip", "l2"]), tier=st.sampled_from(["int8", "magnitude2", "magnitude8"]),
       seed=st.integers(0, 1000))
def test_refined_scores_equal_numpy_reference(tmp_path_factory, metric, tier, seed):
    """Search and rerank scores of a refine store = numpy scores of the refined vectors
    get() returns (l2: ||q||^2 - 2 q.x_ref + ||x||^2, the true norm being stored)."""
    docs, queries = clustered(seed, 400, 4, dim=128)
    path = tmp_path_factory.mktemp("ref") / "s"
    with make(path, tier, docs, metric=metric) as s:
        for q in queries:
            hits = s.search(q, k=5)
            again = s.rerank(q, [h.id for h in hits], top_n=5)
            assert [h.id for h in again] == [h.id for h in hits]
            for h, h2 in zip(hits, again):
                x_ref = s.get(h.id).vector
                if metric == "cosine":
                    want = float(q @ x_ref / np.linalg.norm(q))
                elif metric == "ip":
                    want = float(q @ x_ref)
                else:
                    want = float(q @ q - 2 * q @ x_ref + docs[h.id] @ docs[h.id])
                assert h.score == pytest.approx(want, rel=2e-4, abs=2e-4)
                assert h2.score == pytest.approx(h.score, rel=1e-5, abs=1e-5)


def test_refine_with_filters_and_nprobe(tmp_path, data):
    docs, queries = data
    with make(tmp_path / "s", "int8", docs[:1000]) as s:
        allowed = np.arange(0, 1000, 3)
        ids, _ = s.search_batch(queries[:10], k=5, filter_ids=allowed)
        assert set(ids[ids >= 0].tolist()) <= set(allowed.tolist())
        truth = exact_top(docs[allowed], queries[:10], 5)
        assert recall(ids, allowed[truth]) >= 0.95
        ids, scores = s.search_batch(queries[:10], k=5, nprobe=2)
        assert (ids >= 0).all() and np.all(np.diff(scores, axis=1) <= 1e-6)


def test_search_arguments_checked(tmp_path, data):
    docs, queries = data
    with make(tmp_path / "s", "int8", docs[:100]) as s:
        with pytest.raises(InvalidArgument):
            s.search(queries[0], refine_k=0)
        with pytest.raises(InvalidArgument):
            s.search(queries[0], refine="yes")
        with pytest.raises(InvalidArgument):
            s.search_batch(queries, refined_rows=np.zeros(3, np.int64))


# --- damage ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, data):
    docs, queries = data
    path = tmp_path_factory.mktemp("refine-pristine") / "s"
    make(path, "int8", docs[:400], batches=2, segment_fanout=4).close()
    return path


@pytest.fixture
def damaged(pristine, tmp_path):
    copy = tmp_path / "s"
    shutil.copytree(pristine, copy)
    return copy


def _expect_detected(path, what):
    problems = verify_store(path)
    assert problems, f"verify missed: {what}"
    assert any(".zref" in p for p in problems), problems
    with pytest.raises(DETECTED) as info:
        with Store.open(path, readonly=True) as s:
            s.search_batch(np.ones((1, DIM), np.float32), k=5)
    assert ".zref" in str(info.value), info.value


def test_flipped_bytes_of_a_refine_file_detected(damaged):
    f = damaged / "segments" / "seg-00000001.zref"
    raw = f.read_bytes()
    header = fmt.parse_file_header(raw, expect_kind=fmt.FILE_KIND_REFINE, actual_size=len(raw), what="x")
    rows = header.sections["rows"]
    rnd = np.random.default_rng(0)
    if slow_run():  # every byte of the header and of the records
        offsets = list(range(header.header_size)) + list(range(rows.offset, rows.offset + rows.length))
    else:
        # magic, version, kind, sections, size, meta length, crc, a section entry, metadata
        offsets = sorted({0, 8, 9, 10, 12, 16, 24, 28, 32, 40, 48, header.header_size - 1, rows.offset,
                          rows.offset + rows.length - 1}
                         | set(rnd.integers(64, header.header_size, 4).tolist())
                         | set(rnd.integers(rows.offset, rows.offset + rows.length, 6).tolist()))
    for off in offsets:
        bad = bytearray(raw)
        bad[off] ^= 1 << int(rnd.integers(8))
        f.write_bytes(bytes(bad))
        _expect_detected(damaged, f"byte {off}")
    f.write_bytes(raw)
    assert verify_store(damaged) == []


def test_missing_swapped_and_foreign_refine_files_detected(damaged, tmp_path, data):
    one, two = damaged / "segments" / "seg-00000001.zref", damaged / "segments" / "seg-00000002.zref"
    raw1, raw2 = one.read_bytes(), two.read_bytes()
    one.unlink()
    _expect_detected(damaged, "missing")
    one.write_bytes(raw2)  # another segment's (valid) refine file
    _expect_detected(damaged, "swapped")
    one.write_bytes(raw1[: len(raw1) // 2])
    _expect_detected(damaged, "truncated")
    docs, _ = data
    make(tmp_path / "other", "int8", docs[400:800], batches=2, segment_fanout=4).close()
    shutil.copy(tmp_path / "other" / "segments" / "seg-00000001.zref", one)  # same id, other store
    _expect_detected(damaged, "foreign")
    one.write_bytes(raw1)
    assert verify_store(damaged) == []


def test_manifest_and_config_disagreeing_about_the_tier_detected(damaged):
    """A manifest that lost a segment's refine record (or a config that lost its tier)."""
    from zenstore import records

    cat = records.open_catalog(str(damaged), readonly=False)
    try:
        with cat.write() as txn:
            m = records.read_manifest(txn, str(damaged)).to_dict()
            del m["segments"][0]["refine"]
            txn.put(records.META, records._MANIFEST_KEY, json.dumps(m).encode())
    finally:
        cat.close()
    problems = verify_store(damaged)
    assert problems and "refine" in problems[0]
    with pytest.raises(CorruptStore, match="refine"):
        Store.open(damaged, readonly=True)


def test_zenstore_stats_cli_reports_the_tier(tmp_path, data, capsys):
    from zenstore.cli import main

    docs, _ = data
    make(tmp_path / "s", "magnitude4", docs[:100]).close()
    assert main(["stats", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "refine tier:       magnitude4" in out and "refine_files" in out
    assert zenstore.FORMAT_VERSION == 4


def test_search_reads_only_the_refined_records(tmp_path, data, monkeypatch):
    """The refine stage reads exactly the records it refines (not the whole pool)."""
    from zenstore import refinement

    docs, queries = data
    seen = []
    real = refinement._refine_dots

    def spy(segments, tier, q, qidx, tags):
        seen.append(len(tags))
        return real(segments, tier, q, qidx, tags)

    with make(tmp_path / "s", "int8", docs[:2000]) as s:
        monkeypatch.setattr(refinement, "_refine_dots", spy)  # after the add: its calibration searches refine too
        refined = np.zeros(len(queries), np.int64)
        s.search_batch(queries, k=10, refined_rows=refined)
        assert sum(seen) == refined.sum() and refined.sum() < 100 * len(queries)


def test_refine_with_payload_filters(tmp_path, data):
    """A payload filter (indexed or not) narrows the candidates; refinement then ranks them."""
    docs, queries = data
    n = 1200
    with Store.create(tmp_path / "s", dim=DIM, refine="int8", n_base=16, seed=3) as s:
        s.add(np.arange(n), docs[:n], payloads=[{"lang": "en" if i % 3 == 0 else "de"} for i in range(n)])
        allowed = np.arange(0, n, 3)
        truth = allowed[exact_top(docs[allowed], queries[:12], 10)]
        for indexed in (False, True):
            if indexed:
                s.create_payload_index("lang", "keyword")
            refined = np.zeros(12, np.int64)
            ids, _ = s.search_batch(queries[:12], k=10, filter={"lang": "en"}, refined_rows=refined)
            assert set(ids[ids >= 0].tolist()) <= set(allowed.tolist())
            assert recall(ids, truth) >= 0.95 and (refined > 0).all()
            hot, _ = s.search_batch(queries[:12], k=10, filter={"lang": "en"}, refine=False)
            assert recall(ids, truth) > recall(hot, truth)
        assert s.stats()["format_version"] == 4  # indexes do not lower a refine store's version
