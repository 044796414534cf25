"""The coarse nearest-base-row step (``zenstore.assign``), its kernels and the k-means built on it."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from zenstore.assign import COARSE_STRIDE, NearestRow, uses_coarse
from zenstore.kernels import reference as ref
from zenstore.kernels.coarse import nearest_of_candidates, sum_rows_by_label
from zenstore.rotation import Rotation
from zenstore.train import means_by_label, train_base

settings.register_profile("assign", max_examples=25, deadline=None)
settings.load_profile("assign")


def _clustered(seed: int, n: int, dim: int, k: int, noise: float = 0.3):
    """Rows around k random centres, rotated: what the codec hands the assignment."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((k, dim)).astype(np.float32)
    labels = rng.integers(0, k, n)
    x = centres[labels] + noise * rng.standard_normal((n, dim)).astype(np.float32)
    rot = Rotation.random(dim, seed)
    return rot.apply(x), rot.apply(centres), labels


@given(seed=st.integers(0, 2**31), n=st.integers(1, 30), n_base=st.integers(1, 40),
       c=st.integers(1, 8), dim=st.sampled_from([64, 128, 960]), dup=st.booleans())
def test_nearest_of_candidates_matches_reference(seed, n, n_base, c, dim, dup):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    base = rng.standard_normal((n_base, dim)).astype(np.float32)
    if dup:  # equal rows: any of them is right
        base[1::2] = base[0::2][: len(base[1::2])]
    sq = np.einsum("ij,ij->i", base, base, dtype=np.float64)
    cand = rng.integers(0, n_base, (n, c)).astype(np.int64)
    out = np.empty(n, np.int64)
    nearest_of_candidates(x, base, sq, cand, out)
    want = ref.nearest_of_candidates_ref(x, base, sq, cand)
    assert all(out[i] in cand[i] for i in range(n))
    dist = lambda g: sq[g] - 2 * np.einsum("nd,nd->n", x.astype(np.float64), base[g].astype(np.float64))  # noqa: E731
    # the kernel sums in float32: its choice is the reference's or within rounding of it
    np.testing.assert_allclose(dist(out), dist(want), rtol=0, atol=1e-3 * (1 + np.abs(dist(want)).max()))


@given(seed=st.integers(0, 2**31), n=st.integers(1, 30), n_base=st.integers(1, 40),
       c=st.integers(1, 8), dim=st.sampled_from([64, 128, 960]))
