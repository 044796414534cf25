"""Any dimension >= 1: vectors are zero-padded to a multiple of 64 before the rotation.

Padding must not change a score (a 6-d store scores exactly like a 64-d store holding the
same vectors padded by hand, same seed), dims that are multiples of 64 keep the version-1
bytes, and other dims are written as format version 2, which an older reader refuses by
name (docs/format.md, "Versioning").
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

import zenstore
from zenstore import Store
from zenstore import format as fmt

N = 300


def _pad(x: np.ndarray, width: int) -> np.ndarray:
    out = np.zeros((*x.shape[:-1], width), dtype=np.float32)
    out[..., : x.shape[-1]] = x
    return out


def _vectors(dim: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((8, dim)).astype(np.float32)
    x = centers[rng.integers(0, 8, N)] + 0.5 * rng.standard_normal((N, dim)).astype(np.float32)
    q = x[:5] + 0.3 * rng.standard_normal((5, dim)).astype(np.float32)
    return x, q


def _header_version(path) -> int:
    with open(path, "rb") as f:
        return struct.unpack_from("<H", f.read(10), 8)[0]


@pytest.mark.parametrize("dim", [6, 300, 1000])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_padding_changes_no_score(tmp_path, dim, metric):
    width = fmt.coded_dim(dim)
    x, q = _vectors(dim)
    with Store.create(tmp_path / "odd", dim=dim, metric=metric, n_base=8, seed=5) as odd, \
            Store.create(tmp_path / "pad", dim=width, metric=metric, n_base=8, seed=5) as pad:
        odd.add(range(N), x)
        pad.add(range(N), _pad(x, width))
        ids_o, sc_o = odd.search_batch(q, k=10, shortlist=N)
        ids_p, sc_p = pad.search_batch(_pad(q, width), k=10, shortlist=N)
        np.testing.assert_array_equal(ids_o, ids_p)
        np.testing.assert_array_equal(sc_o, sc_p)
        hits_o = odd.rerank(q[0], ids=list(range(0, N, 7)), top_n=20)
        hits_p = pad.rerank(_pad(q[0], width), ids=list(range(0, N, 7)), top_n=20)
        assert [(h.id, h.score) for h in hits_o] == [(h.id, h.score) for h in hits_p]
        rec = odd.get(17)
        assert rec.vector.shape == (dim,)
        np.testing.assert_allclose(rec.vector, pad.get(17).vector[:dim], rtol=0, atol=1e-6)


@pytest.mark.parametrize("dim", [6, 300, 1000])
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_scores_match_exact_float_within_codec_error(tmp_path, dim, metric):
    """At full shortlist each score is the exact score of the dequantized vector, so it is
    within ||q|| * ||x - x_hat|| (Cauchy-Schwarz) of the exact float score."""
    x, q = _vectors(dim, seed=1)
    with Store.create(tmp_path / "s", dim=dim, metric=metric, n_base=8, seed=2) as store:
        store.add(range(N), x)
        recon = np.stack([store.get(i).vector for i in range(N)])
        for qi in q:
            hits = store.search(qi, k=N, shortlist=N, with_payload=False)
            assert len(hits) == N
            ids = np.array([h.id for h in hits])
            got = np.array([h.score for h in hits])
            if metric == "cosine":
                qn = qi / np.linalg.norm(qi)
                xn = x / np.linalg.norm(x, axis=1, keepdims=True)
                exact, deq = xn[ids] @ qn, recon[ids] @ qn
                err = np.linalg.norm(xn[ids] - recon[ids], axis=1)
            elif metric == "ip":
                exact, deq = x[ids] @ qi, recon[ids] @ qi
                err = np.linalg.norm(qi) * np.linalg.norm(x[ids] - recon[ids], axis=1)
            else:  # l2 scores estimate ||q - x||^2 with the true norm of x (docs/design.md)
                exact = ((x[ids] - qi) ** 2).sum(axis=1)
                err = 2 * np.linalg.norm(qi) * np.linalg.norm(x[ids] - recon[ids], axis=1) \
                    + np.abs((x[ids] ** 2).sum(axis=1) - (recon[ids] ** 2).sum(axis=1))
                deq = None
            scale = np.abs(exact).max()
            assert np.all(np.abs(got - exact) <= err + 1e-3 * scale + 1e-4)
            if deq is not None:  # the score IS the dequantized vector's score
                np.testing.assert_allclose(got, deq, rtol=1e-4, atol=1e-4 * scale)
            order = np.argsort(-got if metric != "l2" else got, kind="stable")
            assert np.array_equal(order, np.arange(N)), "hits come best first"
        if dim >= 300:  # with hundreds of dims the 1-bit code ranks like the floats
            exact_top = set(np.argsort(-(x @ q[0]) if metric == "ip" else
                                       ((x - q[0]) ** 2).sum(1) if metric == "l2" else
                                       -((x / np.linalg.norm(x, axis=1, keepdims=True)) @ q[0]))[:10])
            found = {h.id for h in store.search(q[0], k=10, shortlist=N)}
            assert len(found & exact_top) >= 6


def test_format_versions(tmp_path, monkeypatch):
    x64, _ = _vectors(64)
    x6, _ = _vectors(6)
    with Store.create(tmp_path / "v1", dim=64, n_base=4) as v1:
        v1.add(range(N), x64)
        assert v1.stats()["format_version"] == 1
        seg1 = v1.snapshot().manifest.segments[0].file
    with Store.create(tmp_path / "v2", dim=6, n_base=4) as v2:
        v2.add(range(N), x6)
        stats = v2.stats()
        assert stats["format_version"] == 2 and stats["dim"] == 6
        assert stats["bytes_per_vector"] == 8 + 2 + 2  # one code word + scale + aux
        snap = v2.snapshot()
        seg2, base2 = snap.manifest.segments[0].file, snap.manifest.base.file
    assert _header_version(tmp_path / "v1" / seg1) == 1
    assert _header_version(tmp_path / "v2" / seg2) == 2
    assert _header_version(tmp_path / "v2" / base2) == 1  # the coded space is 64-d: v1 bytes
    with Store.open(tmp_path / "v2", readonly=True) as again:
        assert again.get(3).vector.shape == (6,)
    # a reader of version 1 refuses the store by its version, not as a corrupt store
    monkeypatch.setattr(fmt, "FORMAT_VERSION", 1)
    monkeypatch.setattr(fmt, "FILE_FORMAT_VERSION", 1)  # version 1 had one number for both
    with pytest.raises(zenstore.FormatVersionError, match="format version 2.*up to version 1"):
        Store.open(tmp_path / "v2", readonly=True)
    with pytest.raises(zenstore.FormatVersionError, match="version 2"):
        from zenstore.files import open_framed_file
        open_framed_file(str(tmp_path / "v2" / seg2), fmt.FILE_KIND_SEGMENT)
    with Store.open(tmp_path / "v1", readonly=True) as old:
        assert len(old) == N


def test_version_1_record_with_odd_dim_is_corrupt(tmp_path):
    import json
    import os

    import lmdb

    x6, _ = _vectors(6)
    with Store.create(tmp_path / "s", dim=6, n_base=4) as store:
        store.add(range(N), x6)
    env = lmdb.open(os.path.join(tmp_path / "s", "catalog.mdb"), subdir=False, max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(b"format", json.dumps({"magic": "zenstore", "format_version": 1}).encode(),
                db=env.open_db(b"meta", txn=txn))
    env.close()
    with pytest.raises(zenstore.CorruptStore, match="needs version 2"):
        Store.open(tmp_path / "s", readonly=True)


@pytest.mark.parametrize("dim", [1, 63, 65])
def test_tiny_and_boundary_dims(tmp_path, dim):
    x, q = _vectors(dim, seed=3)
    with Store.create(tmp_path / "s", dim=dim, metric="ip", n_base=4) as store:
        store.add(range(N), x)
        assert store.search(q[0], k=3)[0].score == pytest.approx(
            float(store.get(store.search(q[0], k=3)[0].id).vector @ q[0]), rel=1e-4, abs=1e-4)
        with pytest.raises(zenstore.DimensionMismatch, match=f"dimension {dim + 1}, the store has {dim}"):
            store.search(np.ones(dim + 1, np.float32))
        with pytest.raises(zenstore.DimensionMismatch):  # the padded width is not accepted either
            store.add([N + 1], np.ones((1, fmt.coded_dim(dim + 1)), np.float32))
        store.compact()
        assert len(store) == N


def test_adopted_base_of_odd_dim(tmp_path):
    x, q = _vectors(300, seed=4)
    with Store.create(tmp_path / "a", dim=300, n_base=4) as a, Store.create(tmp_path / "b", dim=300) as b:
        a.add(range(N), x)
        b.train(base=a.base())
        b.add(range(N), x)
        assert [h.score for h in a.search(q[0], k=5)] == [h.score for h in b.search(q[0], k=5)]
