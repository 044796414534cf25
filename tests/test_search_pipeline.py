"""search.py's pipeline functions on in-memory segments, against an exhaustive numpy scorer.

Segments are built the way a store builds them -- codec encode, (group, id) order,
``write_segment`` into a temporary directory, ``load_segment`` -- with no catalog at all.
The reference scores every live row's dequantized vector in float64:

    value = ip_w * <q, x_hat> + term        (ip_w = 2 and term = aux * ref for l2; see codec.py)

With a shortlist covering every row the pipeline's top k must be the exhaustive top k
(ties by tag); with ``nprobe`` only rows of the probed base rows may come back; deleted
rows never do.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zenstore import search as pipeline
from zenstore.codec import Codec
from zenstore.format import StoreConfig
from zenstore.kernels import reference as ref
from zenstore.rotation import Rotation
from zenstore.snapshot import make_tags
from zenstore.segment import load_segment, order_rows, write_segment

from .conftest import scale, slow_run

METRICS = ["cosine", "ip", "l2"]
DIMS = [64, 128, 192]

pipeline_settings = settings(max_examples=scale(30, 300), deadline=None, database=None,
                             derandomize=not slow_run(), suppress_health_check=[HealthCheck.too_slow])


@dataclass(frozen=True)
class Fixture:
    codec: Codec
    segments: list  # of zenstore.segment.Segment
    deleted: list  # per segment: the rows deleted (kept here, not read back from the segment)
    queries: np.ndarray  # (nq, dim) float32, caller's space


@dataclass(frozen=True)
class Exhaustive:
    """Every stored row (segment ordinal, row) with its float64 ranking value per query."""

    tags: np.ndarray  # (n,) int64
    groups: np.ndarray  # (n,) int64 base row
    live: np.ndarray  # (n,) bool
    values: np.ndarray  # (nq, n) float64
    scores: np.ndarray  # (nq, n) float64, user-facing (l2: squared distance)


def build(tmp: str, *, metric: str, dim: int, n_base: int, seg_rows: list[int], dead_frac: float,
          duplicates: bool, rotate: bool, nq: int, seed: int) -> Fixture:
    rng = np.random.default_rng(seed)
    config = StoreConfig(dim=dim, metric=metric, n_base=n_base, rotation="hadamard" if rotate else "none")
    rotation = Rotation.random(dim, seed) if rotate else Rotation.identity(dim)
    n = sum(seg_rows)
    centers = rng.standard_normal((max(1, n_base), dim))
    x = (centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, dim))).astype(np.float32)
    if duplicates and n > 1:  # identical rows (also across segments) tie exactly: broken by tag
        x[1::3] = x[0 : len(x[1::3])]
    # base rows: some of the prepared vectors, as a store's k-means would put them among the data
    prepared = Codec(config, np.zeros((1, dim), np.float16), rotation).prepare(x)
    base = prepared[rng.choice(n, min(n_base, n), replace=False)].astype(np.float16)
    codec = Codec(config, base, rotation)
    os.makedirs(os.path.join(tmp, "segments"))
    ids = rng.permutation(10 * n)[:n].astype(np.int64)  # distinct, not in row order
    segments, deleted, start = [], [], 0
    for seg_id, rows in enumerate(seg_rows, start=1):
        part, part_ids = x[start : start + rows], ids[start : start + rows]
        start += rows
        batch = codec.encode(part)
        order = order_rows(batch.groups, part_ids)
        rec = write_segment(tmp, seg_id, config, codec.n_base, batch.take(order))
        dead = np.flatnonzero(rng.random(rows) < dead_frac).astype(np.int64)
        segments.append(load_segment(tmp, rec, config, codec, part_ids[order], dead))
        deleted.append(dead)
    queries = x[rng.integers(0, n, nq)] + 0.3 * rng.standard_normal((nq, dim)).astype(np.float32)
    return Fixture(codec, segments, deleted, queries.astype(np.float32))


def exhaustive(fx: Fixture, prep: pipeline.PreparedQueries) -> Exhaustive:
    """The reference: dequantize every row (codec.dequantize_rotated) and score it in float64."""
    codec, metric = fx.codec, fx.codec.config.metric
    tags, groups, live, xhat, term = [], [], [], [], []
    for ordinal, seg in enumerate(fx.segments):
        rows = np.arange(seg.rows, dtype=np.int64)
        tags.append(make_tags(ordinal, rows))
        groups.append(seg.groups)
        alive = np.ones(seg.rows, bool)
        alive[fx.deleted[ordinal]] = False
        live.append(alive)
        xhat.append(codec.dequantize_rotated(seg.groups, seg.codes, seg.scales16, seg.aux16).astype(np.float64))
        if metric == "l2":  # aux is the norm term as a ratio of max(||c||^2, ||s b||^2) (codec.py)
            s = seg.scales16.astype(np.float64)
            sb_sq = (s * s).sum(axis=1) * codec.block_dims
            term.append(seg.aux16.astype(np.float64) * np.maximum(codec.base_sqnorm[seg.groups], sb_sq))
        else:
            term.append(np.zeros(seg.rows))
    q = prep.q.astype(np.float64)
    ip_w = 2.0 if metric == "l2" else 1.0
    values = ip_w * (q @ np.concatenate(xhat).T) + np.concatenate(term)[None, :]
    scores = np.maximum((q * q).sum(1)[:, None] - values, 0.0) if metric == "l2" else values
    return Exhaustive(np.concatenate(tags), np.concatenate(groups), np.concatenate(live), values, scores)


def tolerance(fx: Fixture, ex: Exhaustive) -> float:
    """float32 kernels vs float64 numpy: a few ulps of the largest terms summed."""
    return 1e-5 * (1.0 + float(np.abs(ex.values).max()))


def assert_exhaustive_topk(got_tags, got_scores, ex: Exhaustive, j: int, allowed: np.ndarray, k: int,
                           tol: float) -> None:
    """Query ``j``'s result against the exhaustive ranking of the ``allowed`` rows."""
    cand = np.flatnonzero(allowed)
    order = cand[np.lexsort((ex.tags[cand], -ex.values[j, cand]))]  # value desc, then tag asc
    want_tags, want_values = ex.tags[order], ex.values[j, order]
    n = min(k, len(order))
    assert (got_tags[n:] == -1).all() and np.isnan(got_scores[n:]).all(), "padding after the last result"
    got = got_tags[:n]
    pos = {int(t): i for i, t in enumerate(ex.tags)}
    assert all(int(t) in pos for t in got), "a tag that names no row"
    idx = np.array([pos[int(t)] for t in got], dtype=np.int64)
    assert ex.live[idx].all(), "a deleted row came back"
    assert allowed[idx].all(), "a row outside the probed base rows came back"
    assert len(set(got.tolist())) == n, "a row came back twice"
    # the k best values, in order; each reported score is that row's exhaustive score
    np.testing.assert_allclose(ex.values[j, idx], want_values[:n], rtol=0, atol=tol)
    np.testing.assert_allclose(got_scores[:n], ex.scores[j, idx], rtol=0, atol=2 * tol)
    # where no near tie makes the order ambiguous, the very same rows
    gaps = np.abs(np.diff(want_values))
    for i in range(n):
        below = gaps[i] if i < len(gaps) else np.inf
        above = gaps[i - 1] if i > 0 else np.inf
        if min(below, above) > 2 * tol:
            assert got[i] == want_tags[i], f"position {i}"
    # rows with exactly equal values (identical encodings) come in tag order
    for a in range(n):
        for b in range(a + 1, n):
            if ex.values[j, idx[a]] == ex.values[j, idx[b]]:
                assert got[a] < got[b], "an exact tie not broken by the smaller tag"


