"""Every kernel against its numpy twin, on random inputs across word boundaries."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zenstore.kernels import (
    build_nibble_luts,
    dot_rows_f16,
    hamming_distances,
    heap_push,
    heap_sorted,
    pack_signs,
    rescore,
    rescore_by_query,
    rescore_range,
    scan_batch_by_group,
    scan_batch_by_query_block,
    scan_query_parallel,
    scan_query_serial,
    topk_largest,
    unpack_signs,
)
from zenstore.kernels import reference as ref
from zenstore.kernels.topk import top_mask
from zenstore.rotation import Rotation

DIMS = [64, 128, 192, 960, 7680]
settings.register_profile("kernels", max_examples=25, deadline=None)
settings.load_profile("kernels")


def _data(seed, n, dim, kind):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    if kind == "zeros":
        x[: n // 2] = 0.0
    elif kind == "duplicates":
        x[1::2] = x[0::2][: len(x[1::2])]
    elif kind == "negated":
        x[1::2] = -x[0::2][: len(x[1::2])]
    return x


kinds = st.sampled_from(["random", "zeros", "duplicates", "negated"])


@given(seed=st.integers(0, 2**31), n=st.integers(1, 40), dim=st.sampled_from(DIMS), kind=kinds)
def test_pack_signs_matches_reference(seed, n, dim, kind):
    x = _data(seed, n, dim, kind)
    codes = pack_signs(x)
    assert codes.dtype == np.uint64 and codes.shape == (n, dim // 64)
    np.testing.assert_array_equal(codes, ref.pack_signs_ref(x))
    np.testing.assert_array_equal(unpack_signs(codes), ref.signs_ref(codes).astype(np.float32))


def test_pack_signs_bit_layout():
    x = -np.ones((1, 128), dtype=np.float32)
    x[0, [0, 5, 63, 64, 127]] = 1.0
    codes = pack_signs(x)
    assert codes[0, 0] == (1 << 0) | (1 << 5) | (1 << 63)
    assert codes[0, 1] == (1 << 0) | (1 << 63)


@given(seed=st.integers(0, 2**31), n=st.integers(1, 60), dim=st.sampled_from(DIMS), kind=kinds)
def test_hamming_matches_reference(seed, n, dim, kind):
    x = _data(seed, n + 1, dim, kind)
    codes = pack_signs(x[1:])
    q = pack_signs(x[:1])[0]
    out = np.empty(n, dtype=np.int64)
    hamming_distances(codes, q, out)
    np.testing.assert_array_equal(out, ref.hamming_ref(codes, q))


@given(seed=st.integers(0, 2**31), n=st.integers(0, 300), k=st.integers(1, 50),
       ties=st.booleans())
def test_topk_matches_reference(seed, n, k, ties):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(n).astype(np.float32)
    if ties:
        v = np.round(v, 1)
    np.testing.assert_array_equal(topk_largest(v, k), ref.topk_ref(v, k))


@given(seed=st.integers(0, 2**31), n=st.integers(1, 20), m=st.integers(1, 60), k=st.integers(1, 70))
def test_top_mask_matches_reference(seed, n, m, k):
    rng = np.random.default_rng(seed)
    v = np.round(rng.standard_normal((n, m)), 1).astype(np.float32)  # with ties
    mask = np.empty((n, m), dtype=bool)
    top_mask(v, k, mask)
    for i in range(n):
        assert set(np.flatnonzero(mask[i])) == set(ref.topk_ref(v[i], k).tolist())


def _segment(seed, n, dim, blocks, n_groups):
    rng = np.random.default_rng(seed)
    codes = pack_signs(rng.standard_normal((n, dim)).astype(np.float32))
    cuts = np.sort(rng.integers(0, n + 1, n_groups - 1))
    offsets = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    scales = (rng.random((n, blocks)) + 0.1).astype(np.float32)
    rowlam = (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    rowterm = rng.standard_normal(n).astype(np.float32)
    return codes, offsets, scales, rowlam, rowterm


def _check_topl(vals, idx, size, reference, candidates, L):
    """The kernel's shortlist must equal the reference top-L up to float32 rounding ties."""
    got_v, got_i = heap_sorted(vals, idx, size)
    assert size == min(L, len(candidates))
    assert len(set(got_i.tolist())) == size and set(got_i.tolist()) <= set(candidates.tolist())
    np.testing.assert_allclose(got_v, reference[got_i], rtol=1e-4, atol=1e-3)
    if size < len(candidates):
        outside = np.setdiff1d(candidates, got_i)
        assert reference[outside].max() <= reference[got_i].min() + 1e-3