def test_nearest_of_candidates_reads_an_fp16_base_as_its_float32_copy(seed, n, n_base, c, dim):
    """The base as uint16 fp16 bits gives the answer of its exact float32 copy, bit for bit
    (the codec passes its stored fp16 base: half the bytes read per candidate)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    base16 = rng.standard_normal((n_base, dim)).astype(np.float16)
    base = base16.astype(np.float32)
    sq = np.einsum("ij,ij->i", base, base, dtype=np.float64)
    cand = rng.integers(0, n_base, (n, c)).astype(np.int64)
    a, b = np.empty(n, np.int64), np.empty(n, np.int64)
    nearest_of_candidates(x, base, sq, cand, a)
    nearest_of_candidates(x, base16.view(np.uint16), sq, cand, b)
    np.testing.assert_array_equal(a, b)


@given(seed=st.integers(0, 2**31), n=st.integers(0, 50), k=st.integers(1, 10),
       dim=st.sampled_from([1, 7, 64, 100]), chunks=st.integers(1, 9))
def test_sum_rows_by_label_matches_reference(seed, n, k, dim, chunks):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    labels = rng.integers(0, k, n).astype(np.int64)
    sums = np.zeros((k, dim)), np.zeros(k, np.int64)
    sum_rows_by_label(x, labels, sums[0], sums[1], chunks)
    want_sums, want_counts = ref.sum_rows_by_label_ref(x, labels, k)
    np.testing.assert_allclose(sums[0], want_sums, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(sums[1], want_counts)


def test_means_by_label_keeps_previous_for_empty_labels():
    x = np.array([[1, 2], [3, 4], [10, 10]], np.float32)
    prev = np.full((3, 2), -7, np.float32)
    out = means_by_label(x, np.array([0, 0, 2]), prev)
    np.testing.assert_array_equal(out, [[2, 3], [-7, -7], [10, 10]])


def test_coarse_assignment_finds_the_exact_nearest_row_of_clustered_data():
    dim, k = 2048, 128
    assert uses_coarse(dim, k)
    xr, centres, _ = _clustered(1, 3000, dim, k)
    near = NearestRow(centres)
    assert near.coarse and near.sub_base.shape == (k, dim // COARSE_STRIDE)
    got, exact = near(xr), near.exact(xr)
    assert np.array_equal(got, exact)


def test_coarse_assignment_is_never_worse_than_its_candidates():
    """On unclustered noise (near-ties everywhere) the coarse step may miss the nearest
    row, but what it picks is the best of its candidates and close to the nearest."""
    rng = np.random.default_rng(3)
    dim, k = 1024, 256
    rot = Rotation.random(dim, 3)
    xr = rot.apply(rng.standard_normal((500, dim)).astype(np.float32))
    base = rot.apply(rng.standard_normal((k, dim)).astype(np.float32))
    near = NearestRow(base)
    got, exact = near(xr), near.exact(xr)
    d = ((xr[:, None, :].astype(np.float64) - base[None].astype(np.float64)) ** 2).sum(-1)
    rows = np.arange(len(xr))
    assert np.all(d[rows, got] >= d[rows, exact] - 1e-6)
    assert np.mean(d[rows, got] / d[rows, exact]) < 1.05  # measured 1.023: noise is the worst case


def test_exact_product_where_the_coarse_step_does_not_apply():
    xr, centres, _ = _clustered(2, 200, 512, 16)  # 32 coordinates, 16 rows: too few
    near = NearestRow(centres)
    assert not near.coarse
    assert np.array_equal(near(xr), near.exact(xr))
    big = NearestRow(np.zeros((128, 2048), np.float32), coarse=False)  # e.g. no rotation
    assert not big.coarse


def _objective(x, centroids):
    near = NearestRow(centroids, coarse=False)
    g = near.exact(x)
    return float(((x - centroids[g]) ** 2).sum(1).mean())


def test_kmeans_on_the_coordinate_subset_matches_full_kmeans():
    dim, k = 1024, 64
    xr, _, _ = _clustered(4, 4000, dim, k, noise=1.0)
    coarse = train_base(xr, k, seed=0, coarse=True)
    full = train_base(xr, k, seed=0, coarse=False)
    assert coarse.shape == full.shape == (k, dim) and coarse.dtype == np.float32
    assert _objective(xr, coarse) <= 1.02 * _objective(xr, full)
    again = train_base(xr, k, seed=0, coarse=True)
    np.testing.assert_array_equal(coarse, again)  # seeded: the same base every time


@given(seed=st.integers(0, 2**31), n=st.integers(1, 20), dim=st.sampled_from([64, 128, 960, 7680]),
       nblocks=st.sampled_from([1, 2]), same=st.booleans())
def test_encode_residuals_matches_reference(seed, n, dim, nblocks, same):
    from zenstore.kernels.bits import encode_residuals

    rng = np.random.default_rng(seed)
    base = rng.standard_normal((5, dim)).astype(np.float32)
    groups = rng.integers(0, 5, n).astype(np.int64)
    xr = rng.standard_normal((n, dim)).astype(np.float32)
    if same:  # rows equal to their base row: zero residuals, all bits clear
        xr[::2] = base[groups[::2]]
    out = (np.empty((n, dim // 64), np.uint64), *(np.empty((n, nblocks)) for _ in range(3)), np.empty(n))
    encode_residuals(xr, base, groups, nblocks, *out)
    want = ref.encode_residuals_ref(xr, base, groups, nblocks)
    np.testing.assert_array_equal(out[0], want[0])
    for got, exp in zip(out[1:], want[1:]):
        np.testing.assert_allclose(got, exp, rtol=1e-9, atol=1e-9)
