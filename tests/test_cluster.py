"""zenstore.cluster: a sharded store on Ray, checked against a single Store.

The first half needs no Ray (manifest, routing, the ``local`` backend: validation,
errors, merged results equal to one store's). The second half runs on a real local Ray
cluster started once for the module (``ray.init(num_cpus=2)``, no dashboard, loopback
only): shard actors killed (``ray.kill`` and SIGKILL of their process) during writes,
partial searches, Ray Data ingest and a driver killed mid-ingest that resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import zenstore
from zenstore import Store
from zenstore.cluster import PartialWrite, ShardedStore, ShardUnavailable
from zenstore.cluster.manifest import CLUSTER_FORMAT_VERSION, MANIFEST_FILE, ClusterManifest, read_manifest
from zenstore.cluster.routing import key_hash, shard_of
from zenstore.errors import (CorruptStore, FormatVersionError, IdNotFound, IngestError, InvalidArgument, NotAStore,
                             ReadOnlyStore, StoreClosed, StoreExists, StoreLocked)

from .conftest import scale

DIM = 128


def data(n, dim=DIM, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, dim)).astype(np.float32)
    return (centers[rng.integers(0, 8, n)] + 0.7 * rng.standard_normal((n, dim))).astype(np.float32)


def pair(tmp_path, n=1500, shards=4, metric="cosine", ids=None, backend="local", **open_kw):
    """A single Store and a ShardedStore holding the same rows with the same base."""
    x = data(n)
    ids = list(range(n)) if ids is None else ids
    payloads = [{"n": i} for i in range(n)]
    single = Store.create(tmp_path / "single", dim=DIM, metric=metric, n_base=16)
    single.add(ids, x, payloads)
    sharded = ShardedStore.create(tmp_path / "sharded", dim=DIM, shards=shards, metric=metric, n_base=16,
                                  backend=backend, **open_kw)
    sharded.train(base=single.base())
    sharded.add(ids, x, payloads)
    return single, sharded, x


# --- the manifest ---------------------------------------------------------------------------


def test_manifest_bytes_and_round_trip(tmp_path):
    m = ClusterManifest(4, 768, "cosine", "zenstore 0.1.0")
    assert m.to_bytes() == (b'{"created_by":"zenstore 0.1.0","dim":768,"format_version":1,'
                            b'"magic":"zenstore-cluster","metric":"cosine","routing":"blake2b64-mod","shards":4}\n')
    assert ClusterManifest.from_dict(json.loads(m.to_bytes())) == m
    with_ext = {**m.to_dict(), "x-note": {"kept": True}}
    assert ClusterManifest.from_dict(with_ext).extensions == {"x-note": {"kept": True}}


def test_format_md_shows_the_manifest_bytes():
    text = (Path(__file__).resolve().parents[1] / "docs" / "format.md").read_text()
    section = text.split("## Sharded stores", 1)[1]
    exact = ClusterManifest(4, 768, "cosine", "zenstore 0.1.0").to_bytes()
    assert f"exactly these {len(exact)}\nbytes" in section or f"exactly these {len(exact)} bytes" in section
    assert "\n```\n" + exact.decode() + "```" in section
    assert f"hashes to {key_hash(0)}" in section and f"to {key_hash('doc-1')}" in section


@pytest.mark.parametrize("change, error", [
    ({"format_version": CLUSTER_FORMAT_VERSION + 1}, FormatVersionError),
    ({"future_key": 1}, FormatVersionError),
    ({"routing": "jump-hash"}, FormatVersionError),
    ({"magic": "zenstore"}, CorruptStore),
    ({"format_version": "1"}, CorruptStore),
    ({"shards": 0}, CorruptStore),
    ({"shards": True}, CorruptStore),
    ({"dim": 0}, CorruptStore),
    ({"dim": 2**20 + 1}, CorruptStore),
    ({"metric": "hamming"}, CorruptStore),
    ({"created_by": 7}, CorruptStore),
])
def test_manifest_validation(change, error):
    doc = {**ClusterManifest(2, 128, "l2", "t").to_dict(), **change}
    with pytest.raises(error):
        ClusterManifest.from_dict(doc)
    short = ClusterManifest(2, 128, "l2", "t").to_dict()
    del short["dim"]
    with pytest.raises(CorruptStore, match="lacks"):
        ClusterManifest.from_dict(short)


def test_manifest_file_errors(tmp_path):
    with pytest.raises(NotAStore):
        read_manifest(str(tmp_path / "absent"))
    with pytest.raises(NotAStore, match="cluster.json"):
        read_manifest(str(tmp_path))
    (tmp_path / MANIFEST_FILE).write_bytes(b'{"magic": "zenstore-cluster", ')
    with pytest.raises(CorruptStore, match="JSON"):
        read_manifest(str(tmp_path))
    with pytest.raises(NotAStore):
        ShardedStore.open(tmp_path / "absent", readonly=True)


# --- routing --------------------------------------------------------------------------------


def _reference_hash(v) -> int:
    key = b"s" + v.encode() if isinstance(v, str) else b"i" + struct.pack(">Q", (v + (1 << 63)) % (1 << 64))
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


def test_routing_is_the_documented_stable_hash():
    # pinned: a change here re-routes every stored id (docs/format.md, "Sharded stores")
    assert key_hash(0) == 9706832284968744780
    assert key_hash("doc-1") == 18243316392097378010
    rng = np.random.default_rng(3)
    for v in [*rng.integers(-(2**63), 2**63 - 1, 200).tolist(), 2**63 - 1, -(2**63), "é", "a" * 256]:
        assert key_hash(v) == _reference_hash(v)


def test_routing_spreads_ids_and_doubling_splits_shards_locally():
    ids = np.arange(20000, dtype=np.int64)
    counts = np.bincount(shard_of(ids, 8), minlength=8)
    assert counts.min() > 0.9 * 2500 and counts.max() < 1.1 * 2500
    assert np.array_equal(shard_of(ids, 8) % 4, shard_of(ids, 4))  # shard i splits into i and i + 4
    strs = np.array([f"doc-{i}" for i in range(1000)], dtype=object)
    assert np.array_equal(shard_of(strs, 3), [key_hash(s) % 3 for s in strs])


# --- the local backend: same answers and same errors as one Store -----------------------------


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_full_scan_equals_a_single_store(tmp_path, metric):
    single, sharded, x = pair(tmp_path, metric=metric)
    q = data(40, seed=9)
    n = len(x)
    with single, sharded:
        for nprobe in (None, 3):
            a_ids, a_scores = single.search_batch(q, k=10, shortlist=n, nprobe=nprobe)
            b_ids, b_scores = sharded.search_batch(q, k=10, shortlist=n, nprobe=nprobe)
            assert np.array_equal(a_ids, b_ids) and np.array_equal(a_scores, b_scores)
            assert b_scores.dtype == np.float32 and b_ids.dtype == np.int64
            one = single.search(q[0], k=7, shortlist=n, nprobe=nprobe)
            assert sharded.search(q[0], k=7, shortlist=n, nprobe=nprobe) == one
        assert sharded.rerank(q[1], [5, 900, 17, 5], top_n=3) == single.rerank(q[1], [5, 900, 17, 5], top_n=3)
        # default options: the shards, searched as one (cluster/union.py), answer as the
        # single store does with the same setting
        _, a_scores = single.search_batch(q, k=10, nprobe=3)
        _, b_scores = sharded.search_batch(q, k=10, nprobe=3)
        assert np.array_equal(a_scores, b_scores)
        assert len(sharded) == n and sharded.stats()["count"] == n
        assert sorted(sharded.ids().tolist()) == list(range(n))
        got = sharded.get(33)
        assert np.array_equal(got.vector, single.get(33).vector) and got.payload == {"n": 33}


def test_shards_in_one_process_are_searched_as_one_store(tmp_path):
    """The shards a process holds are searched as the union of their segments
    (cluster/union.py): the query is prepared once and one shortlist of shards x
    over all of them, so a probed search with a small shortlist answers exactly as one
    store with the same options does, and a filtered search (filter_ids split over the
    shards) too."""
    single, sharded, x = pair(tmp_path, n=1500, shards=3)
    q = data(25, seed=21)
    with single, sharded:
        for nprobe, shortlist in ((2, 20), (5, 12), ("all", 30)):
            a_ids, a_scores = single.search_batch(q, k=10, shortlist=shortlist, nprobe=nprobe)
            b_ids, b_scores = sharded.search_batch(q, k=10, shortlist=shortlist, nprobe=nprobe)
            assert np.array_equal(a_ids, b_ids) and np.array_equal(a_scores, b_scores)
            hits = sharded.search(q[3], k=5, shortlist=shortlist, nprobe=nprobe)
            assert hits == single.search(q[3], k=5, shortlist=shortlist, nprobe=nprobe)
            assert [h.payload for h in hits] == [{"n": h.id} for h in hits]
            assert sorted(hits.answered) == [0, 1, 2]
        allowed = list(range(0, 1500, 7))
        a_ids, _ = single.search_batch(q, k=10, shortlist=10, nprobe=3, filter_ids=allowed)
        b_ids, _ = sharded.search_batch(q, k=10, shortlist=10, nprobe=3, filter_ids=allowed)
        assert np.array_equal(a_ids, b_ids) and set(b_ids.ravel().tolist()) <= set(allowed)


def test_default_search_is_one_setting_for_every_shard(tmp_path, monkeypatch):
    """Shards calibrate on their own rows; the driver sends all of them the most demanding
    setting, and ``nprobe="all"`` reaches the shards as a full scan, not as their default."""
    from zenstore.calibration import Calibration
    from zenstore.cluster import worker

    single, sharded, x = pair(tmp_path, shards=3)
    learnt = {0: Calibration(2, 100, 0.9, 0.9, 500, 50), 1: Calibration(5, 100, 0.9, 0.9, 500, 50),
              2: Calibration(3, 300, 0.9, 0.9, 500, 50)}
    monkeypatch.setattr(worker.ShardWorker, "calibration", lambda self: learnt[int(self.path[-4:])])
    q = data(20, seed=4)
    n = len(x)
    with single, sharded:
        sharded._default_at = None
        got = sharded.search_batch(q, k=10)
        assert np.array_equal(got[0], sharded.search_batch(q, k=10, nprobe=5, shortlist=300)[0])
        one = sharded.search(q[0], k=10)
        assert [h.id for h in one] == got[0][0].tolist()
        # a shard's own default never applies: an explicit full scan equals one store's
        a_ids, a_scores = single.search_batch(q, k=10, shortlist=n, nprobe="all")
        b_ids, b_scores = sharded.search_batch(q, k=10, shortlist=n, nprobe="all")
        assert np.array_equal(a_ids, b_ids) and np.array_equal(a_scores, b_scores)
        learnt[1] = None  # a shard without a calibration: the full scan for all
        sharded._default_at = None
        assert np.array_equal(sharded.search_batch(q, k=10)[0], sharded.search_batch(q, k=10, nprobe="all")[0])
        sharded.delete([0])  # this handle's write: the setting is read again at the next search
        assert sharded._default_at is None


def test_shards_fed_small_parts_of_each_batch_still_calibrate(tmp_path):
    """Each shard gets ~1/S of every batch (a 4-shard Ray Data ingest of 4,096-row batches
    gave each shard ~1,024 rows, below calibration.MIN_ROWS): the shards pool those parts
    until they can calibrate, so the default search is not left a full scan."""
    from zenstore import calibration

    x = data(12_000, seed=11)
    with ShardedStore.create(tmp_path / "c", dim=DIM, shards=4, n_base=16, backend="local") as store:
        for a in range(0, len(x), 2000):  # ~500 rows per shard per batch
            store.add(range(a, a + 2000), x[a : a + 2000])
        found, failures = store._read("search", {s: ("calibration", ()) for s in range(4)})
        assert not failures and all(c is not None and c.rows >= calibration.MIN_ROWS for c in found.values()), found
        assert calibration.most_demanding([found[s] for s in range(4)]) is not None  # not a full scan


def test_str_ids_padding_filters_and_deletes(tmp_path):
    ids = [f"doc-{i}" for i in range(300)]
    single, sharded, x = pair(tmp_path, n=300, shards=3, ids=ids)
    with single, sharded:
        a_ids, a_scores = single.search_batch(x[:3], k=400)
        b_ids, b_scores = sharded.search_batch(x[:3], k=400)
        assert b_ids.dtype == object and np.array_equal(a_ids, b_ids)
        assert np.array_equal(np.isnan(a_scores), np.isnan(b_scores)) and b_ids[0, -1] is None
        wanted = ["doc-1", "doc-2", "doc-250", "absent"]
        hits = sharded.search(x[1], k=5, filter_ids=wanted)
        assert {h.id for h in hits} == {"doc-1", "doc-2", "doc-250"}
        assert set(hits.answered) == set(sharded.shard_of(wanted).tolist())  # only the owners were asked
        assert hits == single.search(x[1], k=5, filter_ids=wanted)
        assert sharded.delete(["doc-1", "doc-1", "doc-7"]) == 2
        assert "doc-1" not in sharded and "doc-2" in sharded and 5 not in sharded
        assert sharded.contains(["doc-7", "doc-8"]).tolist() == [False, True]
        assert sharded.delete(["doc-1", "nope"], missing_ok=True) == 0
        assert sharded.delete([1], missing_ok=True) == 0
        sharded.upsert(["doc-1"], x[:1], [{"back": 1}])
        assert sharded.get("doc-1").payload == {"back": 1} and len(sharded) == 299
        assert sharded.verify() == []
        before = sharded.stats()["deleted_rows"]
        assert before == 2 and sharded.compact()["rows_after"] == 299


def test_any_dim_and_the_reranker_on_a_sharded_store(tmp_path):
    dim = 100  # not a multiple of 64: every shard pads its codes, as one store does
    n = 600
    x = data(n, dim=dim, seed=11)
    payloads = [{"text": f"t{i}"} for i in range(n)]
    with Store.create(tmp_path / "single", dim=dim, n_base=8) as single, \
            ShardedStore.create(tmp_path / "sharded", dim=dim, shards=3, n_base=8, backend="local") as sharded:
        single.add(range(n), x, payloads)
        sharded.train(base=single.base())
        sharded.add(range(n), x, payloads)
        assert sharded.dim == dim and read_manifest(sharded.path).dim == dim
        q = data(6, dim=dim, seed=12)
        a_ids, a_scores = single.search_batch(q, k=10, shortlist=n)
        b_ids, b_scores = sharded.search_batch(q, k=10, shortlist=n)
        assert np.array_equal(a_ids, b_ids) and np.array_equal(a_scores, b_scores)
        candidates = [5, 77, 300, 599, 5, 123456, 42]  # a repeat and an id not stored
        for top_n in (1, 3, 10):
            want = zenstore.Reranker(single).rerank(q[0], candidates, top_n=top_n, missing="skip")
            got = zenstore.Reranker(sharded).rerank(q[0], candidates, top_n=top_n, missing="skip")
            assert got == want and got[0].text is not None
        with pytest.raises(zenstore.IdNotFound, match="123456"):
            zenstore.Reranker(sharded).rerank(q[0], candidates)


BAD_CALLS = {
    "dup in batch": lambda s, x: s.add([5000, 5000], x[:2]),
    "dup stored": lambda s, x: s.add([3, 5001], x[:2]),
    "dim": lambda s, x: s.add([5000], x[:1, :64]),
    "nan": lambda s, x: s.add([5000, 5001], np.vstack([x[:1], np.full((1, DIM), np.nan)])),
    "zero": lambda s, x: s.add([5000], np.zeros((1, DIM))),
    "count": lambda s, x: s.add([5000, 5001], x[:1]),
    "str ids": lambda s, x: s.upsert(["a"], x[:1]),
    "mixed ids": lambda s, x: s.add([1, "a"], x[:2]),
    "empty": lambda s, x: s.add([], x[:0]),
    "payload": lambda s, x: s.add([5000], x[:1], [{"f": object()}]),
    "payload count": lambda s, x: s.add([5000], x[:1], [{}, {}]),
    "delete missing": lambda s, x: s.delete([1, 99999]),
    "delete kind": lambda s, x: s.delete(["a"]),
    "get missing": lambda s, x: s.get(99999),
    "rerank missing": lambda s, x: s.rerank(x[0], [1, 99999]),
    "rerank kind": lambda s, x: s.rerank(x[0], ["a"]),
    "query dim": lambda s, x: s.search(x[0, :64]),
    "query zero": lambda s, x: s.search(np.zeros(DIM)),
    "query shape": lambda s, x: s.search(x[:2]),
    "k": lambda s, x: s.search(x[0], k=0),
    "shortlist": lambda s, x: s.search_batch(x[:2], shortlist=-1),
    "filter kind": lambda s, x: s.search(x[0], filter_ids=["a"]),
    "filter empty": lambda s, x: s.search(x[0], filter_ids=[]),
    "top_n": lambda s, x: s.rerank(x[0], [1], top_n=0),
    "train again": lambda s, x: s.train(x),
}


def test_bad_input_gets_the_same_errors_as_store_and_writes_nothing(tmp_path):
    single, sharded, x = pair(tmp_path, n=400, shards=3)
    with single, sharded:
        before = [p["generation"] for p in sharded.stats()["per_shard"]]
        for name, call in BAD_CALLS.items():
            with pytest.raises(zenstore.ZenstoreError) as want:
                call(single, x)
            with pytest.raises(zenstore.ZenstoreError) as got:
                call(sharded, x)
            assert type(got.value) is type(want.value), name
            assert str(got.value).replace(sharded.path, "P") == str(want.value).replace(single.path, "P"), name
        assert [p["generation"] for p in sharded.stats()["per_shard"]] == before  # not one shard wrote
        assert len(sharded) == 400


def test_lifecycle_errors(tmp_path):
    path = tmp_path / "c"
    with pytest.raises(InvalidArgument, match="shards"):
        ShardedStore.create(path, dim=DIM, shards=0, backend="local")
    with pytest.raises(InvalidArgument, match="unknown store option"):
        ShardedStore.create(path, dim=DIM, shards=2, backend="local", nbase=3)
    with pytest.raises(InvalidArgument):
        ShardedStore.create(path, dim=0, shards=2, backend="local")
    with pytest.raises(InvalidArgument, match="backend"):
        ShardedStore.create(path, dim=DIM, shards=2, backend="spark")
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing half-made
    store = ShardedStore.create(path, dim=DIM, shards=2, backend="local")
    assert sorted(os.listdir(path)) == ["cluster.json", "shard-0000", "shard-0001", "writer.lock"]
    with pytest.raises(StoreExists):
        ShardedStore.create(path, dim=DIM, shards=2, backend="local")
    with pytest.raises(StoreLocked):
        ShardedStore.open(path, backend="local")
    store.add([1, 2], data(2))  # the first add trains one base for every shard
    assert store.trained and store.base().n_base == 1
    store.close()
    store.close()
    with pytest.raises(StoreClosed):
        len(store)
    for bad in (0, 3, 1.5, True):
        with pytest.raises(InvalidArgument, match="reader_actors"):
            ShardedStore.open(path, readonly=True, backend="ray", reader_actors=bad)
    with ShardedStore.open(path, readonly=True) as ro:
        assert len(ro) == 2 and ro.readonly and ro.backend == "local"
        with pytest.raises(ReadOnlyStore):
            ro.upsert([1], data(1))
        with pytest.raises(ReadOnlyStore):
            ro.compact()


def test_open_finds_shards_that_disagree_and_finishes_a_base_broadcast(tmp_path):
    path = tmp_path / "c"
    ShardedStore.create(path, dim=DIM, shards=3, backend="local").close()
    with Store.open(path / "shard-0001") as shard:  # a crash after shard 1 got the base, before the others
        shard.train(data(200))
    with ShardedStore.open(path, backend="local") as store:
        assert store.trained  # the writer gave the others shard 1's base
        store.add(range(50), data(50))
        assert store.verify() == []
    with Store.open(path / "shard-0002") as shard:  # an id written behind the cluster's back
        wrong = next(i for i in range(1000, 2000) if int(shard_of(np.array([i]), 3)[0]) != 2)
        shard.add([wrong], data(1))
    with ShardedStore.open(path, readonly=True) as store:
        problems = store.verify()
        assert len(problems) == 1 and problems[0].startswith("shard-0002: 1 id(s) belong to other shards")
    other = tmp_path / "other"
    ShardedStore.create(other, dim=DIM, shards=2, backend="local").close()
    Store.open(other / "shard-0000").train(data(100, seed=1))
    Store.open(other / "shard-0001").train(data(100, seed=2))
    with pytest.raises(CorruptStore, match="different base matrices"):
        ShardedStore.open(other, readonly=True)
    os.rename(other / "shard-0001", other / "moved")
    with pytest.raises(CorruptStore, match="shard 1"):
        ShardedStore.open(other, readonly=True)


# --- on a local Ray cluster ---------------------------------------------------------------------

try:
    import ray
except ImportError:  # the tests below need pip install 'zenstore[ray]'
    ray = None

needs_ray = pytest.mark.skipif(ray is None, reason="needs Ray: pip install 'zenstore[ray]'")


# RAY_worker_niceness: Ray starts its workers (shard actors, Ray Data tasks) at nice 15;
# on a loaded machine they then wait for every other process, and a test that needs a
# few actor starts and a Ray Data run took minutes. At 0 they compete as the test does.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_worker_niceness": "0"}


@pytest.fixture(scope="module")
def ray_cluster():
    """The one local Ray cluster of the test run (every Ray test is in this module; ~10 s
    to start on a quiet machine, more on a loaded one): 2 CPUs, no dashboard, no usage
    reporting, loopback only, workers at the test's priority. Yields its address for
    driver subprocesses (they inherit the environment)."""
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def pids(store):
    return ray.get([a.pid.remote() for a in store.actors])


def kill_for_good(actor, timeout=60.0):
    """``ray.kill(no_restart=True)`` and wait until the actor is gone: the kill is
    asynchronous, and on a loaded machine a call sent right after it can still be run."""
    ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            ray.get(actor.pid.remote(), timeout=timeout)
        except ray.exceptions.RayError:
            return
        assert time.monotonic() < deadline, "a killed actor still answers"
        time.sleep(0.1)


def wait_for_free_cpus(total=2.0, timeout=60.0):
    """Until actors of earlier tests (or of a killed driver) have released their CPUs: a
    Ray Data read task needs a whole one."""
    deadline = time.monotonic() + timeout
    while ray.available_resources().get("CPU", 0) < total - 1e-6 and time.monotonic() < deadline:
        time.sleep(0.2)


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_results_equal_a_single_store_and_partial_search(tmp_path):
    # written in-process (the writes through actors are checked by the tests below); one
    # actor start per shard is what a Ray test costs most on a loaded machine
    single, sharded, x = pair(tmp_path, n=1200, shards=3, metric="ip", backend="local")
    sharded.close()
    q = data(20, seed=4)
    want = single.search_batch(q, k=10, shortlist=len(x))
    with ShardedStore.open(tmp_path / "sharded", local_reads=False, timeout=120) as store:  # reads on the actors
        assert store.backend == "ray" and len(set(pids(store))) == 3 and os.getpid() not in pids(store)
        got = store.search_batch(q, k=10, shortlist=len(x))
        assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1])
        assert store.search(q[0], k=5, shortlist=len(x)) == single.search(q[0], k=5, shortlist=len(x))
        kill_for_good(store.actors[1])  # shard 1 down for good
        with pytest.raises(ShardUnavailable, match=r"shard\(s\) \[1\]") as err:
            store.search(q[0], k=5)
        assert err.value.answered == (0, 2) and set(err.value.failed) == {1}
        part = store.search_batch(q, k=10, shortlist=len(x), partial=True)
        assert part.answered == (0, 2) and set(part.failed) == {1}
        owned = set(np.flatnonzero(store.shard_of(list(range(len(x)))) != 1).tolist())
        assert set(part.ids.ravel().tolist()) <= owned
        hits = store.search(q[0], k=5, partial=True)
        assert hits.answered == (0, 2) and all(h.id in owned for h in hits)
        with pytest.raises(PartialWrite) as err:
            store.upsert(list(range(30)), x[:30])
        assert 1 in err.value.failed and 1 in err.value.unknown and set(err.value.committed) <= {0, 2}
    single.close()


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_reader_actors_serve_shard_groups_with_per_shard_failures(tmp_path):
    single, sharded, x = pair(tmp_path, n=900, shards=3, metric="cosine", backend="local")
    sharded.close()
    q = data(12, seed=5)
    want = single.search_batch(q, k=10, shortlist=len(x))
    with ShardedStore.open(tmp_path / "sharded", readonly=True, backend="ray", timeout=120) as store:
        assert len(store.actors) == 1  # one node: one reader actor answers for every shard
        got = store.search_batch(q, k=10, shortlist=len(x))
        assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and got.answered == (0, 1, 2)
    with ShardedStore.open(tmp_path / "sharded", readonly=True, backend="ray", reader_actors=2,
                           timeout=120) as store:
        assert len(store.actors) == 2 and len(store) == len(x)  # shards 0 and 2 on actor 0, shard 1 on actor 1
        assert store.search(q[0], k=5, shortlist=len(x)) == single.search(q[0], k=5, shortlist=len(x))
        assert store.get(7).payload == {"n": 7}
        with pytest.raises(IdNotFound):  # a shard's own error comes back as it is
            store.get(10**6)
        with pytest.raises(ReadOnlyStore):
            store.add([10**6], x[:1])
        kill_for_good(store.actors[1])  # the actor of shard 1 down for good
        with pytest.raises(ShardUnavailable, match=r"shard\(s\) \[1\]") as err:
            store.search(q[0], k=5)
        assert err.value.answered == (0, 2) and set(err.value.failed) == {1}
        part = store.search_batch(q, k=10, shortlist=len(x), partial=True)
        assert part.answered == (0, 2) and set(part.failed) == {1}
        owned = set(np.flatnonzero(store.shard_of(list(range(len(x)))) != 1).tolist())
        assert set(part.ids.ravel().tolist()) <= owned
    single.close()


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_compiled_reads_answer_as_ordinary_calls_and_survive_a_killed_reader(tmp_path):
    single, sharded, x = pair(tmp_path, n=900, shards=3, metric="cosine", backend="local")
    sharded.close()
    q = data(8, seed=6)
    want = single.search_batch(q, k=10, shortlist=len(x))
    with pytest.raises(InvalidArgument, match="compiled_reads"):
        ShardedStore.open(tmp_path / "sharded", readonly=True, backend="ray", compiled_reads="yes")
    with ShardedStore.open(tmp_path / "sharded", readonly=True, backend="ray", compiled_reads=True,
                           reader_actors=2, timeout=120) as store:
        readers = store._reads
        got = store.search_batch(q, k=10, shortlist=len(x))
        assert readers._graph is not None  # answered through the compiled graph
        assert np.array_equal(want[0], got[0]) and np.array_equal(want[1], got[1]) and got.answered == (0, 1, 2)
        assert store.search(q[0], k=5, shortlist=len(x)) == single.search(q[0], k=5, shortlist=len(x))
        before = pids(store)
        ray.kill(store.actors[1], no_restart=False)  # Ray restarts it; the graph breaks, the ordinary path answers
        deadline = time.monotonic() + 120
        while pids_when_back(store)[1] == before[1]:  # the kill is asynchronous: wait for the new process
            assert time.monotonic() < deadline, "the reader actor was not restarted"
            time.sleep(0.1)
        again = store.search_batch(q, k=10, shortlist=len(x))
        assert np.array_equal(want[0], again[0]) and readers._graph is None
    single.close()


BATCHES = scale(30, 90)  # batches the writer thread adds while two shard actors are killed
SIZE = 40


def _writer_loop(store, x, acked, errors, crashed):
    try:
        for b in range(BATCHES):
            ids = list(range(10000 + b * SIZE, 10000 + (b + 1) * SIZE))
            try:
                store.add(ids, x[b * SIZE:(b + 1) * SIZE])
                acked.append(b)
            except zenstore.ZenstoreError as exc:  # not acknowledged: retried as the docs say
                errors.append(exc)
                store.upsert(ids, x[b * SIZE:(b + 1) * SIZE])
                acked.append(b)
    except BaseException as exc:  # noqa: BLE001 - reported by the test, not lost in the thread
        crashed.append(exc)


def _wait_for(acked, n, writer, crashed, timeout=240.0):
    deadline = time.monotonic() + timeout
    while len(acked) < n and writer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not crashed, crashed
    assert len(acked) >= n, f"the writer acknowledged {len(acked)} batches, not {n}"


def pids_when_back(store, timeout=120.0):
    """The actors' pids once every one answers (a restarting actor refuses calls)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return pids(store)
        except ray.exceptions.RayError:
            assert time.monotonic() < deadline, "a shard actor did not come back"
            time.sleep(0.2)


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_killing_shard_actors_during_writes_loses_no_acknowledged_batch(tmp_path):
    x = data(BATCHES * SIZE, seed=5)
    store = ShardedStore.create(tmp_path / "c", dim=DIM, shards=3, n_base=16)
    with store:
        store.add(range(100), x[:100])
        before = pids(store)
        acked, errors, crashed = [], [], []
        writer = threading.Thread(target=_writer_loop, args=(store, x, acked, errors, crashed))
        writer.start()
        _wait_for(acked, BATCHES // 6, writer, crashed)
        ray.kill(store.actors[0], no_restart=False)  # killed by Ray, restarted by Ray
        _wait_for(acked, BATCHES // 6 + 3, writer, crashed)  # once shard 0 took writes again
        os.kill(before[2], signal.SIGKILL)  # the shard's worker process dies
        writer.join(timeout=240)
        assert not writer.is_alive() and not crashed, crashed
        assert sorted(acked) == list(range(BATCHES))
        after = pids_when_back(store)
        assert after[0] != before[0] and after[2] != before[2] and after[1] == before[1]  # they came back
        expected = list(range(10000, 10000 + BATCHES * SIZE))
        assert store.contains(expected).all() and len(store) == 100 + BATCHES * SIZE
        with _reference(tmp_path, store, x) as ref:
            for i in (10000, 10000 + BATCHES // 2 * SIZE, 10000 + BATCHES * SIZE - 1):
                assert np.array_equal(store.get(i).vector, ref.get(i).vector)
        assert store.verify() == []


def _reference(tmp_path, store, x):
    ref = Store.create(tmp_path / "ref", dim=DIM, n_base=16)
    ref.train(base=store.base())
    ref.add(range(10000, 10000 + BATCHES * SIZE), x[:BATCHES * SIZE])
    return ref


@needs_ray
@pytest.mark.usefixtures("ray_cluster")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_shard_dying_mid_batch_names_it_and_upsert_makes_the_batch_whole(tmp_path):
    x = data(400, seed=6)
    with ShardedStore.create(tmp_path / "c", dim=DIM, shards=3, n_base=16, restart_wait=0) as store:
        store.add(range(100), x[:100])
        victim = pids(store)[1]
        os.kill(victim, signal.SIGKILL)
        time.sleep(0.5)
        ids = list(range(100, 400))
        with pytest.raises(PartialWrite) as err:
            store.add(ids, x[100:])
        e = err.value
        assert set(e.failed) == {1} and e.unknown == (1,) and e.committed == (0, 2)
        assert "shard(s) [0, 2] committed" in str(e) and "upsert" in str(e)
        owners = store.shard_of(ids)
        assert store.contains([i for i, s in zip(ids, owners) if s != 1]).all()
        deadline = time.monotonic() + 120
        while True:  # the caller's retry: upsert is idempotent
            try:
                store.upsert(ids, x[100:])
                break
            except PartialWrite:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert store.contains(ids).all() and len(store) == 400 and pids(store)[1] != victim


# --- Ray Data ingest ----------------------------------------------------------------------------

_DRIVER = r"""
import os, sys, time
import pyarrow.parquet as pq
import ray, ray.data
from zenstore.cluster import ShardedStore
ray.init(address=sys.argv[1], log_to_driver=False)
store = ShardedStore.open(sys.argv[2])
print("ready", flush=True)
# the parquet file's rows, already in this process: no read tasks to start
store.ingest(ray.data.from_arrow(pq.read_table(sys.argv[3])), batch_size=100, name="docs",
             progress=lambda p: (print("batch", p.batches, flush=True), time.sleep(0.4)))
print("finished", flush=True)
"""


def _parquet(path, x, ids):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"id": ids, "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1]),
                      "title": [f"t{i}" for i in range(len(ids))]})
    pq.write_table(table, path, row_group_size=250)


@needs_ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ingest_resumes_after_the_driver_is_killed(tmp_path, ray_cluster):
    n = 2000
    x = data(n, seed=7)
    ids = np.arange(n, dtype=np.int64) * 7
    _parquet(tmp_path / "docs.parquet", x, ids)
    path = tmp_path / "c"
    ShardedStore.create(path, dim=DIM, shards=2, n_base=16, backend="local").close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    driver = subprocess.Popen([sys.executable, "-c", _DRIVER, ray_cluster, str(path), str(tmp_path / "docs.parquet")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    watchdog = threading.Timer(300, driver.kill)  # a driver that hangs ends the read loop below
    watchdog.start()
    try:
        seen = 0
        for line in driver.stdout:
            seen += line.startswith("batch")
            if seen >= 4:
                break
        assert seen >= 4, "the driver never committed a batch"
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        watchdog.cancel()
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=30)
        driver.stdout.close()
    wait_for_free_cpus()
    committed = []
    for s in range(2):
        with Store.open(path / f"shard-{s:04d}", readonly=True) as shard:
            state = shard.checkpoint("ray-ingest:docs")
            committed.append(0 if state is None else state["added"])
    assert 0 < sum(committed) < n  # killed mid-way
    import pyarrow.parquet as pq
    import ray.data

    # the file's rows in memory: on a loaded machine every Ray Data run of a file reader
    # costs tens of seconds (read tasks in fresh worker processes); the CLI test below
    # reads files. The dead driver's actors die with it (Ray's ownership), releasing the
    # shards' locks; resumed in this process (local backend: no actor starts, same code).
    table = pq.read_table(tmp_path / "docs.parquet")
    with ShardedStore.open(path, backend="local") as store:
        summary = store.ingest(ray.data.from_arrow(table), batch_size=100, name="docs")
        assert summary.rows_resumed == sum(committed) and summary.rows_added == n - sum(committed)
        assert len(store) == n and sorted(store.ids().tolist()) == ids.tolist()  # none lost, none twice
        assert store.get(int(ids[5])).payload == {"title": "t5"}
        again = store.ingest(ray.data.from_arrow(table), batch_size=100, name="docs")
        assert again.rows_added == 0 and again.rows_resumed == n
        with pytest.raises(IngestError, match="batch_size"):
            store.ingest(ray.data.from_arrow(table), batch_size=64, name="docs")
        ref = Store.create(tmp_path / "ref", dim=DIM, n_base=16)
        ref.train(base=store.base())
        ref.add(ids, x)
        for i in (0, 777, 1999):
            assert np.array_equal(store.get(int(ids[i])).vector, ref.get(int(ids[i])).vector)
        # bad rows: fail names the row and writes nothing of its batch; skip reports them
        rows = [{"id": 10**6 + i, "vector": x[i].tolist()} for i in range(10)]
        rows[6]["vector"] = rows[6]["vector"][:5]
        with pytest.raises(IngestError, match="row 6: vector has 5 values"):
            store.ingest(ray.data.from_items(rows), name="bad")
        assert len(store) == n
        summary = store.ingest(ray.data.from_items(rows), name="bad", on_error="skip",
                               report_path=str(tmp_path / "rejected.jsonl"))
        assert summary.rows_added == 9 and summary.rows_skipped == 1 and len(store) == n + 9
        assert json.loads((tmp_path / "rejected.jsonl").read_text())["row"] == 6
        strs = [{"id": f"s{i}", "vector": x[i].tolist()} for i in range(3)]
        with pytest.raises(IngestError, match="row 0: id 's0' is str, the store uses int ids"):
            store.ingest(ray.data.from_items(strs), name="strs")
        with pytest.raises(InvalidArgument, match="name="):
            store.ingest(ray.data.from_items(strs))


@needs_ray
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_cli_ingest_sharded_npy_and_rerun(tmp_path, ray_cluster, capsys):
    from zenstore.cli import main

    wait_for_free_cpus()
    x = data(900, seed=8)
    np.save(tmp_path / "a.npy", x[:500])
    np.save(tmp_path / "b.npy", x[500:])
    store = str(tmp_path / "c.zens")
    args = ["ingest", store, str(tmp_path / "a.npy"), str(tmp_path / "b.npy"), "--dim", str(DIM), "--n-base", "16",
            "--shards", "2", f"--ray={ray_cluster}", "--batch-size", "200", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["rows_added"] == 900 and out["store_count"] == 900 and sum(out["shards"]) == 900
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["rows_added"] == 0 and out["rows_resumed"] == 900
    with ShardedStore.open(store, readonly=True) as ro:
        assert sorted(ro.ids().tolist()) == list(range(900))
        hits = ro.search(x[600], k=1)
        assert hits[0].id == 600
    assert main(["ingest", store, str(tmp_path / "a.npy"), "--shards", "3", f"--ray={ray_cluster}"]) == 1
    assert "has 2 shards" in capsys.readouterr().err


def test_cluster_benchmark_has_help():
    res = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "benchmarks" / "cluster.py"),
                          "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "usage:" in res.stdout and "--reuse" in res.stdout, res.stderr
