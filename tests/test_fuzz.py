"""Hostile input: hypothesis throws random arguments at the public API and random bytes at
the file readers. Only documented exceptions (``zenstore.ZenstoreError`` subclasses) may
come out -- no other exception, no crash, no hang -- a call that raises changes nothing
stored, and a call that returns gives a well-formed, finite answer.

Normal runs try a few hundred examples in all; ``--runslow`` tries ~10x more.
"""

from __future__ import annotations

import faulthandler
import json
import math
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import lmdb
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import zenstore
from zenstore import Store, verify_store
from zenstore import format as fmt
from zenstore.files import open_framed_file, write_framed_file

from .conftest import scale, slow_run

DIM = 64
N = 120
TRIED: dict = {}


def fuzz_settings(normal: int, slow: int | None = None):
    # the deadline catches pathological inputs; a first call that compiles kernels on a
    # loaded machine (17 s seen) is not one
    return settings(max_examples=scale(normal, slow or normal * 10), deadline=60_000,
                    database=None, derandomize=not slow_run(),
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def tried(name: str) -> None:
    TRIED[name] = TRIED.get(name, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def watchdog():
    """A hang anywhere in this module dumps every thread's stack and fails the run."""
    faulthandler.dump_traceback_later(scale(240, 600), exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()
    print(f"\nfuzz examples tried: {TRIED} (total {sum(TRIED.values())})")


def _make(path: Path, metric: str, str_ids: bool = False, empty: bool = False,
          refine: str | None = None) -> np.ndarray:
    x = np.random.default_rng(7).standard_normal((N, DIM)).astype(np.float32)
    ids = [f"d{i}" for i in range(N)] if str_ids else list(range(N))
    with Store.create(path, dim=DIM, metric=metric, n_base=4, refine=refine) as s:
        s.add(ids, x, payloads=[{"i": i} for i in range(N)])
        if empty:
            s.delete(ids)
        else:
            s.delete(ids[:5])
    return x


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    out = {}
    for name, metric, str_ids, empty in [("cosine", "cosine", False, False), ("l2", "l2", False, False),
                                         ("ip-str", "ip", True, False), ("emptied", "cosine", False, True)]:
        _make(root / name, metric, str_ids, empty)
        out[name] = Store.open(root / name)
    for name, metric, tier in [("cosine-int8", "cosine", "int8"), ("l2-magnitude4", "l2", "magnitude4")]:
        _make(root / name, metric, refine=tier)
        out[name] = Store.open(root / name)
    Store.create(root / "untrained", dim=DIM, metric="ip").close()
    out["untrained"] = Store.open(root / "untrained")
    yield out
    for s in out.values():
        s.close()


STORE_NAMES = ["cosine", "l2", "ip-str", "emptied", "untrained", "cosine-int8", "l2-magnitude4"]


def fingerprint(store):
    """What a failed call must leave untouched."""
    st_ = store.stats()
    ids = store.ids()
    some = ids[:3].tolist()
    return (st_["generation"], st_["count"], st_["segments"], sorted(map(str, ids.tolist())),
            [store.get(i).payload for i in some], [store.get(i).vector.tobytes() for i in some])


# --- strategies -------------------------------------------------------------------------

SPECIAL = [0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1e-38, 1e-30, 1e20,
           1e38, 3.4e38, -3.4e38, 1e300, 5e-324, 65504.0, 65520.0]

dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int8, np.int64, np.uint64, np.bool_,
                          np.complex64])


@st.composite
def arrays(draw, rows=None):
    """Mostly (rows, DIM)-shaped numeric arrays, with extreme values; sometimes anything."""
    dtype = np.dtype(draw(dtypes))
    if draw(st.booleans()):
        shape = (DIM,) if rows is None else (rows if rows is not None else 1, DIM)
        shape = draw(st.sampled_from([shape, (1, DIM), (2, DIM), (DIM,)]))
    else:
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=DIM + 1))
    if dtype.kind == "f":
        base = draw(hnp.arrays(dtype, shape, elements=st.floats(-3, 3, width=min(dtype.itemsize * 8, 64))))
        if base.size and draw(st.booleans()):
            special = draw(st.sampled_from(SPECIAL))
            idx = draw(st.integers(0, base.size - 1))
            with np.errstate(over="ignore"):
                base.flat[idx] = dtype.type(special)
        if base.size and draw(st.booleans()):
            with np.errstate(all="ignore"):
                base = (base * dtype.type(draw(st.sampled_from([1e-30, 1e-20, 1e-10, 1e10, 1e18, 1e30]))))
        return base
    if dtype.kind == "c":
        return np.zeros(shape, dtype)
    return draw(hnp.arrays(dtype, shape))