ip_weights = st.sampled_from([1.0, 2.0])


@given(seed=st.integers(0, 2**31), n=st.integers(1, 400),
       shape=st.sampled_from([(64, 1), (192, 3), (960, 1), (960, 5), (7680, 2)]),
       n_groups=st.integers(1, 6), L=st.integers(1, 64),
       ip_w=ip_weights, with_dead=st.booleans(), chunks=st.integers(1, 5))
def test_scan_query_matches_reference(seed, n, shape, n_groups, L, ip_w, with_dead, chunks):
    dim, blocks = shape
    codes, offsets, scales, rowlam, rowterm = _segment(seed, n, dim, blocks, n_groups)
    rng = np.random.default_rng(seed + 1)
    q = rng.standard_normal(dim).astype(np.float32)
    qcodes = pack_signs(q[None])
    alpha = rng.random((1, blocks)).astype(np.float32)
    qoff = rng.standard_normal((1, n_groups)).astype(np.float32)
    groups = np.flatnonzero(rng.random(n_groups) < 0.7).astype(np.int64)
    dead = (rng.random(n) < 0.2).astype(np.uint8) if with_dead else np.zeros(0, np.uint8)
    vals = np.empty((1, L), np.float32)
    idx = np.empty((1, L), np.int64)
    size = np.zeros(1, np.int64)
    tag = np.int64(7 << 40)
    scan_query_parallel(codes, scales, rowlam, rowterm, dead, offsets, groups, qcodes, alpha, qoff,
             np.float32(ip_w), tag, chunks, vals, idx, size)
    expect = ref.proxy_ref(codes, scales.astype(np.float64), rowlam, rowterm, offsets, qcodes[0],
                           alpha[0].astype(np.float64), qoff[0].astype(np.float64), ip_w)
    in_groups = np.isin(ref.row_groups_ref(offsets), groups)
    alive = dead == 0 if with_dead else np.ones(n, bool)
    candidates = np.flatnonzero(in_groups & alive)
    _check_topl(vals[0], idx[0] - tag, size[0], expect, candidates, L)
    # the one-thread variant keeps exactly the same shortlist
    svals, sidx, ssize = np.empty((1, L), np.float32), np.empty((1, L), np.int64), np.zeros(1, np.int64)
    scan_query_serial(codes, scales, rowlam, rowterm, dead, offsets, groups, qcodes, alpha, qoff,
                np.float32(ip_w), tag, svals, sidx, ssize)
    assert ssize[0] == size[0]
    np.testing.assert_array_equal(heap_sorted(svals[0], sidx[0], ssize[0])[1],
                                  heap_sorted(vals[0], idx[0], size[0])[1])


def _batch_queries(rng, nq, dim, blocks, n_groups, probe_fraction):
    """Random query-side inputs of the batch scans: sign codes, block weights, q . base[g]
    and which groups each query probes."""
    qcodes = pack_signs(rng.standard_normal((nq, dim)).astype(np.float32))
    alpha = rng.random((nq, blocks)).astype(np.float32)
    qoff = rng.standard_normal((nq, n_groups)).astype(np.float32)
    probe = rng.random((nq, n_groups)) < probe_fraction
    return qcodes, alpha, qoff, probe


@given(seed=st.integers(0, 2**31), n=st.integers(1, 300), nq=st.integers(1, 11),
       n_groups=st.integers(1, 5), L=st.integers(1, 40), ip_w=ip_weights,
       block=st.integers(1, 4))
