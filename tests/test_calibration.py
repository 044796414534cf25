"""The calibrated default search (calibration.py): the choice, the record, and the store's use of it."""

from __future__ import annotations

import numpy as np
import pytest

from zenstore import IdNotFound, InvalidArgument, Store, calibration
from zenstore import records
from zenstore.calibration import Calibration


def test_choose_takes_the_cheapest_setting_reaching_99_percent_of_the_full_scan():
    seen = []

    def recall_of(nprobe, shortlist):  # recall grows with both knobs; the full scan gets 0.9
        seen.append((nprobe, shortlist))
        if nprobe is None:
            return 0.9
        return min(0.9, 0.5 + 0.05 * np.log2(nprobe) + (0.05 if shortlist >= 200 else 0.0))

    cal = calibration.choose(recall_of, n_base=1024, rows=100_000, queries=50)
    # shortlist 100 needs nprobe 256 (0.9), 200 needs 128 (0.9): 12,500 + 2,000 < 25,000 + 1,000
    assert (cal.nprobe, cal.shortlist) == (128, 200)
    assert cal.recall >= calibration.TARGET * cal.full_recall
    assert (None, calibration.FULL_SHORTLIST) in seen


def test_choose_only_tries_the_shortlists_given():
    seen = []

    def recall_of(nprobe, shortlist):
        seen.append(shortlist)
        return 0.9

    cal = calibration.choose(recall_of, n_base=1024, rows=100_000, queries=50,
                             shortlists=calibration.shortlists_for(True))
    assert min(seen[1:]) == calibration.REFINE_MIN_SHORTLIST == 200  # seen[0]: the full scan
    assert cal.shortlist >= calibration.REFINE_MIN_SHORTLIST
    assert calibration.shortlists_for(False) == calibration.SHORTLISTS


def test_a_refine_store_calibrates_a_shortlist_that_leaves_the_refine_pool_a_choice(tmp_path, monkeypatch):
    """The refine pool is the best refine_k of the shortlist: a refine store's default
    shortlist is at least twice the default pool, whatever the subset measured; a store
    without a tier keeps every shortlist."""
    from zenstore.types import SearchOptions

    offered = []
    real = calibration.choose

    def spy(recall_of, n_base, rows, queries, shortlists=calibration.SHORTLISTS):
        offered.append(shortlists)
        return real(recall_of, n_base, rows, queries, shortlists)

    monkeypatch.setattr(calibration, "choose", spy)
    docs = _clustered(3000, 64)
    with Store.create(tmp_path / "r.zen", dim=64, n_base=32, min_rows_per_base=8, refine="int8") as store:
        store.add(np.arange(3000), docs)
        cal = store.snapshot().codec.calibration
        assert cal is not None and cal.shortlist >= 2 * SearchOptions.DEFAULT_REFINE_K
    with Store.create(tmp_path / "h.zen", dim=64, n_base=32, min_rows_per_base=8) as store:
        store.add(np.arange(3000), docs)
    assert offered == [(200, 400), calibration.SHORTLISTS]


def test_choose_falls_back_to_the_full_scan():
    cal = calibration.choose(lambda nprobe, sl: 1.0 if nprobe is None else 0.5, n_base=64, rows=5000, queries=10)
    assert cal.nprobe is None and cal.shortlist == calibration.FULL_SHORTLIST


def test_record_round_trip_and_unknown_versions():
    cal = Calibration(8, 100, 0.9, 0.91, 1000, 100)
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert Calibration.from_dict({**cal.to_dict(), "version": 2}) is None  # newer: ignored
    with pytest.raises(ValueError):
        Calibration.from_dict({**cal.to_dict(), "shortlist": 0})
    with pytest.raises(ValueError):
        Calibration.from_dict({"version": 1})


def test_due_at_training_and_after_fourfold_growth():
    cal = Calibration(8, 100, 0.9, 0.91, 10_000, 100)
    assert calibration.due(None, 5000, 5000)
    assert not calibration.due(None, 5000, calibration.MIN_ROWS - 1)  # small batches never
    assert not calibration.due(cal, 39_999, 8192)
    assert calibration.due(cal, 40_000, 8192)