shapes = st.fixed_dictionaries({
    "metric": st.sampled_from(METRICS),
    "dim": st.sampled_from(DIMS),
    "n_base": st.integers(1, 6),
    "seg_rows": st.lists(st.integers(1, 40), min_size=1, max_size=3),
    "dead_frac": st.sampled_from([0.0, 0.2, 0.6]),
    "duplicates": st.booleans(),
    "rotate": st.booleans(),
    "nq": st.integers(1, 5),
    "seed": st.integers(0, 2**31),
})


def _built(shape):
    tmp = tempfile.TemporaryDirectory()
    return tmp, build(tmp.name, **shape)


@pipeline_settings
@given(shape=shapes, k=st.integers(1, 12))
def test_full_shortlist_is_the_exhaustive_top_k(shape, k):
    tmp, fx = _built(shape)
    with tmp:
        prep = pipeline.prepare_queries(fx.codec, fx.queries)
        ex = exhaustive(fx, prep)
        rows = sum(s.rows for s in fx.segments)
        tags, scores = pipeline.search_prepared(fx.segments, fx.codec, prep, k, shortlist=rows, nprobe=None)
        assert tags.shape == scores.shape == (len(fx.queries), k)
        for j in range(len(fx.queries)):
            assert_exhaustive_topk(tags[j], scores[j], ex, j, ex.live, k, tolerance(fx, ex))