ints = st.one_of(st.integers(-5, 300), st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**63 - 1, -(2**63)]))
id_items = st.one_of(ints, st.text(max_size=300), st.floats(), st.booleans(), st.none(), st.binary(max_size=5))
id_lists = st.one_of(
    st.lists(st.integers(-3, 200), max_size=8),
    st.lists(st.text(min_size=0, max_size=8).map(lambda s: "d" + s), max_size=8),
    st.lists(id_items, max_size=6),
    hnp.arrays(st.sampled_from([np.int64, np.uint64, np.int32, np.float64, np.bool_]), st.integers(0, 6)),
    st.sampled_from(["abc", b"abc", 7, None, {1: 2}, np.zeros((2, 2), np.int64)]),
)
knobs = st.one_of(st.none(), ints, st.floats(), st.booleans(), st.sampled_from([np.int64(5), "3", 2**40]))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                           max_leaves=8)
payload_lists = st.one_of(st.none(), st.lists(st.one_of(st.none(), json_values), max_size=4),
                          st.sampled_from(["x", {"a": 1}, 5]))


def _check_hits(store, hits, k, allowed_ids=None):
    assert isinstance(hits, list) and len(hits) <= k
    scores = [h.score for h in hits]
    assert all(math.isfinite(s) for s in scores), scores
    if store.metric == "l2":
        assert scores == sorted(scores)
    else:
        assert scores == sorted(scores, reverse=True)
    ids = [h.id for h in hits]
    assert len(set(ids)) == len(ids)
    for i in ids:
        assert i in store
        if allowed_ids is not None:
            assert i in allowed_ids


# --- the public API -----------------------------------------------------------------------


@fuzz_settings(120)
@given(name=st.sampled_from(STORE_NAMES), q=arrays(), k=knobs, shortlist=knobs, nprobe=knobs,
       filter_ids=st.one_of(st.none(), id_lists), batch=st.booleans(), payload=st.booleans())
def test_search_with_anything(stores, name, q, k, shortlist, nprobe, filter_ids, batch, payload):
    store = stores[name]
    tried("search")
    try:
        if batch:
            ids, scores = store.search_batch(q, k=k, shortlist=shortlist, nprobe=nprobe, filter_ids=filter_ids)
        else:
            hits = store.search(q, k=k, shortlist=shortlist, nprobe=nprobe, filter_ids=filter_ids,
                                with_payload=payload)
    except zenstore.ZenstoreError:
        return
    if batch:
        assert ids.shape == scores.shape == (np.asarray(q).shape[0], k)
        valid = ~np.isnan(scores)
        assert np.isfinite(scores[valid]).all()
        pad = None if ids.dtype == object else -1
        assert all((i == pad) != v for i, v in zip(ids.ravel().tolist(), valid.ravel()))
    else:
        _check_hits(store, hits, k)


@fuzz_settings(80)
@given(name=st.sampled_from(["cosine", "l2", "ip-str"]), data=st.data())
def test_extreme_magnitudes_never_give_wrong_results(stores, name, data):
    """Scaling a query by a power of two changes nothing under cosine (and only the scores
    under ip); a query too long for float32 scores is refused, never answered with
    inf/NaN scores or a ranking of ties."""
    store = stores[name]
    tried("magnitudes")
    q = data.draw(hnp.arrays(np.float32, DIM, elements=st.floats(-2, 2, width=32)))
    assume(np.linalg.norm(q) > 0.1)
    e = data.draw(st.integers(-100, 100))
    qs = (q.astype(np.float64) * 2.0**e).astype(np.float32)
    ref_ids, ref_scores = store.search_batch(q[None], k=10, shortlist=N)
    try:
        ids, scores = store.search_batch(qs[None], k=10, shortlist=N)
    except zenstore.InvalidVector:
        assert store.metric != "cosine" and np.linalg.norm(qs.astype(np.float64)) > 2.0**60
        return
    assert np.isfinite(scores).all()
    if store.metric == "cosine":
        assert ids.tolist() == ref_ids.tolist()
        np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-5)
    elif store.metric == "ip" and abs(e) <= 60:
        assert ids[0, :3].tolist() == ref_ids[0, :3].tolist()