def _clustered(n, dim, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim)) * 3
    return (centres[rng.integers(0, 20, n)] + rng.standard_normal((n, dim))).astype(np.float32)


def test_store_learns_records_and_uses_its_default(tmp_path):
    docs = _clustered(3000, 64)
    path = tmp_path / "s.zen"
    with Store.create(path, dim=64, n_base=32, min_rows_per_base=8) as store:
        store.add(np.arange(3000), docs)
        cal = store.snapshot().codec.calibration
        assert cal is not None and cal.rows == 3000 and cal.queries == calibration.QUERIES
        assert cal.recall >= calibration.TARGET * cal.full_recall
    with Store.open(path, readonly=True) as store:
        assert store.snapshot().codec.calibration == cal  # read back from the catalog
        q = docs[:30] + 0.1
        default, _ = store.search_batch(q, k=10)
        want, _ = store.search_batch(q, k=10, nprobe=cal.nprobe or "all", shortlist=max(cal.shortlist, 100))
        only_shortlist, _ = store.search_batch(q, k=10, shortlist=200)  # one knob given: no calibration
        np.testing.assert_array_equal(only_shortlist, store.search_batch(q, k=10, nprobe="all")[0])
        np.testing.assert_array_equal(default, want)
        full, _ = store.search_batch(q, k=10, nprobe="all")
        plain, _ = store.search_batch(q, k=10, nprobe="all", shortlist=200)
        np.testing.assert_array_equal(full, plain)  # "all" with the old default shortlist
        assert [h.id for h in store.search(q[0], k=10)] == default[0].tolist()
        with pytest.raises(InvalidArgument):
            store.search(q[0], nprobe="most")


def test_small_and_old_stores_keep_the_full_scan_default(tmp_path):
    docs = _clustered(500, 64)
    with Store.create(tmp_path / "s.zen", dim=64, n_base=16, min_rows_per_base=8) as store:
        store.add(np.arange(500), docs)  # below MIN_ROWS: no calibration
        assert store.snapshot().codec.calibration is None
        a, _ = store.search_batch(docs[:5], k=5)
        b, _ = store.search_batch(docs[:5], k=5, nprobe="all")
        np.testing.assert_array_equal(a, b)


def test_small_adds_pool_their_rows_until_they_can_calibrate(tmp_path, monkeypatch):
    """A store fed in batches below MIN_ROWS (a sharded Ray Data ingest gives each shard
    ~1/S of a batch) calibrates once its pooled adds reach MIN_ROWS, on exactly those rows
    as stored: deleted rows leave the pool, upserted rows bring their new vectors."""
    from zenstore import writer as writer_mod

    seen = []

    orig = writer_mod.Writer._calibrate

    def spy(self, ids_arr, x):
        seen.append((np.array(ids_arr), np.array(x)))
        return orig(self, ids_arr, x)

    monkeypatch.setattr(writer_mod.Writer, "_calibrate", spy)
    docs = _clustered(3200, 64)
    batch = 400
    with Store.create(tmp_path / "s.zen", dim=64, n_base=16, min_rows_per_base=8) as store:
        store.add(np.arange(batch), docs[:batch])  # trains; 400 rows: pooled
        store.delete([3, 4])  # leaves the pool
        moved = docs[7] + 5.0
        store.upsert([7], moved[None])  # replaces row 7's pooled vector
        for a in range(batch, 2400, batch):  # pooled: 398, then 798 ... 1998, 2398
            assert store.snapshot().codec.calibration is None and not seen
            store.add(np.arange(a, a + batch), docs[a : a + batch])
        assert len(seen) == 1
        ids, x = seen[0]
        cal = store.snapshot().codec.calibration
        assert cal is not None and cal.rows == 2398  # rows stored when it calibrated
        q = docs[:20] + 0.1
        want, _ = store.search_batch(q, k=10, nprobe=cal.nprobe or "all", shortlist=max(cal.shortlist, 100))
        np.testing.assert_array_equal(store.search_batch(q, k=10)[0], want)  # the default uses it
    # the pool that calibrated: every stored row once, with its stored vector
    assert len(ids) == 2398 and len(set(ids.tolist())) == len(ids)
    assert not {3, 4} & set(ids.tolist())
    np.testing.assert_array_equal(x[ids.tolist().index(7)], moved)
    for i in (0, 1500, 2399):
        np.testing.assert_array_equal(x[ids.tolist().index(i)], docs[i])