@pipeline_settings
@given(shape=shapes, k=st.integers(1, 12), nprobe=st.integers(1, 6))
def test_nprobe_results_come_only_from_probed_base_rows(shape, k, nprobe):
    tmp, fx = _built(shape)
    with tmp:
        prep = pipeline.prepare_queries(fx.codec, fx.queries)
        ex = exhaustive(fx, prep)
        probe = pipeline.probe_mask(prep, fx.codec, nprobe)
        g = fx.codec.n_base
        assert probe.shape == (len(fx.queries), g) and (probe.sum(1) == min(nprobe, g)).all()
        # the probed base rows are the nprobe nearest (l2, cosine: smallest ||q - c||^2; ip: largest q.c)
        c = fx.codec.base.astype(np.float64)
        q = prep.q.astype(np.float64)
        closeness = 2 * q @ c.T - (c * c).sum(1) if fx.codec.probe_by_l2 else q @ c.T
        tol = tolerance(fx, ex)
        for j in range(len(q)):
            if not probe[j].all():
                assert closeness[j, probe[j]].min() >= closeness[j, ~probe[j]].max() - tol
        rows = sum(s.rows for s in fx.segments)
        tags, scores = pipeline.search_prepared(fx.segments, fx.codec, prep, k, shortlist=rows, nprobe=nprobe)
        for j in range(len(q)):
            allowed = ex.live & probe[j][ex.groups]
            assert_exhaustive_topk(tags[j], scores[j], ex, j, allowed, k, tol)


@pipeline_settings
@given(shape=shapes, shortlist=st.integers(1, 30), nprobe=st.sampled_from([None, 1, 2]))
def test_coarse_pass_keeps_the_best_proxies_of_the_probed_live_rows(shape, shortlist, nprobe):
    tmp, fx = _built(shape)
    with tmp:
        prep = pipeline.prepare_queries(fx.codec, fx.queries)
        ex = exhaustive(fx, prep)
        probe = pipeline.probe_mask(prep, fx.codec, nprobe)
        metric = fx.codec.config.metric
        sl = pipeline.coarse_pass(fx.segments, prep, probe, shortlist, metric)
        ip_w = float(pipeline.ip_weight(metric))
        for j in range(len(fx.queries)):
            proxy = np.concatenate([ref.proxy_ref(s.codes, s.scales, s.rowlam, s.rowterm, s.group_offsets,
                                                  prep.qcodes[j], prep.alpha[j], prep.qoff[j], ip_w)
                                    for s in fx.segments])
            allowed = ex.live & probe[j][ex.groups]
            kept = sl.tags[j, : sl.size[j]]
            assert sl.size[j] == min(shortlist, allowed.sum())
            pos = {int(t): i for i, t in enumerate(ex.tags)}
            idx = np.array([pos[int(t)] for t in kept], dtype=np.int64)
            assert len(set(kept.tolist())) == len(kept) and allowed[idx].all()
            np.testing.assert_allclose(sl.vals[j, : sl.size[j]], proxy[idx], rtol=1e-4, atol=1e-4)
            dropped = np.setdiff1d(np.flatnonzero(allowed), idx)
            if len(dropped) and len(idx):
                scale_ = 1.0 + np.abs(proxy).max()
                assert proxy[idx].min() >= proxy[dropped].max() - 1e-4 * scale_, "a better proxy was dropped"