@fuzz_settings(25)
@given(x=hnp.arrays(np.float32, DIM, elements=st.floats(-2, 2, width=32)), e=st.integers(-120, 120))
def test_cosine_vectors_of_any_length_are_stored_faithfully(stores, x, e):
    """A cosine store keeps directions: the vector added at 2^e times its length is
    stored as the same direction (it used to be normalised to garbage or to zero)."""
    assume(np.linalg.norm(x) > 0.1)
    store = stores["cosine"]
    tried("cosine lengths")
    xs = (x.astype(np.float64) * 2.0**e).astype(np.float32)
    assume(np.isfinite(xs).all() and np.any(xs != 0))
    new_id = 10_000 + len(store)
    store.add([new_id], xs[None])
    try:
        v = store.get(new_id).vector
        cos = float(v @ x / (np.linalg.norm(v) * np.linalg.norm(x)))
        assert cos > 0.5, f"stored direction lost (cos {cos:.2f}) for a vector of length 2^{e}"
        # searching with the vector at that length finds it, scored against its stored
        # vector (cosine: unit query . dequantized vector), and nothing scores above it
        own = float(x.astype(np.float64) @ v / np.linalg.norm(x.astype(np.float64)))
        (hit,) = store.search(xs, k=1, shortlist=N + 50, filter_ids=[new_id])
        assert hit.id == new_id and hit.score == pytest.approx(own, rel=1e-3, abs=1e-4)
        top = store.search(xs, k=1, shortlist=len(store) + 50)[0]
        assert top.score >= own - 1e-4, f"search at length 2^{e} ranks {top.id} above the query's own vector"
    finally:
        store.delete([new_id])


@fuzz_settings(120)
@given(name=st.sampled_from(STORE_NAMES), op=st.sampled_from(["add", "upsert", "delete", "train"]),
       ids=id_lists, vectors=arrays(rows=2), payloads=payload_lists, missing_ok=st.booleans())
def test_writes_with_anything(stores, name, op, ids, vectors, payloads, missing_ok):
    """A write either raises a ZenstoreError and changes nothing, or does what it says."""
    store = stores[name]
    tried("writes")
    before = fingerprint(store)
    try:
        if op == "add":
            store.add(ids, vectors, payloads)
        elif op == "upsert":
            store.upsert(ids, vectors, payloads)
        elif op == "delete":
            store.delete(ids, missing_ok=missing_ok)
        else:
            store.train(vectors)
    except zenstore.ZenstoreError:
        assert fingerprint(store) == before, f"a failed {op} changed the store"
        return
    tried("writes that succeeded")
    if op in ("add", "upsert"):
        for i, p in zip(list(ids), payloads or [None] * len(ids)):
            i = i.item() if isinstance(i, np.generic) else i
            rec = store.get(i)
            assert rec.payload == p and np.isfinite(rec.vector).all()
    elif op == "delete":
        assert not store.contains(ids).any()
    assert store.verify() == []


@st.composite
def plausible_batches(draw, str_ids: bool):
    """Writes that are mostly valid: right shape, some extreme or invalid values."""
    n = draw(st.integers(1, 4))
    raw = draw(st.lists(st.integers(0, 200), min_size=n, max_size=n))
    ids = [f"d{i}" for i in raw] if str_ids else raw
    x = draw(hnp.arrays(np.float32, (n, DIM), elements=st.floats(-3, 3, width=32)))
    if draw(st.booleans()):
        with np.errstate(all="ignore"):
            x[draw(st.integers(0, n - 1))] *= np.float32(draw(st.sampled_from([0.0, 1e-38, 1e-20, 1e15, 1e30])))
    if draw(st.booleans()):
        with np.errstate(all="ignore"):  # 1e300 -> inf in float32
            x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from(SPECIAL))
    payloads = draw(st.none() | st.lists(st.none() | st.dictionaries(st.text(max_size=4), json_values, max_size=2),
                                         min_size=n, max_size=n))
    return ids, x, payloads


@fuzz_settings(80)
@given(name=st.sampled_from(["cosine", "l2", "ip-str", "emptied"]), data=st.data(),
       op=st.sampled_from(["add", "upsert", "delete"]))
