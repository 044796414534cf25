"""The Store API: lifecycle, writes, reads, persistence, metrics, id kinds, merging."""

import numpy as np
import pytest

import zenstore
from zenstore import Hit, Store

from .conftest import clustered

DIM = 128


def make(store_path, rng, n=400, metric="cosine", ids=None, **opts):
    opts.setdefault("n_base", 8)
    store = Store.create(store_path, dim=DIM, metric=metric, **opts)
    x = clustered(rng, n, DIM)
    ids = list(range(n)) if ids is None else ids
    store.add(ids, x, payloads=[{"n": i} for i in range(n)])
    return store, x


def brute_force(store, q, ids, k):
    """Exact ranking over the store's own dequantized vectors (what search promises)."""
    vecs = np.stack([store.get(i).vector for i in ids]).astype(np.float64)
    q = np.asarray(q, np.float64)
    if store.metric == "cosine":
        q = q / np.linalg.norm(q)
        s = vecs @ q
    elif store.metric == "ip":
        s = vecs @ q
    else:
        s = -((vecs - q) ** 2).sum(1)
    order = np.argsort(-s, kind="stable")[:k]
    return [ids[i] for i in order]


def test_create_add_search_reopen(store_path, rng):
    store, x = make(store_path, rng)
    assert len(store) == 400
    hits = store.search(x[3], k=5)
    assert isinstance(hits[0], Hit) and hits[0].id == 3 and hits[0].payload == {"n": 3}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    ids_a, scores_a = store.search_batch(x[:20], k=10)
    store.close()
    with Store.open(store_path) as again:
        ids_b, scores_b = again.search_batch(x[:20], k=10)
        assert len(again) == 400
        np.testing.assert_array_equal(ids_a, ids_b)
        np.testing.assert_array_equal(scores_a, scores_b)
    with Store.open(store_path, readonly=True) as ro:
        np.testing.assert_array_equal(ro.search_batch(x[:20], k=10)[0], ids_a)


def test_search_equals_search_batch(store_path, rng):
    store, x = make(store_path, rng)
    ids, scores = store.search_batch(x[:7], k=6, shortlist=50)
    for i in range(7):
        hits = store.search(x[i], k=6, shortlist=50)
        assert [h.id for h in hits] == ids[i].tolist()
        np.testing.assert_allclose([h.score for h in hits], scores[i], rtol=1e-6)
    store.close()


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_full_shortlist_equals_brute_force_on_dequantized(store_path, rng, metric):
    """With a shortlist covering everything, search is exact over dequantized vectors."""
    store, x = make(store_path, rng, n=200, metric=metric)
    for q in rng.standard_normal((5, DIM)).astype(np.float32):
        got = [h.id for h in store.search(q, k=10, shortlist=200)]
        if metric == "l2":
            # l2 ranks by 2 q.x_hat + term (term carries the true norm; see codec.py), so
            # the exact scorer is rerank over every id; tests/test_search_pipeline.py
            # checks that scorer against numpy on the segments themselves
            want = [h.id for h in store.rerank(q, store.ids(), top_n=10, with_payload=False)]
        else:
            want = brute_force(store, q, list(range(200)), 10)
        assert got[:5] == want[:5]
    store.close()


def test_l2_scores_are_squared_distances(store_path, rng):
    store, x = make(store_path, rng, n=300, metric="l2")
    q = x[10] + 0.01
    hits = store.search(q, k=3, shortlist=300)
    assert hits[0].id == 10
    true = float(((x[10] - q) ** 2).sum())
    assert hits[0].score == pytest.approx(true, abs=0.2 * float((x[10] ** 2).sum()) + 1)
    assert [h.score for h in hits] == sorted(h.score for h in hits)
    store.close()