def test_scan_batch_by_query_block_matches_reference(seed, n, nq, n_groups, L, ip_w, block):
    dim, blocks = 128, 2
    codes, offsets, scales, rowlam, rowterm = _segment(seed, n, dim, blocks, n_groups)
    rng = np.random.default_rng(seed + 2)
    qcodes, alpha, qoff, probe = _batch_queries(rng, nq, dim, blocks, n_groups, 0.6)
    vals = np.empty((nq, L), np.float32)
    idx = np.empty((nq, L), np.int64)
    size = np.zeros(nq, np.int64)
    scan_batch_by_query_block(codes, scales, rowlam, rowterm, np.zeros(0, np.uint8), offsets, probe, qcodes, alpha,
              qoff, np.float32(ip_w), np.int64(0), block, vals, idx, size)
    groups_of = ref.row_groups_ref(offsets)
    for i in range(nq):
        expect = ref.proxy_ref(codes, scales.astype(np.float64), rowlam, rowterm, offsets, qcodes[i],
                               alpha[i].astype(np.float64), qoff[i].astype(np.float64), ip_w)
        candidates = np.flatnonzero(probe[i][groups_of])
        _check_topl(vals[i], idx[i], size[i], expect, candidates, L)


@given(seed=st.integers(0, 2**31), n=st.integers(1, 300), nq=st.integers(1, 11),
       n_groups=st.integers(1, 6), L=st.integers(1, 40), ip_w=ip_weights,
       n_chunks=st.integers(1, 5), with_dead=st.booleans())
def test_scan_batch_by_group_matches_reference(seed, n, nq, n_groups, L, ip_w, n_chunks, with_dead):
    dim, blocks = 128, 2
    codes, offsets, scales, rowlam, rowterm = _segment(seed, n, dim, blocks, n_groups)
    rng = np.random.default_rng(seed + 4)
    qcodes, alpha, qoff, probe = _batch_queries(rng, nq, dim, blocks, n_groups, 0.5)
    dead = (rng.random(n) < 0.2).astype(np.uint8) if with_dead else np.zeros(0, np.uint8)
    groups_t, queries_t = np.nonzero(probe.T)
    group_start = np.searchsorted(groups_t, np.arange(n_groups + 1))
    cuts = np.sort(rng.integers(0, n_groups + 1, n_chunks - 1))  # any split of the groups
    chunk_groups = np.concatenate(([0], cuts, [n_groups])).astype(np.int64)
    # heaps that already hold a candidate from an earlier segment (tag beyond this one's rows)
    vals = np.empty((nq, L), np.float32)
    idx = np.empty((nq, L), np.int64)
    size = np.zeros(nq, np.int64)
    tag = np.int64(1 << 20)
    for i in range(nq):
        size[i] = heap_push(vals[i], idx[i], 0, np.float32(0.25), np.int64(7))
    scan_batch_by_group(codes, scales, rowlam, rowterm, dead, offsets, queries_t.astype(np.int64),
                  group_start, chunk_groups, qcodes, alpha, qoff, np.float32(ip_w), tag, vals, idx, size)
    groups_of = ref.row_groups_ref(offsets)
    alive = dead == 0 if with_dead else np.ones(n, bool)
    for i in range(nq):
        expect = ref.proxy_ref(codes, scales.astype(np.float64), rowlam, rowterm, offsets, qcodes[i],
                               alpha[i].astype(np.float64), qoff[i].astype(np.float64), ip_w)
        # the earlier candidate (index 7, value 0.25) competes with this segment's rows
        values = np.concatenate(([0.25], expect[probe[i][groups_of] & alive]))
        members = np.concatenate(([7], tag + np.flatnonzero(probe[i][groups_of] & alive)))
        order = np.lexsort((members, -values))[:L]
        got_v, got_i = heap_sorted(vals[i], idx[i], size[i])
        assert size[i] == min(L, len(values))
        np.testing.assert_allclose(got_v, values[order], rtol=1e-5, atol=1e-4)
        # same members up to float ties at the cut
        assert len(set(got_i.tolist()) ^ set(members[order].tolist())) <= 2 * int(
            np.sum(np.isclose(values, values[order][-1], rtol=1e-5, atol=1e-4)))