@pipeline_settings
@given(shape=shapes, data=st.data())
def test_exact_scores_of_any_pairs_match_the_exhaustive_values(shape, data):
    tmp, fx = _built(shape)
    with tmp:
        prep = pipeline.prepare_queries(fx.codec, fx.queries)
        ex = exhaustive(fx, prep)
        n_pairs = data.draw(st.integers(0, 60))
        rnd = np.random.default_rng(data.draw(st.integers(0, 2**31)))
        qidx = rnd.integers(0, len(fx.queries), n_pairs)  # unsorted: exact_scores sorts and restores
        which = rnd.integers(0, len(ex.tags), n_pairs)
        got = pipeline.exact_scores(fx.segments, prep, qidx, ex.tags[which], fx.codec.config.metric)
        assert got.shape == (n_pairs,) and got.dtype == np.float32
        np.testing.assert_allclose(got, ex.values[qidx, which], rtol=0, atol=tolerance(fx, ex))


@pipeline_settings
@given(shape=shapes)
def test_prepare_queries_derives_what_the_kernels_need(shape):
    tmp, fx = _built(shape)
    with tmp:
        prep = pipeline.prepare_queries(fx.codec, fx.queries)
        codec, nb = fx.codec, fx.codec.config.scale_blocks
        x = fx.queries.astype(np.float64)
        if codec.config.metric == "cosine":
            x /= np.linalg.norm(x, axis=1, keepdims=True)
        q = prep.q.astype(np.float64)
        # an exact rotation: inner products and lengths of the (normalised) queries kept
        np.testing.assert_allclose(q @ q.T, x @ x.T, rtol=1e-4, atol=1e-4 * (1 + np.abs(x @ x.T).max()))
        np.testing.assert_allclose(prep.q, codec.prepare(fx.queries), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(prep.qcodes, ref.pack_signs_ref(prep.q))
        blocks = q.reshape(len(q), nb, -1)
        np.testing.assert_allclose(prep.alpha, np.abs(blocks).mean(axis=2), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(prep.qsums, blocks.sum(axis=2), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(prep.qsq, (q * q).sum(1), rtol=1e-5)
        np.testing.assert_allclose(prep.qoff, q @ codec.base.astype(np.float64).T, rtol=1e-4,
                                   atol=1e-4 * (1 + np.abs(prep.qoff).max()))


@pytest.mark.slow
@pytest.mark.parametrize("metric", METRICS)
def test_full_shortlist_top_k_at_7680_dims(metric):
    """The same property at the production dimension and more rows (slow: --runslow)."""
    with tempfile.TemporaryDirectory() as tmp:
        fx = build(tmp, metric=metric, dim=7680, n_base=16, seg_rows=[700, 500, 300], dead_frac=0.1,
                   duplicates=True, rotate=True, nq=20, seed=7)
        prep = pipeline.prepare_queries(fx.codec, fx.queries)
        ex = exhaustive(fx, prep)
        tags, scores = pipeline.search_prepared(fx.segments, fx.codec, prep, 10, shortlist=1500, nprobe=None)
        for j in range(len(fx.queries)):
            assert_exhaustive_topk(tags[j], scores[j], ex, j, ex.live, 10, tolerance(fx, ex))