def test_get_returns_dequantized_vector_and_payload(store_path, rng):
    store, x = make(store_path, rng)
    rec = store.get(17)
    assert rec.id == 17 and rec.payload == {"n": 17} and rec.vector.shape == (DIM,)
    unit = x[17] / np.linalg.norm(x[17])
    cos = rec.vector @ unit / np.linalg.norm(rec.vector)
    assert cos > 0.7  # 1-bit residual code of a clustered vector
    # search scores are inner products with exactly this vector
    q = rng.standard_normal(DIM).astype(np.float32)
    hit = store.rerank(q, [17])[0]
    assert hit.score == pytest.approx(float(rec.vector @ (q / np.linalg.norm(q))), rel=1e-4, abs=1e-4)
    store.close()


def test_rerank_orders_given_ids(store_path, rng):
    store, x = make(store_path, rng)
    q = x[5]
    hits = store.rerank(q, [9, 5, 300, 5], top_n=2)
    assert hits[0].id == 5 and len(hits) == 2
    full = store.rerank(q, [9, 5, 300])
    assert {h.id for h in full} == {9, 5, 300}
    with pytest.raises(zenstore.IdNotFound):
        store.rerank(q, [1, 99999])
    store.close()


def test_upsert_replaces_vector_and_payload(store_path, rng):
    store, x = make(store_path, rng)
    new = -x[0]
    store.upsert([0, 1000], np.stack([new, x[1]]), payloads=[{"v": 2}, None])
    assert len(store) == 401
    assert store.get(0).payload == {"v": 2}
    assert store.get(1000).payload is None
    assert store.search(new, k=1)[0].id == 0
    store.upsert([0], x[:1])  # payload None removes the old payload
    assert store.get(0).payload is None
    assert len(store) == 401
    store.close()
    with Store.open(store_path) as again:
        assert len(again) == 401 and again.get(0).payload is None


def test_delete_hides_ids_everywhere(store_path, rng):
    store, x = make(store_path, rng)
    assert store.delete([3, 4]) == 2
    assert len(store) == 398 and 3 not in store and 5 in store
    with pytest.raises(zenstore.IdNotFound):
        store.get(3)
    ids, _ = store.search_batch(x[:10], k=20, shortlist=400)
    assert not np.isin([3, 4], ids).any()
    with pytest.raises(zenstore.IdNotFound):
        store.delete([5, 3])  # 3 is gone: nothing deleted
    assert 5 in store
    assert store.delete([5, 3], missing_ok=True) == 1
    store.add([3], x[3:4])  # a deleted id can come back
    assert store.search(x[3], k=1)[0].id == 3
    store.close()
    with Store.open(store_path) as again:
        assert len(again) == 398 and 4 not in again and 3 in again and 5 not in again


def test_str_ids(store_path, rng):
    x = clustered(rng, 100, DIM)
    ids = [f"doc-{i}" for i in range(100)]
    with Store.create(store_path, dim=DIM, n_base=4) as store:
        store.add(ids, x)
        assert store.search(x[42], k=1)[0].id == "doc-42"
        got, _ = store.search_batch(x[:3], k=2)
        assert got.dtype == object and got[0, 0] == "doc-0"
        store.delete(["doc-1"])
        with pytest.raises(zenstore.IdTypeMismatch):
            store.add([5], x[:1])
        assert "doc-1" not in store and "doc-2" in store
    with Store.open(store_path) as again:
        assert again.get("doc-99").id == "doc-99"


def test_many_small_adds_merge_and_stay_correct(store_path, rng):
    x = clustered(rng, 300, DIM)
    with Store.create(store_path, dim=DIM, n_base=4, segment_fanout=3, min_rows_per_base=4) as store:
        for i in range(0, 300, 20):
            store.add(list(range(i, i + 20)), x[i : i + 20])
        store.delete([0, 1, 2])
        assert store.stats()["segments"] <= 3
        assert len(store) == 297
        before = store.search_batch(x[:30], k=5, shortlist=300)
        result = store.compact()
        assert result["segments_after"] == 1 and result["rows_after"] == 297
        after = store.search_batch(x[:30], k=5, shortlist=300)
        np.testing.assert_array_equal(before[0], after[0])
        np.testing.assert_allclose(before[1], after[1], rtol=1e-6)
        assert store.verify() == []
    with Store.open(store_path) as again:
        np.testing.assert_array_equal(again.search_batch(x[:30], k=5, shortlist=300)[0], before[0])