def test_scan_heap_carries_across_calls():
    """Two segments scanned into one heap == one scan of their union."""
    codes, offsets, scales, rowlam, rowterm = _segment(5, 200, 128, 1, 3)
    rng = np.random.default_rng(0)
    qcodes = pack_signs(rng.standard_normal((1, 128)).astype(np.float32))
    alpha = np.ones((1, 1), np.float32)
    qoff = np.zeros((1, 3), np.float32)
    groups = np.arange(3, dtype=np.int64)

    def run(parts):
        vals, idx, size = np.empty((1, 20), np.float32), np.empty((1, 20), np.int64), np.zeros(1, np.int64)
        for tag, (lo, hi) in parts:
            sub_off = np.clip(offsets - lo, 0, hi - lo)
            scan_query_parallel(codes[lo:hi], scales[lo:hi], rowlam[lo:hi], rowterm[lo:hi], np.zeros(0, np.uint8),
                     sub_off, groups, qcodes, alpha, qoff, np.float32(1), np.int64(tag), 2, vals, idx, size)
        return heap_sorted(vals[0], idx[0], size[0])

    whole_v, whole_i = run([(0, (0, 200))])
    split_v, split_i = run([(0, (0, 120)), (120, (120, 200))])
    np.testing.assert_array_equal(whole_i, split_i)
    np.testing.assert_array_equal(whole_v, split_v)


def _read_only(*arrays):
    out = []
    for a in arrays:
        a = a.copy()
        a.flags.writeable = False
        out.append(a)
    return out


def test_scan_kernels_compile_once_for_read_only_and_writable_segments():
    """The scans declare their signatures: a memory-mapped (read-only) segment and one
    built in memory run the same compiled code, and other types are refused, not compiled."""
    codes, offsets, scales, rowlam, rowterm = _segment(0, 50, 128, 2, 3)
    rng = np.random.default_rng(0)
    qcodes, alpha, qoff, probe = _batch_queries(rng, 3, 128, 2, 3, 0.7)
    dead, groups = np.zeros(0, np.uint8), np.arange(3, dtype=np.int64)
    group_start = np.searchsorted(np.nonzero(probe.T)[0], np.arange(4))
    group_queries = np.nonzero(probe.T)[1].astype(np.int64)
    chunks = np.array([0, 1, 3], np.int64)
    ip_w, tag = np.float32(1), np.int64(0)

    def heaps(nq):
        return np.empty((nq, 5), np.float32), np.empty((nq, 5), np.int64), np.zeros(nq, np.int64)

    calls = {
        scan_query_serial: lambda seg: scan_query_serial(*seg, groups, qcodes[:1], alpha[:1], qoff[:1],
                                                         ip_w, tag, *heaps(1)),
        scan_query_parallel: lambda seg: scan_query_parallel(*seg, groups, qcodes[:1], alpha[:1], qoff[:1],
                                                             ip_w, tag, 2, *heaps(1)),
        scan_batch_by_query_block: lambda seg: scan_batch_by_query_block(*seg, probe, qcodes, alpha, qoff,
                                                                         ip_w, tag, 2, *heaps(3)),
        scan_batch_by_group: lambda seg: scan_batch_by_group(*seg, group_queries, group_start, chunks,
                                                             qcodes, alpha, qoff, ip_w, tag, *heaps(3)),
    }
    writable = (codes, scales, rowlam, rowterm, dead, offsets)
    for kernel, call in calls.items():
        call(writable)
        call(tuple(_read_only(*writable)))
        assert len(kernel.dispatcher.signatures) == 1, kernel.__name__
        with pytest.raises(TypeError):
            call((codes, scales.astype(np.float64), rowlam, rowterm, dead, offsets))
        assert len(kernel.dispatcher.signatures) == 1, kernel.__name__


@given(seed=st.integers(0, 2**31), n=st.integers(1, 80),
       shape=st.sampled_from([(64, 1), (128, 2), (960, 3), (7680, 1), (7680, 2)]),
       ip_w=ip_weights, nq=st.integers(1, 3), chunks=st.integers(1, 5))
