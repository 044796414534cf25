"""Every bad input raises a clear, specific error and leaves the store exactly as it was."""

import os

import numpy as np
import pytest

import zenstore
from zenstore import Store

from .conftest import clustered

DIM = 64


def fingerprint(store, queries):
    files = sorted(
        (os.path.relpath(os.path.join(d, f), store.path), os.path.getsize(os.path.join(d, f)))
        for d, _, fs in os.walk(store.path)
        for f in fs
        if not f.endswith("-lock") and f != "catalog.mdb"
    )
    ids, scores = store.search_batch(queries, k=5, shortlist=100)
    st = store.stats()
    return (len(store), st["generation"], files, ids.tolist(), scores.tolist(),
            store.get(0).payload, sorted(store.ids().tolist()))


@pytest.fixture
def loaded(store_path, rng):
    store = Store.create(store_path, dim=DIM, n_base=4)
    x = clustered(rng, 100, DIM)
    store.add(list(range(100)), x, payloads=[{"i": i} for i in range(100)])
    queries = x[:4]
    before = fingerprint(store, queries)
    yield store, x
    assert fingerprint(store, queries) == before, "a failed call changed the store"
    store.close()


def vec(n=1, dim=DIM, value=1.0):
    return np.full((n, dim), value, dtype=np.float32)


BAD_WRITES = [
    ("wrong dimension", lambda s, x: s.add([500], vec(dim=DIM + 64)), zenstore.DimensionMismatch),
    ("1-d vectors", lambda s, x: s.add([500], np.ones(DIM)), zenstore.InvalidArgument),
    ("NaN", lambda s, x: s.add([500, 501], np.stack([x[0], np.full(DIM, np.nan)])), zenstore.InvalidVector),
    ("inf", lambda s, x: s.add([500], vec(value=np.inf)), zenstore.InvalidVector),
    ("float64 overflow", lambda s, x: s.add([500], np.full((1, DIM), 1e300)), zenstore.InvalidVector),
    ("zero vector under cosine", lambda s, x: s.add([500], vec(value=0.0)), zenstore.InvalidVector),
    ("empty batch", lambda s, x: s.add([], np.zeros((0, DIM), np.float32)), zenstore.EmptyBatch),
    ("empty vectors", lambda s, x: s.add([500], np.zeros((0, DIM), np.float32)), zenstore.EmptyBatch),
    ("count mismatch", lambda s, x: s.add([500, 501], vec(3)), zenstore.InvalidArgument),
    ("duplicate in batch", lambda s, x: s.add([500, 500], vec(2)), zenstore.DuplicateId),
    ("duplicate of stored", lambda s, x: s.add([500, 7], vec(2)), zenstore.DuplicateId),
    ("str id in int store", lambda s, x: s.add(["a"], vec()), zenstore.IdTypeMismatch),
    ("mixed id kinds", lambda s, x: s.add([1000, "a"], vec(2)), zenstore.IdTypeMismatch),
    ("float ids", lambda s, x: s.add([1.5], vec()), zenstore.InvalidArgument),
    ("bool ids", lambda s, x: s.add([True], vec()), zenstore.InvalidArgument),
    ("string as ids", lambda s, x: s.add("abc", vec(3)), zenstore.InvalidArgument),
    ("id overflow", lambda s, x: s.add([2**64], vec()), zenstore.InvalidArgument),
    ("string vectors", lambda s, x: s.add([500], [["a"] * DIM]), zenstore.InvalidArgument),
    ("ragged vectors", lambda s, x: s.add([500, 501], [[1.0] * DIM, [1.0]]), zenstore.InvalidArgument),
    ("complex vectors", lambda s, x: s.add([500], vec().astype(np.complex64)), zenstore.InvalidArgument),
    ("payload count", lambda s, x: s.add([500], vec(), payloads=[{}, {}]), zenstore.InvalidArgument),
    ("payload not dict", lambda s, x: s.add([500], vec(), payloads=["x"]), zenstore.InvalidArgument),
    ("payload not JSON", lambda s, x: s.add([500], vec(), payloads=[{"a": object()}]), zenstore.InvalidArgument),
    ("payload NaN", lambda s, x: s.add([500], vec(), payloads=[{"a": float("nan")}]), zenstore.InvalidArgument),
    ("upsert NaN", lambda s, x: s.upsert([1], vec(value=np.nan)), zenstore.InvalidVector),
    ("upsert duplicate", lambda s, x: s.upsert([1, 1], vec(2)), zenstore.DuplicateId),
    ("delete unknown", lambda s, x: s.delete([1, 12345]), zenstore.IdNotFound),
    ("delete wrong kind", lambda s, x: s.delete(["a"]), zenstore.IdTypeMismatch),
    ("delete empty", lambda s, x: s.delete([]), zenstore.EmptyBatch),
    ("train after data", lambda s, x: s.train(x), zenstore.InvalidArgument),
]


@pytest.mark.parametrize("name,call,exc", BAD_WRITES, ids=[b[0] for b in BAD_WRITES])
def test_bad_write_is_refused_and_changes_nothing(loaded, name, call, exc):
    store, x = loaded
    with pytest.raises(exc):
        call(store, x)