def test_delete_everything_then_add(store_path, rng):
    store, x = make(store_path, rng, n=50)
    store.delete(list(range(50)))
    assert len(store) == 0 and store.search(x[0], k=3) == []
    ids, scores = store.search_batch(x[:2], k=3)
    assert (ids == -1).all() and np.isnan(scores).all()
    store.add([7], x[7:8])
    assert store.search(x[7], k=3)[0].id == 7
    assert store.verify() == []
    store.close()


def test_nprobe_restricts_scan(store_path, rng):
    store, x = make(store_path, rng, n=400, n_base=8)
    full = store.search_batch(x[:20], k=10)[0]
    narrow = store.search_batch(x[:20], k=10, nprobe=1)[0]
    assert (narrow[:, 0] == np.arange(20)).mean() >= 0.9  # own vector found in its own group
    assert np.array_equal(store.search_batch(x[:20], k=10, nprobe=8)[0], full)  # all 8 groups: no limit

    def scanned(nprobe):  # k and shortlist cover every row: a query finds all it scans
        ids = store.search_batch(x[:20], k=400, shortlist=400, nprobe=nprobe)[0]
        return [frozenset(row[row >= 0].tolist()) for row in ids]

    one, two = scanned(1), scanned(2)
    assert all(0 < len(g) < 400 for g in one)
    assert all(a == b or not a & b for a in one for b in one)  # each scanned one whole group
    assert all(a < b < frozenset(range(400)) for a, b in zip(one, two))  # plus a second group
    single = [h.id for h in store.search(x[0], k=10, nprobe=1)]
    assert single == narrow[0].tolist()
    store.close()


