"""The restricted coarse pass (``scan_listed_by_group``: only listed rows of the probed
groups) against its numpy twin, across word boundaries and any split of the work."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from zenstore.kernels import heap_push, heap_sorted, pack_signs, scan_listed_by_group
from zenstore.kernels import reference as ref

from .test_kernels import _batch_queries, _segment


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 300), nq=st.integers(1, 9),
       shape=st.sampled_from([(64, 1), (192, 3), (960, 1), (7680, 2)]),
       n_groups=st.integers(1, 6), L=st.integers(1, 40), ip_w=st.sampled_from([1.0, 2.0]),
       n_chunks=st.integers(1, 5), fraction=st.sampled_from([0.0, 0.05, 0.3, 1.0]))
def test_scan_listed_matches_reference(seed, n, nq, shape, n_groups, L, ip_w, n_chunks, fraction):
    dim, blocks = shape
    codes, offsets, scales, rowlam, rowterm = _segment(seed, n, dim, blocks, n_groups)
    rng = np.random.default_rng(seed + 9)
    qcodes, alpha, qoff, probe = _batch_queries(rng, nq, dim, blocks, n_groups, 0.6)
    listed = np.flatnonzero(rng.random(n) < fraction).astype(np.int64)
    list_offsets = np.searchsorted(listed, offsets).astype(np.int64)
    groups_t, queries_t = np.nonzero(probe.T)
    group_start = np.searchsorted(groups_t, np.arange(n_groups + 1))
    cuts = np.sort(rng.integers(0, n_groups + 1, n_chunks - 1))  # any split of the groups
    chunk_groups = np.concatenate(([0], cuts, [n_groups])).astype(np.int64)
    vals = np.empty((nq, L), np.float32)
    idx = np.empty((nq, L), np.int64)
    size = np.zeros(nq, np.int64)
    tag = np.int64(3 << 40)
    for i in range(nq):  # a candidate of an earlier segment competes with these rows
        size[i] = heap_push(vals[i], idx[i], 0, np.float32(0.5), np.int64(11))
    scan_listed_by_group(codes, scales, rowlam, rowterm, listed, list_offsets, queries_t.astype(np.int64),
                         group_start, chunk_groups, qcodes, alpha, qoff, np.float32(ip_w), tag, vals, idx, size)
    for i in range(nq):
        rows, proxies = ref.scan_listed_ref(codes, scales.astype(np.float64), rowlam, rowterm, offsets, listed,
                                            probe[i], qcodes[i], alpha[i].astype(np.float64),
                                            qoff[i].astype(np.float64), ip_w)
        values = np.concatenate(([0.5], proxies))
        members = np.concatenate(([11], tag + rows))
        order = np.lexsort((members, -values))[:L]
        got_v, got_i = heap_sorted(vals[i], idx[i], size[i])
        assert size[i] == min(L, len(values))
        assert set(got_i.tolist()) <= set(members.tolist())  # only listed rows of probed groups
        np.testing.assert_allclose(got_v, values[order], rtol=1e-5, atol=1e-4)
        ties = int(np.sum(np.isclose(values, values[order][-1], rtol=1e-5, atol=1e-4)))
        assert len(set(got_i.tolist()) ^ set(members[order].tolist())) <= 2 * ties


def test_scan_listed_of_nothing_leaves_the_heaps_alone():
    codes, offsets, scales, rowlam, rowterm = _segment(1, 50, 128, 1, 3)
    qcodes = pack_signs(np.ones((2, 128), np.float32))
    vals, idx, size = np.empty((2, 4), np.float32), np.empty((2, 4), np.int64), np.zeros(2, np.int64)
    listed = np.zeros(0, np.int64)
    scan_listed_by_group(codes, scales, rowlam, rowterm, listed, np.zeros(4, np.int64),
                         np.array([0, 1, 0, 1, 0, 1], np.int64), np.array([0, 2, 4, 6], np.int64),
                         np.array([0, 3], np.int64), qcodes, np.ones((2, 1), np.float32),
                         np.zeros((2, 3), np.float32), np.float32(1), np.int64(0), vals, idx, size)
    assert size.tolist() == [0, 0]


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31), nq=st.integers(1, 6), g=st.integers(1, 40), nprobe=st.integers(1, 45),
       k=st.integers(1, 30), ties=st.booleans(), sparse=st.floats(0, 1))
def test_probe_covering_matches_reference(seed, nq, g, nprobe, k, ties, sparse):
    from zenstore.kernels import probe_covering

    rng = np.random.default_rng(seed)
    closeness = (rng.integers(0, 3, (nq, g)) if ties else rng.standard_normal((nq, g))).astype(np.float32)
    rows = rng.integers(0, 12, g).astype(np.int64)
    matches = np.minimum(rows, np.where(rng.random(g) < sparse, 0, rng.integers(0, 9, g))).astype(np.int64)
    mask = np.empty((nq, g), dtype=bool)
    probe_covering(closeness, rows, matches, np.int64(nprobe), np.int64(k), mask)
    np.testing.assert_array_equal(mask, ref.probe_covering_ref(closeness, rows, matches, nprobe, k))