BAD_READS = [
    ("query wrong dim", lambda s, x: s.search(np.ones(DIM + 1)), zenstore.DimensionMismatch),
    ("query NaN", lambda s, x: s.search(np.full(DIM, np.nan)), zenstore.InvalidVector),
    ("query zero (cosine)", lambda s, x: s.search(np.zeros(DIM)), zenstore.InvalidVector),
    ("query 2 rows", lambda s, x: s.search(x[:2]), zenstore.InvalidArgument),
    ("k zero", lambda s, x: s.search(x[0], k=0), zenstore.InvalidArgument),
    ("k negative", lambda s, x: s.search(x[0], k=-3), zenstore.InvalidArgument),
    ("k huge", lambda s, x: s.search(x[0], k=10**12), zenstore.InvalidArgument),
    ("k float", lambda s, x: s.search(x[0], k=2.5), zenstore.InvalidArgument),
    ("shortlist zero", lambda s, x: s.search(x[0], shortlist=0), zenstore.InvalidArgument),
    ("nprobe zero", lambda s, x: s.search(x[0], nprobe=0), zenstore.InvalidArgument),
    ("batch wrong dim", lambda s, x: s.search_batch(np.ones((2, 3))), zenstore.DimensionMismatch),
    ("batch empty", lambda s, x: s.search_batch(np.ones((0, DIM))), zenstore.EmptyBatch),
    ("get unknown", lambda s, x: s.get(424242), zenstore.IdNotFound),
    ("get wrong kind", lambda s, x: s.get("nope"), zenstore.IdNotFound),
    ("rerank unknown", lambda s, x: s.rerank(x[0], [1, 999]), zenstore.IdNotFound),
    ("rerank top_n", lambda s, x: s.rerank(x[0], [1], top_n=0), zenstore.InvalidArgument),
]


@pytest.mark.parametrize("name,call,exc", BAD_READS, ids=[b[0] for b in BAD_READS])
def test_bad_read_is_refused(loaded, name, call, exc):
    store, x = loaded
    with pytest.raises(exc):
        call(store, x)


def test_errors_are_also_builtin_exceptions(loaded):
    store, x = loaded
    with pytest.raises(KeyError):
        store.get(424242)
    with pytest.raises(ValueError):
        store.add([500], vec(dim=3))
    assert issubclass(zenstore.IdNotFound, zenstore.ZenstoreError)
    assert "424242" in str(zenstore.IdNotFound("id 424242 not found"))


def test_error_messages_name_the_problem(loaded):
    store, x = loaded
    with pytest.raises(zenstore.DimensionMismatch, match="dimension 128.*has 64"):
        store.add([500], vec(dim=128))
    with pytest.raises(zenstore.DuplicateId, match="7"):
        store.add([500, 7], vec(2))
    with pytest.raises(zenstore.InvalidVector, match="1"):
        store.add([500, 501], np.stack([x[0], np.full(DIM, np.nan)]))
    with pytest.raises(zenstore.IdNotFound, match="12345"):
        store.delete([12345])


@pytest.mark.parametrize("options,match", [
    ({"dim": 0}, "dim must be a positive int"),
    ({"dim": -3}, "dim must be a positive int"),
    ({"dim": 64.0}, "dim must be a positive int"),
    ({"dim": True}, "dim must be a positive int"),
    ({"dim": 100, "scale_blocks": 3}, r"scale_blocks must divide .*\(2 for dim 100\)"),
    ({"metric": "manhattan"}, "metric"),
    ({"n_base": 0}, "n_base"),
    ({"scale_blocks": 3}, "scale_blocks"),
    ({"scale_estimator": "max"}, "scale_estimator"),
    ({"rotation": "dense"}, "rotation"),
    ({"bogus": 1}, "unknown store option"),
])
def test_bad_create_options(tmp_path, options, match):
    kwargs = {"dim": 128, **options}
    with pytest.raises(zenstore.InvalidArgument, match=match):
        Store.create(tmp_path / "s", **kwargs)
    assert not (tmp_path / "s").exists()


def test_create_refuses_existing_paths(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(zenstore.StoreExists):
        Store.create(tmp_path / "file", dim=64)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(zenstore.StoreExists):
        Store.create(tmp_path / "full", dim=64)
    (tmp_path / "empty").mkdir()
    Store.create(tmp_path / "empty", dim=64).close()
    with pytest.raises(zenstore.StoreExists):
        Store.create(tmp_path / "empty", dim=64)


def test_open_refuses_non_stores(tmp_path):
    with pytest.raises(zenstore.NotAStore):
        Store.open(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(zenstore.NotAStore):
        Store.open(tmp_path / "plain")
    with pytest.raises(zenstore.NotAStore):
        Store.open(tmp_path / "plain", readonly=True)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "catalog.mdb").write_bytes(os.urandom(8192))
    with pytest.raises((zenstore.NotAStore, zenstore.CorruptStore)):
        Store.open(foreign)
    with pytest.raises((zenstore.NotAStore, zenstore.CorruptStore)):
        Store.open(foreign, readonly=True)


def test_empty_store_searches(store_path, rng):
    with Store.create(store_path, dim=DIM) as store:
        assert store.search(np.ones(DIM), k=3) == []
        ids, scores = store.search_batch(np.ones((2, DIM)), k=3)
        assert ids.shape == (2, 3) and (ids == -1).all()
        with pytest.raises(zenstore.InvalidVector):
            store.search(np.zeros(DIM))
        assert len(store) == 0 and store.stats()["count"] == 0