def test_stats_reports_bytes(store_path, rng):
    store, _ = make(store_path, rng)
    st = store.stats()
    assert st["count"] == 400 and st["dim"] == DIM
    assert st["bytes_per_vector"] == DIM // 8 + 4
    assert st["compression_ratio"] == pytest.approx(DIM * 4 / (DIM // 8 + 4))
    parts = st["bytes_on_disk"]
    assert parts["codes"] == 400 * DIM // 8 and parts["scales"] == parts["aux"] == 400 * 2
    assert parts["total"] >= parts["codes"] + parts["base"]
    store.close()


def test_default_profile_is_within_budget(tmp_path):
    for metric in ("cosine", "ip", "l2"):
        with Store.create(tmp_path / metric, metric=metric) as store:
            st = store.stats()
            assert st["dim"] == 7680
            assert st["bytes_per_vector"] <= 964
            assert st["compression_ratio"] >= 30720 / 964  # 31.87x


def test_train_explicitly_then_add(store_path, rng):
    x = clustered(rng, 600, DIM)  # 600 // 32 rows per base row >= 16
    with Store.create(store_path, dim=DIM, n_base=16) as store:
        store.train(x)
        assert store.stats()["n_base"] == 16
        with pytest.raises(zenstore.InvalidArgument):
            store.train(x)
        store.add([1, 2], x[:2])  # a tiny first batch still gets the trained base
        assert store.stats()["n_base"] == 16


def test_small_first_batch_gets_fewer_base_rows(store_path, rng):
    x = clustered(rng, 40, DIM)
    with Store.create(store_path, dim=DIM, n_base=1024, min_rows_per_base=10) as store:
        store.add(list(range(40)), x)
        assert store.stats()["n_base"] == 4


def test_context_manager_and_closed_errors(store_path, rng):
    store, x = make(store_path, rng, n=20)
    store.close()
    store.close()
    with pytest.raises(zenstore.StoreClosed):
        store.search(x[0])
    with pytest.raises(zenstore.StoreClosed):
        store.add([999], x[:1])


def test_readonly_refuses_writes_and_sees_new_commits(store_path, rng):
    store, x = make(store_path, rng, n=100)
    ro = Store.open(store_path, readonly=True)
    with pytest.raises(zenstore.ReadOnlyStore):
        ro.add([1000], x[:1])
    with pytest.raises(zenstore.ReadOnlyStore):
        ro.delete([1])
    store.add([1000], x[:1] * -1)
    store.delete([5])
    assert len(ro) == 100 and 1000 in ro and 5 not in ro
    ro.close()
    store.close()


def test_second_writer_is_refused(store_path, rng):
    store, _ = make(store_path, rng, n=10)
    with pytest.raises(zenstore.StoreLocked):
        Store.open(store_path)
    store.close()
    Store.open(store_path).close()


def test_contains_and_ids(store_path, rng):
    store, _ = make(store_path, rng, n=30)
    assert 3 in store and 31 not in store and "x" not in store
    assert sorted(store.ids().tolist()) == list(range(30))
    store.close()


def test_checkpoint_commits_with_the_batch(store_path, rng):
    store, x = make(store_path, rng, n=10)
    assert store.checkpoint("job") is None
    store.add([100, 101], x[:2], checkpoint=("job", {"offset": 2}))
    assert store.checkpoint("job") == {"offset": 2}
    with pytest.raises(zenstore.DuplicateId):
        store.add([100], x[:1], checkpoint=("job", {"offset": 3}))
    assert store.checkpoint("job") == {"offset": 2}  # failed batch: checkpoint unchanged
    with pytest.raises(zenstore.InvalidArgument):
        store.add([200], x[:1], checkpoint=("job", {"bad": float("nan")}))
    assert 200 not in store
    store.close()
    with Store.open(store_path, readonly=True) as again:
        assert again.checkpoint("job") == {"offset": 2}


def test_iter_records_covers_live_rows_once(store_path, rng):
    store, x = make(store_path, rng, n=50)
    store.delete([4, 7])
    seen = {}
    for ids, vecs, payloads in store.iter_records(batch_size=16):
        assert vecs.shape == (len(ids), DIM) and len(payloads) == len(ids)
        for i, v, p in zip(ids.tolist(), vecs, payloads):
            assert i not in seen and p == {"n": i}
            np.testing.assert_allclose(v, store.get(i).vector, rtol=1e-6)
            seen[i] = True
    assert sorted(seen) == sorted(set(range(50)) - {4, 7})
    store.set_checkpoint("j", {"offset": 9})
    assert store.checkpoint("j") == {"offset": 9}
    store.close()


def test_contains_vectorized(store_path, rng):
    store, _ = make(store_path, rng, n=30)
    store.delete([2])
    assert store.contains([1, 2, 29, 30]).tolist() == [True, False, True, False]
    assert store.contains(["a"]).tolist() == [False]
    store.close()


def test_filter_ids_restricts_candidates(store_path, rng):
    store, x = make(store_path, rng, n=200)
    store.delete([11])
    allowed = [10, 11, 12, 150, 999]
    hits = store.search(x[10], k=10, filter_ids=allowed)
    assert [h.id for h in hits][0] == 10 and {h.id for h in hits} == {10, 12, 150}
    ids, _ = store.search_batch(x[:3], k=4, filter_ids=np.array(allowed))
    assert set(ids[ids >= 0].tolist()) <= {10, 12, 150} and (ids[:, 3] == -1).all()
    assert store.search(x[0], k=3, filter_ids=[999]) == []
    with pytest.raises(zenstore.IdTypeMismatch):
        store.search(x[0], filter_ids=["a"])
    assert len(store.search(x[0], k=5)) == 5  # unfiltered search unaffected
    store.close()


def test_rescoring_in_small_slices_gives_identical_results(store_path, rng, monkeypatch):
    """Rescoring gathers candidates in bounded slices; slice boundaries (even inside one
    query's candidates, and across segments) must not change any id or score."""
    x = clustered(rng, 300, DIM)
    with Store.create(store_path, dim=DIM, n_base=4, segment_fanout=100, min_rows_per_base=4) as store:
        for i in range(0, 300, 60):
            store.add(list(range(i, i + 60)), x[i : i + 60])
        assert store.stats()["segments"] > 1
        queries = x[:12] + 0.1 * rng.standard_normal((12, DIM)).astype(np.float32)
        want = store.search_batch(queries, k=7, shortlist=50)
        want_one = store.search(queries[0], k=7, shortlist=50)
        want_rerank = store.rerank(queries[1], ids=list(range(0, 300, 3)), top_n=9)
        import zenstore.search as search_module

        monkeypatch.setattr(search_module, "GATHER_BYTES", 1)  # one pair per slice
        got = store.search_batch(queries, k=7, shortlist=50)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        assert store.search(queries[0], k=7, shortlist=50) == want_one
        assert store.rerank(queries[1], ids=list(range(0, 300, 3)), top_n=9) == want_rerank
        monkeypatch.setattr(search_module, "GATHER_BYTES", 37 * (DIM // 8 + 16))  # uneven slices
        got = store.search_batch(queries, k=7, shortlist=50)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_group_major_and_query_block_scans_agree(store_path, rng, monkeypatch):
    """Batches with nprobe use the group-major scan; the query-block scan (used when its
    private heaps would be too large) must return exactly the same results."""
    x = clustered(rng, 600, DIM)
    with Store.create(store_path, dim=DIM, n_base=12, segment_fanout=100, min_rows_per_base=4) as store:
        for i in range(0, 600, 150):
            store.add(list(range(i, i + 150)), x[i : i + 150])
        store.delete(list(range(0, 600, 7)))
        queries = x[:40] + 0.05 * rng.standard_normal((40, DIM)).astype(np.float32)
        group_major = store.search_batch(queries, k=8, shortlist=40, nprobe=3)
        import zenstore.search as search_module

        monkeypatch.setattr(search_module, "GROUP_SCAN_HEAP_BYTES", 0)
        query_block = store.search_batch(queries, k=8, shortlist=40, nprobe=3)
        np.testing.assert_array_equal(group_major[0], query_block[0])
        np.testing.assert_array_equal(group_major[1], query_block[1])
        assert not np.isin(group_major[0], np.arange(0, 600, 7)).any()


def test_warm_open_derives_the_projection_and_changes_no_result(tmp_path):
    """Store.open(warm=True) does the first search's one-time work (the coarse step's
    projection, the kernels' loading) before returning; searches return what they return
    without it; warm() is idempotent and a no-op on an empty store."""
    from zenstore import coarse

    rng = np.random.default_rng(3)
    dim, n_base = 2048, 1024
    # clustered rows in a 48-dimensional subspace: a base its projection keeps (coarse.MIN_CAPTURED)
    dirs = rng.standard_normal((48, dim))
    centres = rng.standard_normal((64, 48)) * 3
    x = ((centres[rng.integers(0, 64, 1100)] + rng.standard_normal((1100, 48))) @ dirs).astype(np.float32)
    path = tmp_path / "w.zen"
    with Store.create(path, dim=dim, n_base=n_base, min_rows_per_base=1) as s:
        s.add(np.arange(len(x)), x)
        s.calibrate(np.arange(len(x)), x)  # a probed default, so the projection is used
        cal = s.snapshot().codec.calibration
    assert cal.nprobe is not None and coarse.worthwhile(n_base, dim, cal.nprobe), cal
    q = x[:5] + 0.01
    with Store.open(path, readonly=True) as cold:
        assert cold.snapshot().codec._projection is None
        want = cold.search_batch(q, k=5)
    with Store.open(path, readonly=True, warm=True) as warm:
        assert warm.snapshot().codec._projection is not None
        warm.warm()
        got = warm.search_batch(q, k=5)
        assert [h.id for h in warm.search(q[0], k=5)] == want[0][0].tolist()
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    with Store.create(tmp_path / "empty.zen", dim=64) as empty:
        empty.warm()
    Store.open(tmp_path / "empty.zen", warm=True).close()