def test_plausible_writes(stores, name, data, op):
    """Near-valid writes: each either raises a ZenstoreError and changes nothing, or is
    stored exactly (payloads, finite vectors, searchable)."""
    store = stores[name]
    tried("plausible writes")
    ids, x, payloads = data.draw(plausible_batches(name == "ip-str"))
    before = fingerprint(store)
    try:
        if op == "delete":
            store.delete(ids, missing_ok=data.draw(st.booleans()))
        else:
            getattr(store, op)(ids, x, payloads)
    except zenstore.ZenstoreError:
        assert fingerprint(store) == before, f"a failed {op} changed the store"
        return
    tried("plausible writes that succeeded")
    if op == "delete":
        assert not store.contains(ids).any()
        return
    for i, p, v in zip(ids, payloads or [None] * len(ids), x):
        rec = store.get(i)
        assert rec.payload == p and np.isfinite(rec.vector).all()
        hits = store.search(v, k=3, shortlist=len(store) + 10)
        assert all(math.isfinite(h.score) for h in hits) and hits


@fuzz_settings(100)
@given(name=st.sampled_from(STORE_NAMES), ids=id_lists, one=id_items, q=arrays(), top_n=knobs,
       batch_size=knobs)
def test_lookups_with_anything(stores, name, ids, one, q, top_n, batch_size):
    store = stores[name]
    tried("lookups")
    for call in (lambda: store.get(one), lambda: one in store, lambda: store.contains(ids),
                 lambda: store.rerank(q, ids, top_n=top_n),
                 lambda: sum(len(b[0]) for b in store.iter_records(batch_size=batch_size)),
                 lambda: store.checkpoint(one), lambda: store.stats(), lambda: store.ids()):
        try:
            out = call()
        except zenstore.ZenstoreError:
            continue
        if isinstance(out, list):  # rerank
            _check_hits(store, out, top_n)


@fuzz_settings(40)
@given(options=st.dictionaries(
    st.sampled_from(["dim", "metric", "n_base", "scale_blocks", "scale_estimator", "rotation",
                     "train_sample", "min_rows_per_base", "segment_fanout", "seed", "bogus"]),
    st.one_of(ints, st.text(max_size=8), st.floats(), st.booleans(), st.none(),
              st.sampled_from(["cosine", "l2", "ip", "hadamard", "none", "unbiased"])),
    max_size=4))
def test_create_with_anything(options, tmp_path_factory):
    tried("create")
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "s"
    options.setdefault("dim", 64)
    try:
        store = Store.create(path, **options)
    except zenstore.ZenstoreError:
        assert not path.exists()
        return
    with store:
        assert store.verify() == [] and len(store) == 0


# --- the readers: random bytes and crafted files ----------------------------------------


@fuzz_settings(60)
@given(files=st.dictionaries(
    st.sampled_from(["catalog.mdb", "catalog.mdb-lock", "writer.lock", "segments", "base-000001.zbase",
                     "segments/seg-00000001.zseg", "segments/x.tmp"]),
    st.binary(max_size=9000), max_size=5), readonly=st.booleans())
def test_random_bytes_as_a_store_directory(files, readonly, tmp_path_factory):
    tried("random directories")
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    for rel, blob in sorted(files.items()):
        p = root / rel
        try:  # "segments" as a file and "segments/..." cannot both exist: keep the first
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(blob)
        except OSError:
            pass
    before = {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert isinstance(verify_store(root), list)
    try:
        with Store.open(root, readonly=readonly) as s:
            s.search(np.ones(s.dim, np.float32), k=3)
    except zenstore.ZenstoreError:
        pass
    if readonly:
        assert {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    shutil.rmtree(root)


def _lmdb_store(root: Path, records: dict) -> None:
    env = lmdb.open(str(root / "catalog.mdb"), subdir=False, max_dbs=8)
    with env.begin(write=True) as txn:
        for (db, key), value in records.items():
            txn.put(key, value, db=env.open_db(db, txn=txn))
    env.close()


record_values = st.one_of(
    st.binary(max_size=64),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"magic": st.sampled_from(["zenstore", "x"]),
                           "format_version": st.one_of(st.integers(-1, 3), st.text(max_size=2))}).map(
        lambda v: json.dumps(v).encode()),
)


@fuzz_settings(60)
@given(records=st.dictionaries(
    st.tuples(st.sampled_from([b"meta", b"ids", b"tombstones", b"payloads", b"jobs"]),
              st.sampled_from([b"format", b"config", b"manifest", b"generation", fmt.segment_key(1),
                               fmt.id_key(1)])),
    record_values, max_size=6))
