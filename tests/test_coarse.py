"""The projected coarse step (coarse.py, kernels/candidates.py) against the exact probe.

A base whose centred rows span at most ``rank`` directions is projected without loss, so
there the projected probe must equal the exact probe; on any base the probe must be the
exact top ``nprobe`` of its candidates, with exact ``q . c`` on them and NaN elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zenstore import Store, coarse
from zenstore import search as pipeline
from zenstore.codec import Codec
from zenstore.format import StoreConfig
from zenstore.kernels import dot_listed_f16
from zenstore.kernels import reference as ref
from zenstore.kernels.topk import top_mask
from zenstore.rotation import Rotation

settings.register_profile("coarse", max_examples=25, deadline=None)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), m=st.integers(1, 5), n=st.integers(1, 40),
       per=st.integers(1, 12), dim=st.sampled_from([64, 96, 960, 7680]), chunks=st.integers(1, 7))
def test_dot_listed_f16_matches_numpy(seed, m, n, per, dim, chunks):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, dim)).astype(np.float32)
    b = rng.standard_normal((n, dim)).astype(np.float16)
    b[0, :3] = [0.0, 6e-8, -65504]  # zero, subnormal, extreme
    idx = rng.integers(0, n, size=(m, per)).astype(np.int64)  # duplicates allowed
    out = np.empty((m, per), np.float32)
    dot_listed_f16(a, b.view(np.uint16), idx, out, chunks)
    np.testing.assert_allclose(out, ref.dot_listed_ref(a, b, idx), rtol=1e-5, atol=1e-3 * np.sqrt(dim))


def _codec(base: np.ndarray, metric: str) -> Codec:
    dim = base.shape[1]
    return Codec(StoreConfig(dim=dim, metric=metric, n_base=base.shape[0]), base.astype(np.float16),
                 Rotation.random(dim, seed=0))


def _exact_mask(codec: Codec, q: np.ndarray, nprobe: int) -> np.ndarray:
    qoff = codec.base_dots(q)
    close = 2 * qoff - codec.base_sqnorm[None, :] if codec.config.metric in ("l2", "cosine") else qoff
    mask = np.empty(qoff.shape, np.bool_)
    top_mask(np.ascontiguousarray(close, np.float32), nprobe, mask)
    return mask


def test_projection_is_orthonormal_and_spans_a_low_rank_base():
    rng = np.random.default_rng(1)
    dirs = rng.standard_normal((20, 512))
    base = (rng.standard_normal((300, 20)) @ dirs + rng.standard_normal(512)).astype(np.float32)
    proj = coarse.derive_projection(base, 32)
    assert proj.rank <= 32 and proj.coords.shape == (300, proj.rank)
    np.testing.assert_allclose(proj.basis @ proj.basis.T, np.eye(proj.rank), atol=1e-4)
    centred = base - base.mean(axis=0)
    np.testing.assert_allclose(proj.coords @ proj.basis, centred, atol=1e-3 * np.abs(centred).max())


def test_a_projection_that_keeps_too_little_of_the_base_is_not_used():
    """A base of full rank (independent random rows) loses most of its energy at rank
    dim / 8: the search keeps the exact coarse step there; a low-rank base is projected."""
    rng = np.random.default_rng(4)
    dim, n_base = 2048, 1024
    flat = _codec(rng.standard_normal((n_base, dim)).astype(np.float32), "ip")
    assert flat.projection().captured < coarse.MIN_CAPTURED and not flat.projection().faithful
    dirs = rng.standard_normal((40, dim))
    low = _codec((rng.standard_normal((n_base, 40)) @ dirs / np.sqrt(40)).astype(np.float32), "ip")
    assert low.projection().captured > 0.999 and low.projection().faithful
    q = rng.standard_normal((20, dim)).astype(np.float32)
    nprobe = 4
    assert coarse.worthwhile(n_base, dim, nprobe)
    assert pipeline.prepare_queries(flat, q, nprobe).probe is None  # exact q . c on every row
    assert pipeline.prepare_queries(low, q, nprobe).probe is not None
    forced = pipeline.prepare_queries(flat, q, nprobe, projected=True)  # asked for: still used
    assert forced.probe is not None


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("nq", [1, 40])  # the few-query kernels and the BLAS path
def test_projected_probe_equals_exact_on_a_low_rank_base(metric, nq):
    rng = np.random.default_rng(2)
    dim, n_base = 256, 400
    dirs = rng.standard_normal((12, dim))
    base = rng.standard_normal((n_base, 12)) @ dirs + 3 * rng.standard_normal(dim)
    codec = _codec(base / np.sqrt(12), metric)
    assert codec.projection().rank >= 12  # rank min(384, 256 / 8) = 32 covers the 12 directions
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    for nprobe in (1, 3, 8):
        qoff, mask = codec.probe(q, nprobe)
        np.testing.assert_array_equal(mask, _exact_mask(codec, q, nprobe))
        exact = codec.base_dots(q)
        known = ~np.isnan(qoff)
        assert known.sum(axis=1).min() == coarse.candidate_count(nprobe, n_base)
        assert known[mask].all()
        np.testing.assert_allclose(qoff[known], exact[known], rtol=1e-4, atol=1e-3)


def test_probe_is_the_exact_best_of_its_candidates_on_any_base():
    rng = np.random.default_rng(3)
    codec = _codec(rng.standard_normal((500, 128)).astype(np.float32), "cosine")  # full rank: lossy
    q = rng.standard_normal((30, 128)).astype(np.float32)
    qoff, mask = codec.probe(q, 4)
    close = 2 * qoff - codec.base_sqnorm[None, :]  # cosine probes in L2 (Codec.probe_by_l2)
    assert codec.probe_by_l2
    for i in range(len(q)):
        cand = np.flatnonzero(~np.isnan(qoff[i]))
        best = cand[np.lexsort((cand, -close[i, cand].astype(np.float32)))[:4]]
        assert set(np.flatnonzero(mask[i])) == set(best.tolist())


def test_worthwhile_needs_a_large_base_and_a_small_nprobe():
    assert coarse.worthwhile(1024, 7680, 8)
    assert not coarse.worthwhile(1024, 7680, 64)  # candidates cost more than half the exact product
    assert not coarse.worthwhile(215, 384, 2)  # small: the exact product's fixed cost is lower
    assert not coarse.worthwhile(1024, 7680, 1024)


def test_probe_mask_refuses_another_nprobe_than_prepared():
    rng = np.random.default_rng(4)
    codec = _codec(rng.standard_normal((64, 64)).astype(np.float32), "ip")
    prep = pipeline.prepare_queries(codec, rng.standard_normal((3, 64)).astype(np.float32), 4, projected=True)
    assert prep.probe is not None and np.isnan(prep.qoff).any()
    assert pipeline.probe_mask(prep, codec, 4) is prep.probe
    with pytest.raises(ValueError, match="nprobe=4"):
        pipeline.probe_mask(prep, codec, 8)
    full = pipeline.prepare_queries(codec, rng.standard_normal((3, 64)).astype(np.float32))
    assert full.probe is None and not np.isnan(full.qoff).any()


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_store_search_with_the_projected_probe_matches_the_exact_probe(tmp_path, monkeypatch, metric):
    """Through the public call: a store whose base is low rank returns the same hits with
    the projected probe (forced on) as with the exact one."""
    rng = np.random.default_rng(5)
    dim = 128
    centres = rng.standard_normal((6, dim)) * 2
    docs = (centres[rng.integers(0, 6, 3000)] + 0.3 * rng.standard_normal((3000, dim))).astype(np.float32)
    queries = docs[:50] + 0.05 * rng.standard_normal((50, dim)).astype(np.float32)
    with Store.create(tmp_path / "s.zen", dim=dim, metric=metric, n_base=64, min_rows_per_base=8) as store:
        store.add(np.arange(len(docs)), docs)
        monkeypatch.setattr(coarse, "MIN_EXACT_WORK", 1 << 40)  # exact probe
        want, want_scores = store.search_batch(queries, k=10, nprobe=6)
        one = store.search(queries[0], k=10, nprobe=6)
        monkeypatch.setattr(coarse, "MIN_EXACT_WORK", 0)
        monkeypatch.setattr(coarse, "WORTHWHILE", float("inf"))  # projected probe
        got, got_scores = store.search_batch(queries, k=10, nprobe=6)
        assert store.snapshot().codec._projection is not None  # the projected path really ran
        same = np.mean([set(a) == set(b) for a, b in zip(got.tolist(), want.tolist())])
        assert same >= 0.9, same
        assert [h.id for h in store.search(queries[0], k=10, nprobe=6)] == [h.id for h in one]
        full_a, _ = store.search_batch(queries, k=10, nprobe="all")  # a full scan is unchanged
        monkeypatch.setattr(coarse, "MIN_EXACT_WORK", 1 << 40)
        full_b, _ = store.search_batch(queries, k=10, nprobe="all")
        np.testing.assert_array_equal(full_a, full_b)