def test_pending_sample_is_kept_only_while_a_calibration_is_due():
    pool = calibration.PendingSample()
    x = np.ones((10, 4), np.float32)
    assert pool.offer(None, 10, np.arange(10), x) is None and pool.rows == 10
    fresh = Calibration(8, 100, 0.9, 0.91, 10_000, 100)
    assert pool.offer(fresh, 10_020, np.arange(10, 20), x) is None and pool.rows == 0  # not due: dropped
    big = np.arange(calibration.MIN_ROWS)
    ids, got = pool.offer(None, 5000, big, np.zeros((len(big), 4), np.float32))
    assert ids is big and pool.rows == 0  # a batch large enough calibrates alone
    pool.offer(None, 10, np.array(["a", "b"], dtype=object), x[:2])
    pool.forget(np.array(["b"], dtype=object))
    assert pool.rows == 1


def test_damaged_or_newer_record_is_ignored(tmp_path):
    path = tmp_path / "s.zen"
    with Store.create(path, dim=64, n_base=32, min_rows_per_base=8) as store:
        store.add(np.arange(2500), _clustered(2500, 64))
    for raw in (b"{not json", b'{"version": 99, "nprobe": 1}'):
        with Store.open(path) as store:
            with store._view.catalog.write() as txn:
                txn.put(records.META, records._CALIBRATION_KEY, raw)
        with Store.open(path, readonly=True) as store:
            assert store.snapshot().codec.calibration is None


def test_calibrate_explicitly_and_its_errors(tmp_path):
    docs = _clustered(2500, 64)
    with Store.create(tmp_path / "s.zen", dim=64, n_base=32, min_rows_per_base=8) as store:
        with pytest.raises(InvalidArgument):
            store.calibrate([1, 2], docs[:2])  # not trained
        store.add(np.arange(1500), docs[:1500])  # below MIN_ROWS: none yet
        assert store.snapshot().codec.calibration is None
        cal = store.calibrate(np.arange(1500), docs[:1500])
        assert store.snapshot().codec.calibration == cal and cal.rows == 1500
        with pytest.raises(IdNotFound):
            store.calibrate([1, 99_999], docs[:2])
        with pytest.raises(InvalidArgument):
            store.calibrate([1, 2, 3], docs[:2])


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("whole", [True, False])
def test_exact_neighbours_match_a_brute_force_ranking(metric, whole):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 16)).astype(np.float32) * rng.uniform(0.5, 2, (300, 1)).astype(np.float32)
    corpus = np.arange(300) if whole else np.sort(rng.choice(300, 180, replace=False))
    self_rows = rng.choice(len(corpus), 7, replace=False)
    got = calibration.exact_neighbours(x, corpus, self_rows, metric, chunk=64)
    c = x[corpus].astype(np.float64)
    q = c[self_rows]
    if metric == "cosine":
        s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T
    elif metric == "ip":
        s = q @ c.T
    else:
        s = -((q[:, None, :] - c[None, :, :]) ** 2).sum(2)
    s[np.arange(len(q)), self_rows] = -np.inf
    want = np.argsort(-s, axis=1, kind="stable")[:, : calibration.K]
    assert not (got == self_rows[:, None]).any()
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(want, axis=1))


def test_most_demanding_setting_of_several_calibrations():
    a, b = Calibration(8, 100, 0.9, 0.91, 1000, 100), Calibration(16, 100, 0.9, 0.91, 900, 100)
    c = Calibration(4, 400, 0.9, 0.91, 1100, 100)
    assert calibration.most_demanding([a, b, c]) == (16, 400)
    assert calibration.most_demanding([a, Calibration(None, 200, 0.9, 0.9, 10, 100)]) == (None, 200)
    assert calibration.most_demanding([a, None]) is None  # a shard without one: the full scan
    assert calibration.most_demanding([]) is None