def test_random_catalog_records(records, tmp_path_factory):
    """A real LMDB environment whose records are random: refused with a ZenstoreError."""
    tried("random catalogs")
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    (root / "segments").mkdir()
    _lmdb_store(root, records)
    assert isinstance(verify_store(root), list)
    for readonly in (True, False):
        try:
            with Store.open(root, readonly=readonly) as s:
                s.search_batch(np.ones((1, s.dim), np.float32), k=2)
                s.verify()
        except zenstore.ZenstoreError:
            pass
    shutil.rmtree(root)


@fuzz_settings(150)
@given(blob=st.one_of(st.binary(max_size=600),
                      st.binary(max_size=400).map(lambda b: fmt.FILE_MAGIC + b),
                      st.binary(max_size=400).map(lambda b: fmt.FILE_MAGIC + b"\x01\x00\x01\x00" + b)),
       kind=st.sampled_from([1, 2, 3]))
def test_random_bytes_as_a_framed_file(blob, kind, tmp_path_factory):
    tried("random framed files")
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "f"
    path.write_bytes(blob)
    try:
        open_framed_file(str(path), kind)
    except zenstore.ZenstoreError:
        return


@st.composite
def crafted_headers(draw):
    """Headers with a correct crc32 but random fields: the checks after the crc run."""
    n = draw(st.integers(0, 70))
    entries = b"".join(struct.pack("<8sQQII", draw(st.binary(min_size=8, max_size=8)),
                                   draw(st.sampled_from([0, 64, 128, 192, 2**64 - 64]) | st.integers(0, 2**64 - 1)),
                                   draw(st.integers(0, 300) | st.integers(0, 2**64 - 1)),
                                   draw(st.integers(0, 2**32 - 1)), 0)
                       for _ in range(min(n, 4)))
    meta = draw(st.one_of(json_values.map(lambda v: json.dumps(v).encode()), st.binary(max_size=20)))
    version = draw(st.sampled_from([1, 1, 1, 0, 2, 65535]))
    kind = draw(st.sampled_from([1, 2, 3]))
    meta_len = draw(st.sampled_from([len(meta), len(meta) + 1, 0, 2**32 - 1]))
    body = entries + meta
    file_size = draw(st.sampled_from([32 + len(body), 32 + len(body) + 64, 0, 2**64 - 1]))
    header = bytearray(struct.pack("<8sHHIQII", fmt.FILE_MAGIC, version, kind, n, file_size, meta_len, 0) + body)
    hl = min(len(header), 32 + 32 * n + meta_len)
    struct.pack_into("<I", header, 28, zlib.crc32(bytes(header[:hl])) & 0xFFFFFFFF)
    tail = draw(st.binary(max_size=300))
    return bytes(header) + tail


@fuzz_settings(200)
@given(blob=crafted_headers(), kind=st.sampled_from([1, 2, 3]),
       shape=st.tuples(st.integers(0, 40), st.integers(1, 3)))
def test_crafted_framed_file_headers(blob, kind, shape, tmp_path_factory):
    tried("crafted headers")
    path = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "f"
    path.write_bytes(blob)
    try:
        mapped = open_framed_file(str(path), kind)
    except zenstore.ZenstoreError:
        return
    tried("crafted headers accepted")
    for name in list(mapped.header.sections)[:3]:
        try:
            mapped.array(name, "<u8", shape)
        except zenstore.ZenstoreError:
            pass


