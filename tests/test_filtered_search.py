"""Filtered search against a brute-force model: random payloads, random filters, random
add / upsert / delete / compact / index create / drop sequences (hypothesis).

After each sequence, for a few queries:

- the rows the store selects are exactly the live ids whose model payload matches;
- every hit matches the filter, and a search returns min(k, matching) hits, with nprobe too;
- with a full scan (shortlist covering every row) the filtered top-k is the exact filtered
  top-k over the dequantized scores (``store.get(id).vector``);
- the index path and the no-index path return identical ids and scores;
- ``verify()`` is clean (it checks every index record against the payloads).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zenstore
from zenstore import Store, planner, search, selection
from zenstore.filters import compile_filter

from .conftest import scale, slow_run
from .test_filters import aligned_payloads, answerable_filters, filters, indexed_fields
from .test_golden import assert_same_ranking

DIM = 64
ID_SPACE = 40

id_lists = st.lists(st.integers(0, ID_SPACE - 1), min_size=1, max_size=10, unique=True)
ops = st.lists(st.one_of(
    st.tuples(st.just("add"), id_lists, st.lists(aligned_payloads | st.none(), min_size=10, max_size=10)),
    st.tuples(st.just("upsert"), id_lists, st.lists(aligned_payloads | st.none(), min_size=10, max_size=10)),
    st.tuples(st.just("delete"), id_lists, st.just(None)),
    st.tuples(st.just("compact"), st.just([]), st.just(None)),
    st.tuples(st.just("index"), st.just([]), st.just(None)),
    st.tuples(st.just("drop"), st.just([]), st.just(None)),
), max_size=7)
PROPERTY = settings(max_examples=scale(30, 200), deadline=None, database=None, derandomize=not slow_run(),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def vec(i: int, version: int) -> np.ndarray:
    return np.random.default_rng(1000 * i + version).standard_normal(DIM).astype(np.float32)


def no_index_path():
    """Selection as if the store had no payload index (filters checked on payloads)."""
    return mock.patch.object(selection.records, "has_payload_index_db", return_value=False)


def forced(strategy: str):
    """Filtered searches run ``strategy`` whatever the planner would choose."""
    return mock.patch.object(search, "choose", lambda m, n, sl: planner.FilterPlan(strategy, m, n, sl))


class Model:
    def __init__(self, store: Store):
        self.store = store
        self.payloads: dict = {}
        self.version = 0

    def apply(self, op, ids, payloads, kinds):
        self.version += 1
        s = self.store
        if op in ("add", "upsert"):
            if op == "add":
                ids = [i for i in ids if i not in self.payloads]
                if not ids:
                    return
            docs = payloads[: len(ids)]
            s.add(ids, np.stack([vec(i, self.version) for i in ids]), docs) if op == "add" else \
                s.upsert(ids, np.stack([vec(i, self.version) for i in ids]), docs)
            self.payloads.update(zip(ids, docs))
        elif op == "delete":
            gone = s.delete(ids, missing_ok=True)
            assert gone == len([i for i in ids if i in self.payloads])
            for i in ids:
                self.payloads.pop(i, None)
        elif op == "compact":
            s.compact()
        elif op == "index":
            for field, kind in kinds.items():
                if field not in s.payload_indexes():
                    assert s.create_payload_index(field, kind)
        elif op == "drop" and s.payload_indexes():
            s.drop_payload_index(sorted(s.payload_indexes())[0])

    def matching(self, flt) -> set:
        return {i for i, p in self.payloads.items() if flt.matches(p)}


def selected_ids(store: Store, flt) -> set:
    with store._view.reading() as (snap, txn):
        sel = selection.select_rows(snap, txn, flt)
        if sel is None:
            return set(snap.live_ids().tolist())
        return {int(x) for seg, rows in zip(snap.segments, sel.rows) for x in seg.ids[rows].tolist()}


def exact_top(store: Store, q: np.ndarray, ids: set, k: int):
    """The exact filtered top-k: cosine scores of the dequantized vectors, best first."""
    if not ids:
        return [], np.zeros(0)
    qn = q / np.linalg.norm(q)
    order = sorted(ids)
    scores = np.array([float(store.get(i).vector @ qn) for i in order])
    best = np.lexsort((np.array(order), -scores))[:k]
    return [order[b] for b in best], scores[best]


@PROPERTY
@given(history=ops, spec=st.one_of(filters, answerable_filters), kinds=indexed_fields,
       first=st.lists(aligned_payloads | st.none(), min_size=12, max_size=12), k=st.integers(1, 8))
def test_filtered_search_equals_the_brute_force_model(history, spec, kinds, first, k):
    flt = compile_filter(spec)
    root = tempfile.mkdtemp(prefix="zen-filtered-")
    try:
        with Store.create(os.path.join(root, "s.zen"), dim=DIM, n_base=4, min_rows_per_base=2,
                          segment_fanout=2) as store:
            model = Model(store)
            model.apply("add", list(range(12)), first, kinds)
            model.apply("index", [], None, kinds)
            for op, ids, payloads in history:
                model.apply(op, ids, payloads, kinds)
            want = model.matching(flt)
            assert selected_ids(store, flt) == want
            assert set(store.ids(filter=spec).tolist()) == want and len(store.ids(filter=spec)) == len(want)
            with no_index_path():
                assert selected_ids(store, flt) == want
            rows = store.stats()["stored_rows"]
            queries = np.stack([vec(900 + j, 0) for j in range(3)])
            got_ids, got_scores = store.search_batch(queries, k=k, shortlist=rows + 1, filter=spec)
            with no_index_path():
                plain_ids, plain_scores = store.search_batch(queries, k=k, shortlist=rows + 1, filter=spec)
            np.testing.assert_array_equal(got_ids, plain_ids)
            np.testing.assert_array_equal(got_scores, plain_scores)
            for j, q in enumerate(queries):
                found = [x for x in got_ids[j].tolist() if x != -1]
                assert len(found) == min(k, len(want)) and set(found) <= want
                exact_ids, exact_scores = exact_top(store, q, want, k)
                assert_same_ranking(found, got_scores[j][: len(found)], exact_ids, exact_scores,
                                    f"query {j}, filter {spec}")
            for strategy in (planner.EXACT, planner.LISTED, planner.BITMAP):
                with forced(strategy):  # each way, with a shortlist of every row, is exact
                    ids, scores = store.search_batch(queries, k=k, shortlist=rows + 1, filter=spec)
                    np.testing.assert_array_equal(ids, got_ids, err_msg=strategy)
                    np.testing.assert_allclose(scores, got_scores, rtol=1e-5, atol=1e-6, err_msg=strategy)
                    for q in queries[:2]:
                        hits = store.search(q, k=k, nprobe=1, filter=spec)
                        assert len(hits) == min(k, len(want)), strategy
                        assert all(h.id in want and h.payload == model.payloads[h.id] for h in hits)
            if model.payloads:
                some = sorted(model.payloads)[:6]
                reranked = store.rerank(queries[0], some, top_n=10, filter=spec)
                assert {h.id for h in reranked} == set(some) & want
            assert store.verify() == []
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- a selective filter with nprobe must not starve the shortlist --------------------------------


@pytest.fixture(scope="module")
def clustered_store(tmp_path_factory):
    from .conftest import clustered

    rng = np.random.default_rng(3)
    n = 4000
    x = clustered(rng, n, DIM, n_clusters=32, spread=0.4)
    tenants = rng.integers(0, 100, n)
    path = tmp_path_factory.mktemp("filtered") / "s.zen"
    with Store.create(path, dim=DIM, n_base=32, min_rows_per_base=4) as s:
        s.add(range(n), x, [{"tenant": int(t), "half": int(t % 2), "t": f"t{t}"} for t in tenants])
        s.create_payload_index("tenant", "int")
        s.create_payload_index("t", "keyword")
    return path, x, tenants


@pytest.mark.parametrize("spec", [{"tenant": 7}, {"tenant": {"$lt": 10}}, {"half": 1},
                                  {"t": {"$in": ["t1", "t2", "t3"]}, "tenant": {"$gte": 2}}])
def test_selective_filter_with_nprobe_fills_k_with_good_neighbours(clustered_store, spec):
    path, x, tenants = clustered_store
    flt = compile_filter(spec)
    with Store.open(path, readonly=True) as s:
        match = np.array([flt.matches(s.get(i).payload) for i in range(len(x))])
        queries = x[:40] + 0.05
        k = 10
        exact, _ = s.search_batch(queries, k=k, shortlist=len(x), filter=spec)
        for nprobe in (1, 2):
            ids, _ = s.search_batch(queries, k=k, nprobe=nprobe, filter=spec)
            assert ((ids >= 0).sum(axis=1) == min(k, int(match.sum()))).all()
            assert match[ids[ids >= 0]].all()
            recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(ids.tolist(), exact.tolist())])
            plain, _ = s.search_batch(queries, k=k, nprobe=nprobe)
            unfiltered_exact, _ = s.search_batch(queries, k=k, shortlist=len(x))
            plain_recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(plain.tolist(),
                                                                               unfiltered_exact.tolist())])
            assert recall >= plain_recall - 0.05, (spec, nprobe, recall, plain_recall)


def test_filter_ids_and_filter_combine(clustered_store):
    path, x, tenants = clustered_store
    with Store.open(path, readonly=True) as s:
        ids = list(range(0, 4000, 3))
        allowed = {i for i in ids if tenants[i] < 20}
        hits = s.search(x[0], k=50, filter_ids=ids, filter={"tenant": {"$lt": 20}})
        assert hits and {h.id for h in hits} <= allowed
        got, _ = s.search_batch(x[:3], k=2000, shortlist=4000, filter_ids=ids, filter={"tenant": {"$lt": 20}})
        assert {v for v in got[0].tolist() if v >= 0} == allowed
        with pytest.raises(zenstore.IdTypeMismatch):
            s.search(x[0], filter_ids=["a"], filter={"tenant": 1})


def test_a_filter_nothing_matches_returns_no_hits(clustered_store):
    path, x, _ = clustered_store
    with Store.open(path, readonly=True) as s:
        assert s.search(x[0], filter={"tenant": 1000}) == []
        ids, scores = s.search_batch(x[:2], k=3, filter={"t": "nobody"})
        assert (ids == -1).all() and np.isnan(scores).all()
        assert s.rerank(x[0], [1, 2], filter={"tenant": 1000}) == []
        with pytest.raises(zenstore.InvalidVector):  # a bad query is still refused
            s.search(np.zeros(DIM), filter={"tenant": 1000})


def test_the_empty_filter_is_no_filter(clustered_store):
    path, x, _ = clustered_store
    with Store.open(path, readonly=True) as s:
        a = s.search_batch(x[:5], k=5, nprobe=2)
        b = s.search_batch(x[:5], k=5, nprobe=2, filter={})
        np.testing.assert_array_equal(a[0], b[0])


# --- malformed filters through every surface of the store ------------------------------------------


def _malformed():
    from .test_filters import MALFORMED
    return sorted(MALFORMED.items())


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad-filters") / "s.zen"
    rng = np.random.default_rng(0)
    with Store.create(path, dim=DIM, n_base=2) as s:
        s.add(range(20), rng.standard_normal((20, DIM)), [{"a": i} for i in range(20)])
        s.create_payload_index("a", "int")
    return path


@pytest.mark.parametrize("case", [c for c, _ in _malformed()])
def test_malformed_filter_is_refused_by_every_store_call(small_store, case):
    spec, message = dict(_malformed())[case]
    with Store.open(small_store) as s:
        before = s.stats()["generation"]
        q = np.ones(DIM, np.float32)
        calls = [lambda: s.search(q, filter=spec), lambda: s.search_batch(q[None], filter=spec),
                 lambda: s.rerank(q, [1, 2], filter=spec),
                 lambda: s.search(np.zeros(3), filter=spec)]  # refused before the query is looked at
        for call in calls:
            with pytest.raises(zenstore.InvalidFilter) as info:
                call()
            assert message in str(info.value)
        assert s.stats()["generation"] == before and s.verify() == []


# --- exactness corners of the index path ------------------------------------------------------------


def test_numbers_an_index_cannot_key_are_rechecked(tmp_path):
    """Rows holding 1.5 under an int index, 2**53 + 1 under float, 2**70 under both are
    unkeyed: every scan of the field re-checks them on their payloads."""
    values = [1, 1.5, 2, 2**53 + 1, 2**70, -3, [1.5, 7], "1", True, None, 2**53]
    path = tmp_path / "s.zen"
    rng = np.random.default_rng(1)
    with Store.create(path, dim=DIM, n_base=2) as s:
        s.add(range(len(values)), rng.standard_normal((len(values), DIM)), [{"n": v, "f": v} for v in values])
        s.create_payload_index("n", "int")
        s.create_payload_index("f", "float")
        specs = [{"n": {"$gt": 1}}, {"n": 1.5}, {"n": {"$in": [2**70, 2]}}, {"f": 2**53 + 1}, {"f": {"$gte": 2**53}},
                 {"n": {"$lt": 2}}, {"$or": [{"n": 1.5}, {"f": -3}]}, {"n": {"$gt": 1, "$lt": 2}}, {"f": {"$gt": 2**60}}]
        q = np.ones(DIM, np.float32)
        for spec in specs:
            flt = compile_filter(spec)
            want = {i for i, v in enumerate(values) if flt.matches({"n": v, "f": v})}
            with s._view.reading() as (snap, txn):
                sel = selection.select_rows(snap, txn, flt)
                assert sel.indexed
            assert selected_ids(s, flt) == want, spec
            assert {h.id for h in s.search(q, k=20, filter=spec)} == want, spec


def test_index_lifecycle_and_format_version(tmp_path):
    path = tmp_path / "s.zen"
    rng = np.random.default_rng(2)
    with Store.create(path, dim=DIM, n_base=2) as s:
        s.add(range(30), rng.standard_normal((30, DIM)), [{"lang": ["en", "de"][i % 2], "y": i} for i in range(30)])
        assert s.payload_indexes() == {} and s.stats()["format_version"] == 1
        assert s.create_payload_index("lang", "keyword") is True
        assert s.create_payload_index("lang", "keyword") is False  # already there
        assert s.stats()["format_version"] == 3
        with pytest.raises(zenstore.InvalidArgument, match="already has a 'keyword' index"):
            s.create_payload_index("lang", "int")
        with pytest.raises(zenstore.InvalidArgument, match="index kind must be one of"):
            s.create_payload_index("y", "text")
        for bad in ("", "a..b", ".a", 7, "x" * 401):
            with pytest.raises(zenstore.InvalidArgument, match="cannot index"):
                s.create_payload_index(bad, "int")
        with pytest.raises(zenstore.InvalidArgument, match="no payload index on 'y'"):
            s.drop_payload_index("y")
        s.create_payload_index("y", "int")
        stats = s.stats()
        assert set(stats["payload_indexes"]) == {"lang", "y"}
        assert stats["payload_indexes"]["y"]["kind"] == "int" and stats["payload_indexes"]["y"]["record_bytes"] > 0
        assert stats["bytes_on_disk"]["payload_indexes"] > 0
    with Store.open(path, readonly=True) as ro:
        assert ro.payload_indexes() == {"lang": "keyword", "y": "int"}
        assert {h.id for h in ro.search(np.ones(DIM), k=30, filter={"lang": "de", "y": {"$lt": 10}})} == {1, 3, 5, 7, 9}
        with pytest.raises(zenstore.ReadOnlyStore):
            ro.create_payload_index("z", "int")
        with pytest.raises(zenstore.ReadOnlyStore):
            ro.drop_payload_index("y")
    with Store.open(path) as s:
        s.drop_payload_index("lang")
        assert s.stats()["format_version"] == 3
        s.drop_payload_index("y")
        assert s.stats()["format_version"] == 1 and s.payload_indexes() == {}
        assert s.verify() == []


def test_a_store_of_any_dim_goes_to_version_3_with_an_index_and_back_to_2(tmp_path):
    rng = np.random.default_rng(3)
    with Store.create(tmp_path / "odd.zen", dim=100, n_base=2) as s:
        s.add(range(20), rng.standard_normal((20, 100)), [{"a": i % 3} for i in range(20)])
        assert s.stats()["format_version"] == 2
        s.create_payload_index("a", "int")
        assert s.stats()["format_version"] == 3 and s.verify() == []
        assert {h.id for h in s.search(np.ones(100), k=20, filter={"a": 1})} == set(range(1, 20, 3))
        s.drop_payload_index("a")
        assert s.stats()["format_version"] == 2 and s.verify() == []


def test_older_zenstore_refuses_a_store_with_indexes_and_reads_it_after_the_last_drop(tmp_path):
    """zenstore before format 3 reads up to version 2 (or 1): a store with indexes is
    refused (it would leave them stale), one whose indexes were all dropped is read as before."""
    path = tmp_path / "s.zen"
    rng = np.random.default_rng(4)
    with Store.create(path, dim=DIM, n_base=2) as s:
        s.add(range(10), rng.standard_normal((10, DIM)), [{"a": i} for i in range(10)])
        s.create_payload_index("a", "int")
    for older in (2, 1):  # what older zenstore checks
        with mock.patch.object(zenstore.format, "FORMAT_VERSION", older):
            with pytest.raises(zenstore.FormatVersionError,
                               match=f"format version 3; this zenstore reads up to version {older}"):
                Store.open(path, readonly=True)
            assert any("format version 3" in p for p in zenstore.verify_store(path))
    with Store.open(path) as s:
        s.drop_payload_index("a")
    with mock.patch.object(zenstore.format, "FORMAT_VERSION", 1), mock.patch.object(zenstore.format, "FILE_FORMAT_VERSION", 1):
        with Store.open(path) as s:
            assert len(s) == 10 and s.get(3).payload == {"a": 3}
            s.add([10], rng.standard_normal((1, DIM)))


def test_a_reader_opened_before_the_index_uses_it_once_it_exists(tmp_path):
    path = tmp_path / "s.zen"
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, DIM)).astype(np.float32)
    with Store.create(path, dim=DIM, n_base=2) as w:
        w.add(range(50), x, [{"a": i % 5} for i in range(50)])
        with Store.open(path, readonly=True) as ro:
            before = ro.search_batch(x[:3], k=5, filter={"a": 2})
            w.create_payload_index("a", "int")
            for _ in range(2):  # the first call may still decode payloads; same answer either way
                after = ro.search_batch(x[:3], k=5, filter={"a": 2})
                np.testing.assert_array_equal(before[0], after[0])
            with ro._view.reading() as (snap, txn):
                assert selection.select_rows(snap, txn, compile_filter({"a": 2})).indexed
            w.add(range(50, 60), x[:10], [{"a": 2}] * 10)
            ids, _ = ro.search_batch(x[:1], k=30, filter={"a": 2})
            assert set(range(50, 60)) <= set(ids[0].tolist())


def test_golden_v1_store_is_not_changed_by_filtered_reads_and_takes_an_index(tmp_path):
    import hashlib

    from .test_golden import STORES

    spec = {"tag": "ä", "i": {"$lt": 20}}  # the golden payloads: {"i": int, "tag": str}
    for golden in STORES:
        path = tmp_path / golden.name
        shutil.copytree(golden, path)
        digest = hashlib.sha256((path / "catalog.mdb").read_bytes()).hexdigest()
        with Store.open(path) as s:
            q = s.get(s.ids()[0]).vector
            before = s.stats()["format_version"]
            plain = s.search_batch(q[None], k=5, filter=spec)
            assert (plain[0] != (None if s.stats()["id_type"] == "str" else -1)).sum() >= 1
        assert hashlib.sha256((path / "catalog.mdb").read_bytes()).hexdigest() == digest
        with Store.open(path) as s:
            s.create_payload_index("tag", "keyword")
            s.create_payload_index("i", "int")
            # indexes raise a store to version 3; a refine store is already 4
            assert s.stats()["format_version"] == max(3, before) and s.verify() == []
            with s._view.reading() as (snap, txn):
                assert selection.select_rows(snap, txn, compile_filter(spec)).indexed
            indexed = s.search_batch(q[None], k=5, filter=spec)
            np.testing.assert_array_equal(plain[0], indexed[0])


# --- damage and hostile input --------------------------------------------------------------------


def _edit_index_record(path, mutate):
    import lmdb

    env = lmdb.open(str(path / "catalog.mdb"), subdir=False, max_dbs=8)
    db = env.open_db(b"pindex", create=False)
    with env.begin(write=True) as txn:
        key, value = next(iter(txn.cursor(db=db)))
        new = mutate(bytes(value))
        if new is None:
            txn.delete(key, db=db)
        else:
            txn.put(key, new, db=db)
    env.close()


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong rows", "missing"])
def test_a_damaged_index_record_is_reported_never_answered_from(tmp_path, damage):
    from zenstore import format as fmt
    from zenstore import payload_index

    path = tmp_path / "s.zen"
    rng = np.random.default_rng(6)
    with Store.create(path, dim=DIM, n_base=2) as s:
        s.add(range(40), rng.standard_normal((40, DIM)), [{"a": i % 4} for i in range(40)])
        s.create_payload_index("a", "int")

    def mutate(blob):
        if damage == "flip":
            b = bytearray(blob)
            b[len(b) // 2] ^= 0x10
            return bytes(b)
        if damage == "truncate":
            return blob[:-3]
        if damage == "missing":
            return None
        idx = payload_index.decode(blob, "int", 40, "x")  # a well-formed record of 41 rows
        return payload_index.encode(payload_index.SegmentIndex("int", 41, idx.key_offsets, idx.key_data,
                                                               idx.starts, idx.refs, idx.unkeyed))

    _edit_index_record(path, mutate)
    problems = zenstore.verify_store(path)
    assert problems and any("payload index" in p for p in problems), problems
    with Store.open(path, readonly=True) as s:
        assert len(s) == 40 and s.get(3).payload == {"a": 3}  # everything else still reads
        with pytest.raises(zenstore.CorruptStore, match="payload index"):
            s.search(np.ones(DIM), filter={"a": 1})
        assert len(s.search(np.ones(DIM), filter={"a": {"$ne": 1}}, k=40)) == 30  # not answerable by it
    del fmt


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=3) | st.binary(max_size=2),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4) | st.integers(), kids, max_size=3)
    | st.tuples(kids) | st.frozensets(st.integers(), max_size=2), max_leaves=8)


@settings(max_examples=scale(150, 1500), deadline=None)
@given(spec=json_values | st.dictionaries(st.sampled_from(["a", "$and", "$or", "$not", "$in", "a.b", "$gt"]),
                                          json_values, max_size=3))
def test_any_filter_gives_hits_or_invalid_filter(small_store, spec):
    with Store.open(small_store, readonly=True) as s:
        try:
            hits = s.search(np.ones(DIM, np.float32), k=5, filter=spec)
        except zenstore.InvalidFilter:
            return
        if spec is not None:  # filter=None is no filter
            flt = compile_filter(spec)
            assert all(flt.matches(h.payload) for h in hits)