def test_rescore_matches_dequantized_reference(seed, n, shape, ip_w, nq, chunks):
    dim, blocks = shape
    n_groups = 3
    codes, offsets, scales, rowlam, rowterm = _segment(seed, n, dim, blocks, n_groups)
    rng = np.random.default_rng(seed + 3)
    base = rng.standard_normal((n_groups, dim)).astype(np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    luts = np.empty((nq, dim // 4, 16), np.float32)
    build_nibble_luts(queries, luts)
    qsums = queries.reshape(nq, blocks, -1).sum(axis=2).astype(np.float32)
    qoff = (queries @ base.T).astype(np.float32)
    # every (query, row) pair, gathered the way search.exact_scores does
    rows = np.tile(np.arange(n, dtype=np.int64), nq)
    qrow = np.repeat(np.arange(nq, dtype=np.int64), n)
    groups = np.searchsorted(offsets, rows, side="right") - 1
    pairs = (codes.view(np.uint8)[rows], scales[rows], rowlam[rows], rowterm[rows],
             qoff[qrow, groups])
    out = np.empty(len(rows), np.float32)
    rescore(*pairs, qrow, luts, qsums, np.float32(ip_w), out, chunks)
    serial = np.empty_like(out)
    rescore_range(*pairs, qrow, luts, qsums, np.float32(ip_w), serial, 0, len(rows))
    np.testing.assert_array_equal(out, serial)
    by_query = np.empty_like(out)
    qstart = np.searchsorted(qrow, np.arange(nq + 1))
    rescore_by_query(*pairs, qstart, queries, qsums, np.float32(ip_w), by_query, chunks)
    np.testing.assert_array_equal(by_query, serial)
    for i in range(nq):
        expect = ref.rescore_ref(codes, scales.astype(np.float64), rowlam, rowterm, offsets, base,
                                 queries[i], ip_w)
        scale = np.abs(queries[i]).sum() * scales.max() + np.abs(expect).max() + 1
        np.testing.assert_allclose(out[qrow == i], expect, atol=2e-6 * scale * np.sqrt(dim), rtol=1e-5)


@given(seed=st.integers(0, 2**31), n=st.integers(1, 80),
       shape=st.sampled_from([(64, 1), (128, 2), (960, 3), (7680, 1), (7680, 2)]),
       ip_w=ip_weights, pairs=st.integers(0, 120), nq=st.integers(1, 4), chunks=st.integers(1, 5))
def test_rescore_rows_in_place_matches_the_dequantized_reference(seed, n, shape, ip_w, pairs, nq, chunks):
    """kernels.signs against its numpy twin, and against the table kernels on the same
    pairs (float32 rounding apart); the parallel split and read-only (mapped) segment
    arrays change nothing."""
    from zenstore.kernels import rescore_rows, rescore_rows_range

    dim, blocks = shape
    n_groups = 3
    codes, offsets, scales, rowlam, rowterm = _segment(seed, n, dim, blocks, n_groups)
    rng = np.random.default_rng(seed + 5)
    base = rng.standard_normal((n_groups, dim)).astype(np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    rows = rng.integers(0, n, pairs).astype(np.int64)
    qslot = np.sort(rng.integers(0, nq, pairs)).astype(np.int64)
    groups = np.searchsorted(offsets, rows, side="right") - 1
    qoff = (queries @ base.T).astype(np.float32)[qslot, groups]
    ro = _read_only(codes.view(np.uint32), scales, rowlam, rowterm)
    args = (*ro, rows, qoff, qslot, queries, np.float32(ip_w))
    serial = np.empty(pairs, np.float32)
    rescore_rows_range(*args, serial, 0, pairs)
    out = np.full(pairs, np.nan, np.float32)
    rescore_rows(*args, out, chunks)
    np.testing.assert_array_equal(out, serial)
    want = ref.rescore_rows_ref(codes, scales, rowlam, rowterm, rows, qoff, qslot, queries, ip_w)
    scale = np.abs(queries).sum(axis=1).max() * scales.max() + np.abs(want).max(initial=0) + 1
    np.testing.assert_allclose(out, want, atol=2e-6 * scale * np.sqrt(dim), rtol=1e-5)
    if pairs:  # the nibble-table kernel on the same (gathered) pairs
        luts = np.empty((nq, dim // 4, 16), np.float32)
        build_nibble_luts(queries, luts)
        qsums = queries.reshape(nq, blocks, -1).sum(axis=2).astype(np.float32)
        tables = np.empty(pairs, np.float32)
        rescore_range(codes.view(np.uint8)[rows], scales[rows], rowlam[rows], rowterm[rows], qoff, qslot,
                      luts, qsums, np.float32(ip_w), tables, 0, pairs)
        np.testing.assert_allclose(out, tables, atol=2e-6 * scale * np.sqrt(dim), rtol=1e-5)


@given(seed=st.integers(0, 2**31), m=st.integers(1, 5), n=st.integers(1, 50),
       dim=st.sampled_from(DIMS), chunks=st.integers(1, 7))
def test_dot_rows_f16_matches_numpy(seed, m, n, dim, chunks):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, dim)).astype(np.float32)
    b = rng.standard_normal((n, dim)).astype(np.float16)
    b[0, :3] = [0.0, 6e-8, -65504]  # zero, subnormal, extreme
    out = np.empty((m, n), np.float32)
    dot_rows_f16(a, b.view(np.uint16), out, chunks)
    want = a.astype(np.float64) @ b.astype(np.float64).T
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-3 * np.sqrt(dim))


@pytest.mark.parametrize("dim", DIMS + [384, 768, 1024])
def test_rotation_is_orthogonal_and_invertible(dim):
    rng = np.random.default_rng(dim)
    rot = Rotation.random(dim, seed=3)
    rot.validate(dim)
    x = rng.standard_normal((7, dim)).astype(np.float32)
    y = rot.apply(x)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    np.testing.assert_allclose(y @ y.T, x @ x.T, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(rot.invert(y), x, atol=1e-4)
    # it really mixes: a basis vector spreads over many coordinates
    e = np.zeros((1, dim), np.float32)
    e[0, 0] = 1
    assert np.count_nonzero(np.abs(rot.apply(e)) > 1e-6) > min(dim, 64) // 2


def test_rotation_matches_dense_reference():
    """apply() equals multiplying by the dense matrix built from its definition."""
    dim = 192
    rot = Rotation.random(dim, seed=9)
    block = 64
    h = np.array([[1.0]])
    while h.shape[0] < block:
        h = np.block([[h, h], [h, -h]])
    hb = np.kron(np.eye(dim // block), h / np.sqrt(block))
    m = np.eye(dim)
    for signs, perm in zip(rot.signs, rot.perms):
        step = np.diag(signs.astype(np.float64))[perm]  # y[j] = s[p[j]] x[p[j]]
        m = hb @ step @ m
    x = np.random.default_rng(0).standard_normal((3, dim)).astype(np.float32)
    np.testing.assert_allclose(rot.apply(x), x @ m.T, atol=1e-4)


@given(seed=st.integers(0, 2**31), n=st.integers(1, 6), dim=st.sampled_from([64, 128, 192, 960, 1024, 7680]),
       rounds=st.integers(1, 3), normalize=st.booleans(), chunks=st.integers(1, 4))
def test_rotation_matches_the_dense_hadamard_reference(seed, n, dim, rounds, normalize, chunks):
    """kernels.hadamard (the in-vector 16-point stages, then the strided ones) against
    dense Sylvester matrices in float64; the inverse undoes it; serial and parallel agree
    bit for bit."""
    from zenstore.kernels.hadamard import rotate_range, rotate_rows, unrotate_rows
    from zenstore.rotation import hadamard_block

    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, dim)) * rng.choice([1e-3, 1.0, 1e3])).astype(np.float32)
    rot = Rotation.random(dim, seed % 1000, rounds)
    block = hadamard_block(dim)
    out = np.empty_like(x)
    rotate_rows(x, rot.signs, rot.perms, block, out, chunks, normalize)
    serial = np.empty_like(x)
    rotate_range(x, rot.signs, rot.perms, block, serial, 0, n, normalize)
    np.testing.assert_array_equal(out, serial)
    want = ref.rotate_ref(x, rot.signs, rot.perms, block, normalize)
    scale = np.abs(want).max() + 1e-30
    np.testing.assert_allclose(out, want, atol=2e-6 * scale * np.sqrt(rounds), rtol=1e-5)
    back = np.empty_like(x)
    unrotate_rows(want.astype(np.float32), rot.signs, rot.perms, block, back)
    target = x / np.linalg.norm(x, axis=1, keepdims=True) if normalize else x
    np.testing.assert_allclose(back, target, atol=4e-6 * np.abs(target).max(), rtol=1e-5)