@pytest.fixture(scope="module")
def pristine_segment(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzseg") / "s"
    _make(root, "l2")
    return root


f16_bits = st.integers(0, 0xFFFF).map(lambda b: np.array([b], np.uint16).view(np.float16)[0])


@fuzz_settings(60)
@given(data=st.data())
def test_hostile_segment_with_a_consistent_catalog(pristine_segment, data, tmp_path_factory):
    """A segment file with valid framing and checksums, and a catalog updated to match it
    (size, header crc32), but random contents: group offsets, scales, aux terms (any fp16
    bit pattern, NaN and inf included), header metadata. Readers refuse it or answer with
    finite scores; nothing else."""
    tried("hostile segments")
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "s"
    shutil.copytree(pristine_segment, root)
    rel = "segments/seg-00000001.zseg"
    m = open_framed_file(str(root / rel), fmt.FILE_KIND_SEGMENT)
    meta = dict(m.header.meta)
    rows = meta["rows"]
    groups = np.array(m.array("groups", "<u8", (meta["n_groups"] + 1,)))
    codes = np.array(m.array("codes", "<u8", (rows, DIM // 64)))
    scales = np.array(m.array("scales", "<f2", (rows, 1)))
    aux = np.array(m.array("aux", "<f2", (rows,)))
    what = data.draw(st.sets(st.sampled_from(["groups", "scales", "aux", "codes", "meta", "drop"]), min_size=1))
    if "groups" in what:
        groups = np.array(data.draw(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, rows + 2),
                                             min_size=len(groups), max_size=len(groups))), "<u8")
    if "scales" in what:
        i = data.draw(st.integers(0, rows - 1))
        scales[i, 0] = data.draw(f16_bits)
    if "aux" in what:
        i = data.draw(st.integers(0, rows - 1))
        aux[i] = data.draw(f16_bits)
    if "codes" in what:
        codes[data.draw(st.integers(0, rows - 1))] = data.draw(st.integers(0, 2**64 - 1))
    if "meta" in what:
        key = data.draw(st.sampled_from(sorted(meta)))
        meta[key] = data.draw(json_values)
    sections = [("groups", groups), ("codes", codes), ("scales", scales), ("aux", aux)]
    if "drop" in what:
        sections.pop(data.draw(st.integers(0, 3)))
    size, crc = write_framed_file(str(root / rel), fmt.FILE_KIND_SEGMENT, meta, sections)
    env = lmdb.open(str(root / "catalog.mdb"), subdir=False, max_dbs=8)
    with env.begin(write=True) as txn:
        db = env.open_db(b"meta", txn=txn)
        manifest = json.loads(txn.get(b"manifest", db=db))
        manifest["segments"][0].update(size=size, header_crc=crc)
        txn.put(b"manifest", json.dumps(manifest).encode(), db=db)
    env.close()
    assert isinstance(verify_store(root), list)
    try:
        with Store.open(root, readonly=True) as s:
            tried("hostile segments opened")
            hits = s.search(np.ones(DIM, np.float32), k=5, shortlist=N)
            assert all(math.isfinite(h.score) for h in hits)
            _, scores = s.search_batch(np.ones((2, DIM), np.float32), k=5, nprobe=2)
            assert np.isfinite(scores[~np.isnan(scores)]).all()
            for ids, vecs, _ in s.iter_records():
                assert np.isfinite(vecs).all()
    except zenstore.ZenstoreError:
        pass
    shutil.rmtree(root.parent)


@pytest.fixture(scope="module")
def pristine_refine_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzzref") / "s"
    _make(root, "cosine", refine="int8")
    return root


@fuzz_settings(60)
@given(data=st.data())
def test_hostile_refine_file_with_a_consistent_catalog(pristine_refine_store, data, tmp_path_factory):
    """A refine file with valid framing and checksums, and a catalog updated to match it,
    but random records (any byte, any bit pattern in a row's scale: NaN and inf too) or
    header metadata: readers refuse it or answer with finite scores and vectors."""
    tried("hostile refine files")
    root = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp())) / "s"
    shutil.copytree(pristine_refine_store, root)
    env = lmdb.open(str(root / "catalog.mdb"), subdir=False, max_dbs=8)
    with env.begin() as txn:
        manifest = json.loads(txn.get(b"manifest", db=env.open_db(b"meta", txn=txn)))
    env.close()
    seg = manifest["segments"][0]
    rel = seg["refine"]["file"]
    m = open_framed_file(str(root / rel), fmt.FILE_KIND_REFINE)
    meta = dict(m.header.meta)
    rows = np.array(m.array("rows", np.uint8, (seg["rows"], DIM + 4)))
    del m
    what = data.draw(st.sets(st.sampled_from(["bytes", "scale", "meta", "rows"]), min_size=1))
    if "bytes" in what:
        for _ in range(data.draw(st.integers(1, 8))):
            rows[data.draw(st.integers(0, rows.shape[0] - 1)), data.draw(st.integers(0, rows.shape[1] - 1))] = \
                data.draw(st.integers(0, 255))
    if "scale" in what:  # the row's float32 scale: any bit pattern
        i = data.draw(st.integers(0, rows.shape[0] - 1))
        rows[i, :4] = np.frombuffer(struct.pack("<I", data.draw(st.integers(0, 2**32 - 1))), np.uint8)
    if "meta" in what:
        key = data.draw(st.sampled_from(sorted(meta)))
        meta[key] = data.draw(json_values)
    if "rows" in what:  # too few or too many records
        rows = rows[: data.draw(st.integers(0, rows.shape[0]))] if data.draw(st.booleans()) else \
            np.concatenate([rows, rows[:1]])
    size, crc = write_framed_file(str(root / rel), fmt.FILE_KIND_REFINE, meta, [("rows", rows)],
                                  version=fmt.REFINE_FORMAT_VERSION)
    env = lmdb.open(str(root / "catalog.mdb"), subdir=False, max_dbs=8)
    with env.begin(write=True) as txn:
        db = env.open_db(b"meta", txn=txn)
        manifest = json.loads(txn.get(b"manifest", db=db))
        manifest["segments"][0]["refine"].update(size=size, header_crc=crc)
        txn.put(b"manifest", json.dumps(manifest).encode(), db=db)
    env.close()
    assert isinstance(verify_store(root), list)
    try:
        with Store.open(root, readonly=True) as s:
            tried("hostile refine files opened")
            q = np.ones(DIM, np.float32)
            hits = s.search(q, k=5, shortlist=N, refine_k=N)
            assert all(math.isfinite(h.score) for h in hits)
            _, scores = s.search_batch(np.ones((2, DIM), np.float32), k=5, nprobe=2)
            assert np.isfinite(scores[~np.isnan(scores)]).all()
            for ids, vecs, _ in s.iter_records():
                assert np.isfinite(vecs).all()
            ids = s.ids()[:3].tolist()
            assert all(np.isfinite(s.get(i).vector).all() for i in ids)
    except zenstore.ZenstoreError:
        pass
    shutil.rmtree(root.parent)


@fuzz_settings(150)
@given(value=json_values)
def test_json_records_from_anything(value):
    tried("json records")
    for parse in (fmt.Manifest.from_dict, fmt.StoreConfig.from_dict):
        try:
            parse(value)
        except zenstore.ZenstoreError:
            pass
    blob = fmt.compress(json.dumps(value).encode())
    try:
        assert isinstance(fmt.decode_payload(blob, "p"), dict)
    except zenstore.CorruptStore:
        assert not isinstance(value, dict)


@st.composite
def manifests(draw):
    """Structurally plausible manifests with random field values."""
    seg = st.fixed_dictionaries({
        "id": ints, "file": st.sampled_from(["segments/seg-00000001.zseg", "../x", None, 5]),
        "rows": ints, "deleted": ints, "size": ints, "header_crc": ints})
    base = st.none() | st.fixed_dictionaries({
        "file": st.sampled_from(["base-000001.zbase", "/etc/passwd", 1]), "n_base": ints, "size": ints,
        "header_crc": ints})
    m = draw(st.fixed_dictionaries({"generation": ints, "next_segment_id": ints,
                                    "id_type": st.sampled_from([None, "int", "str", "x", 1]),
                                    "base": base, "segments": st.lists(seg, max_size=3)}))
    if draw(st.booleans()):
        m[draw(st.sampled_from(["x-ext", "future", "segments"]))] = draw(json_values)
    return m


@fuzz_settings(200)
@given(m=manifests())
def test_manifest_parser(m):
    tried("manifests")
    try:
        out = fmt.Manifest.from_dict(m)
    except zenstore.ZenstoreError:
        return
    for s in out.segments:
        assert s.file == fmt.SEGMENT_FILE.format(s.id) and 0 <= s.deleted <= s.rows
    assert out.base is None or out.base.file == "base-000001.zbase"


@fuzz_settings(200)
@given(blob=st.one_of(st.binary(max_size=200),
                      st.binary(max_size=200).map(fmt.compress),
                      st.tuples(st.sampled_from([b"ZCOL"]), st.integers(0, 4), st.integers(0, 2),
                                st.integers(0, 2**64 - 1) | st.integers(0, 20), st.binary(max_size=160)).map(
                          lambda t: fmt.compress(t[0] + struct.pack("<BBHQ", t[1], t[2], 0, t[3]) + t[4]))))
def test_column_decoder(blob):
    tried("columns")
    try:
        col = fmt.decode_column(blob, "col")
    except zenstore.CorruptStore:
        return
    assert col.ndim == 1
