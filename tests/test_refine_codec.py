"""The refine tiers (zenstore/refine.py): configs, encode/decode, rows, kernels vs their
numpy twins, refined scores vs a float reference, and the error-bounded selection."""

import importlib.util
import json
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zenstore import refine as R
from zenstore.codec import Codec
from zenstore.errors import CorruptStore, FormatVersionError, InvalidArgument, InvalidVector
from zenstore.format import StoreConfig
from zenstore.kernels import refine as K
from zenstore.kernels import refine_reference as KR
from zenstore.rotation import Rotation

DIMS = [64, 128, 192, 960, 7680]
TIERS = [R.RefineTier("int8"), *(R.RefineTier("magnitude", b) for b in (1, 2, 3, 4, 8))]
settings.register_profile("refine", max_examples=25, deadline=None)
settings.load_profile("refine")


# --- configs ----------------------------------------------------------------------------------


def test_tier_configs_round_trip_and_parse():
    for tier in TIERS:
        assert R.RefineTier.from_dict(json.loads(json.dumps(tier.to_dict()))) == tier
        assert R.RefineTier.parse(tier.name) == tier
        assert R.RefineTier.parse(tier.to_dict()) == tier
    assert R.RefineTier.parse(None) is None
    with pytest.raises(InvalidArgument, match="no option"):
        R.RefineTier.parse({"kind": "int8", "scale": "f16"})
    assert R.RefineTier.from_dict({"kind": "int8", "bits": 8, "x-note": 1}) == R.RefineTier("int8")


def test_row_bytes_at_7680():
    assert R.RefineTier("int8").row_bytes(7680, "cosine") == 7684
    assert R.RefineTier("int8").row_bytes(7680, "l2") == 7688
    assert [R.RefineTier("magnitude", b).row_bytes(7680, "ip") for b in (1, 2, 3, 4, 8)] == [966, 1926, 2886, 3846,
                                                                                             7686]


@pytest.mark.parametrize("bad", [{"kind": "int4"}, {"kind": "int8", "bits": 4}, {"kind": "magnitude", "bits": 0},
                                 {"kind": "magnitude", "bits": 5}, {"kind": "magnitude", "bits": 6},
                                 {"kind": "magnitude", "bits": 2.0},
                                 {"kind": "magnitude", "bits": True}])
def test_bad_tier_arguments_are_refused(bad):
    with pytest.raises(InvalidArgument):
        R.RefineTier(**bad)


@pytest.mark.parametrize("text", ["int4", "magnitude", "magnitude9", "", 8])
def test_bad_refine_argument_is_refused(text):
    with pytest.raises(InvalidArgument, match="must be"):
        R.RefineTier.parse(text)


def test_stored_configs_that_do_not_fit_are_named():
    with pytest.raises(CorruptStore):
        R.RefineTier.from_dict([])
    with pytest.raises(CorruptStore, match="invalid"):
        R.RefineTier.from_dict({"kind": "magnitude", "bits": 7})
    with pytest.raises(FormatVersionError, match="fields"):
        R.RefineTier.from_dict({"kind": "int8", "bits": 8, "planes": 2})
    with pytest.raises(FormatVersionError, match="kind"):
        R.RefineTier.from_dict({"kind": "pq"})


# --- encode / decode ------------------------------------------------------------------------


def _hot(seed, n, dim, metric="cosine", kind="random", n_base=4):
    """Rotated vectors with their hot encoding from the real codec (base rows: noisy
    copies of rotated data rows, so residuals look like a trained store's)."""
    rng = np.random.default_rng(seed)
    cfg = StoreConfig(dim=dim, metric=metric, n_base=n_base)
    mean = rng.standard_normal(dim).astype(np.float32)
    x = (mean + rng.standard_normal((n, dim))).astype(np.float32)
    if kind == "duplicates":
        x[1::2] = x[0::2][: len(x[1::2])]
    elif kind == "negated":
        x[1::2] = -x[0::2][: len(x[1::2])]
    rotation = Rotation.random(dim, seed % 1000)
    probe = Codec(cfg, np.zeros((1, dim), np.float16), rotation).prepare(x[:n_base])
    base = probe + 0.3 * rng.standard_normal(probe.shape) * np.abs(probe).mean()
    codec = Codec(cfg, base.astype(np.float16), rotation)
    if kind == "on_base":  # residual exactly zero: x is its base row
        x = codec.rotation.invert(np.repeat(codec.base[:1], n, axis=0))
    xr = codec.prepare(x)
    if kind == "on_base":
        xr[:] = codec.base[0]
    batch = codec.encode(x)
    c = codec.base[batch.groups]
    xh = codec.dequantize_rotated(batch.groups, batch.codes, batch.scales, batch.aux)
    return codec, xr, c, xh, batch


@pytest.mark.parametrize("tier", TIERS, ids=lambda t: t.name)
@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_refined_vectors_beat_the_hot_code(tier, metric):
    codec, xr, c, xh, hot = _hot(1, 200, 256, metric)
    b = R.encode(tier, xr, c, xh, hot.codes, metric)
    xref = R.decode(tier, b, c, xh, hot.codes)
    err_hot = np.linalg.norm(xh - xr, axis=1)
    err_ref = np.linalg.norm(xref - xr, axis=1)
    assert (err_ref < err_hot).mean() > 0.95
    limit = {"int8": 0.02, "magnitude1": 0.8, "magnitude2": 0.45, "magnitude3": 0.25, "magnitude4": 0.14,
             "magnitude8": 0.02}[tier.name]
    assert err_ref.mean() < limit * err_hot.mean()
    if tier.kind == "magnitude":  # x_ref . c == x . c, up to lam's fp16 rounding
        np.testing.assert_allclose(np.einsum("ij,ij->i", xref, c), np.einsum("ij,ij->i", xr, c), rtol=2e-3, atol=1e-3)
    if metric == "l2":
        np.testing.assert_allclose(b.sqnorm, (xr.astype(np.float64) ** 2).sum(1), rtol=1e-5)


def test_more_magnitude_bits_are_more_accurate():
    _, xr, c, xh, hot = _hot(2, 300, 512)
    errs = [np.linalg.norm(R.decode(t, R.encode(t, xr, c, xh, hot.codes, "ip"), c, xh, hot.codes) - xr)
            for t in TIERS[1:]]
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0] / 4


@pytest.mark.parametrize("kind", ["duplicates", "negated", "on_base"])
def test_encode_edge_cases_stay_finite(kind):
    _, xr, c, xh, hot = _hot(3, 40, 128, "ip", kind, n_base=1)
    for tier in TIERS:
        b = R.encode(tier, xr, c, xh, hot.codes, "ip")
        xref = R.decode(tier, b, c, xh, hot.codes)
        assert np.isfinite(xref).all() and np.isfinite(b.scales).all()
        if kind == "on_base":
            np.testing.assert_allclose(xref, xr, atol=1e-6)


def test_encode_refuses_bad_input():
    _, xr, c, xh, hot = _hot(4, 10, 128)
    tier = R.RefineTier("magnitude", 2)
    with pytest.raises(InvalidArgument, match="base rows"):
        R.encode(tier, xr, c[:5], xh, hot.codes, "cosine")
    with pytest.raises(InvalidArgument, match="hot codes"):
        R.encode(tier, xr, c, xh, hot.codes[:, :1], "cosine")
    with pytest.raises(InvalidArgument, match="hot rows"):
        R.encode(R.RefineTier("int8"), xr, c, xh[:, :64], hot.codes, "cosine")
    with pytest.raises(InvalidArgument, match="hot rows are needed"):
        R.encode(R.RefineTier("int8"), xr, c, None, hot.codes, "cosine")
    with pytest.raises(InvalidArgument, match="hot codes are needed"):
        R.encode(tier, xr, c, xh, None, "cosine")
    with pytest.raises(InvalidArgument, match="multiple of 64"):
        R.encode(tier, xr[:, :100], c[:, :100], xh[:, :100], hot.codes, "cosine")
    bad = xr.copy()
    bad[3, 7] = np.nan
    with pytest.raises(InvalidVector):
        R.encode(tier, bad, c, xh, hot.codes, "cosine")


@pytest.mark.parametrize("tier", TIERS, ids=lambda t: t.name)
@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_rows_round_trip(tier, metric):
    _, xr, c, xh, hot = _hot(5, 30, 192, metric)
    b = R.encode(tier, xr, c, xh, hot.codes, metric)
    rows = R.to_rows(tier, b, 192, metric)
    assert rows.dtype == np.uint8 and rows.shape == (30, tier.row_bytes(192, metric))
    back = R.from_rows(tier, rows[::-1][::-1], 192, metric)
    for f in ("codes", "scales", "lam", "sqnorm"):
        np.testing.assert_array_equal(getattr(back, f), getattr(b, f))
    with pytest.raises(CorruptStore, match="bytes"):
        R.from_rows(tier, rows[:, :-1], 192, metric)


# --- kernels vs twins -----------------------------------------------------------------------


kinds = st.sampled_from(["random", "zeros", "duplicates", "negated", "extremes"])


def _pairs(seed, n, dim, nq, kind):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((nq, dim)).astype(np.float32)
    codes = rng.integers(-127, 128, (n, dim)).astype(np.int8)
    if kind == "zeros":
        codes[: n // 2] = 0
        q[0] = 0
    elif kind == "duplicates":
        codes[1::2] = codes[0::2][: len(codes[1::2])]
    elif kind == "negated":
        codes[1::2] = -codes[0::2][: len(codes[1::2])]
    elif kind == "extremes":
        codes[:] = np.where(rng.random((n, dim)) < 0.5, -128, 127)
    return q, codes, rng.integers(0, nq, n).astype(np.int64)


@given(seed=st.integers(0, 2**31), n=st.integers(0, 40), dim=st.sampled_from(DIMS), nq=st.integers(1, 4),
       kind=kinds, chunks=st.integers(1, 5))
def test_int8_dots_match_reference(seed, n, dim, nq, kind, chunks):
    q, codes, qslot = _pairs(seed, n, dim, nq, kind)
    want = KR.int8_dots_ref(codes, q, qslot)
    tol = 1e-5 * np.abs(q).sum(1).max() * 128 + 1e-6
    table, rows = _in_table(seed, codes.view(np.uint8), tail=4)
    for parallel in (False, True):
        out = np.full(n, np.nan, np.float32)
        if parallel:
            K.int8_dots(table.view(np.int8), rows, q, qslot, out, chunks)
        else:
            K.int8_dots_range(table.view(np.int8), rows, q, qslot, out, 0, n)
        np.testing.assert_allclose(out, want, rtol=0, atol=tol)


def _in_table(seed, records, tail):
    """``records`` (n, b) placed at shuffled rows of a larger read-only table with ``tail``
    junk bytes after each record, as in a mapped refine file: (table, rows) such that
    ``table[rows, :b] == records``."""
    rng = np.random.default_rng(seed + 7)
    n, b = records.shape
    table = rng.integers(0, 256, (2 * n + 3, b + tail)).astype(np.uint8)
    rows = rng.permutation(len(table))[:n].astype(np.int64)
    table[rows, :b] = records
    table.flags.writeable = False
    return table, rows


@given(seed=st.integers(0, 2**31), n=st.integers(0, 40), dim=st.sampled_from(DIMS), nq=st.integers(1, 4),
       bits=st.sampled_from([1, 2, 3, 4, 8]), kind=kinds, chunks=st.integers(1, 5))
def test_magnitude_dots_match_reference(seed, n, dim, nq, bits, kind, chunks):
    rng = np.random.default_rng(seed)
    q, _, qslot = _pairs(seed, n, dim, nq, "random")
    hot = rng.integers(0, 256, (n, dim // 8)).astype(np.uint8)
    planes = rng.integers(0, 256, (n, bits * dim // 8)).astype(np.uint8)
    if kind == "zeros":
        planes[: n // 2] = 0
        hot[1::3] = 0
    elif kind == "extremes":
        planes[:] = 255
        hot[::2] = 255
    elif kind in ("duplicates", "negated"):
        planes[1::2] = planes[0::2][: len(planes[1::2])]
        hot[1::2] = hot[0::2][: len(hot[1::2])] ^ (255 if kind == "negated" else 0)
    want = KR.magnitude_dots_ref(planes, hot, bits, q, qslot)
    tol = 1e-5 * np.abs(q).sum(1).max() * (1 << (bits + 1)) + 1e-6
    ptable, rows = _in_table(seed, planes, tail=6)
    htable = np.random.default_rng(seed).integers(0, 256, (len(ptable), dim // 8)).astype(np.uint8)
    htable[rows] = hot
    for parallel in (False, True):
        out = np.full(n, np.nan, np.float32)
        if parallel:
            K.magnitude_dots(ptable, htable, rows, bits, q, qslot, out, chunks)
        else:
            K.magnitude_dots_range(ptable, htable, rows, bits, q, qslot, out, 0, n)
        np.testing.assert_allclose(out, want, rtol=0, atol=tol)


def test_magnitude_kernel_refuses_other_bit_counts():
    q = np.zeros((1, 64), np.float32)
    out = np.empty(1, np.float32)
    for bits in (0, 5, 7):
        with pytest.raises(ValueError, match="bits"):
            K.magnitude_dots_range(np.zeros((1, 64), np.uint8), np.zeros((1, 8), np.uint8), np.zeros(1, np.int64),
                                   bits, q, np.zeros(1, np.int64), out, 0, 1)


def test_magnitude_bit_layout():
    """Dimension 8p + k is bit k of byte p, in the hot code and in every plane."""
    dim = 64
    hot = np.zeros((1, 8), np.uint8)
    planes = np.zeros((1, 2 * 8), np.uint8)
    hot[0, 1] = 1 << 2  # dim 10 positive
    planes[0, 1] = 1 << 2  # dim 10: u bit 0
    planes[0, 8 + 1] = 1 << 2  # dim 10: u bit 1 -> u = 3, v = +7
    q = np.zeros((1, dim), np.float32)
    q[0, 10] = 1.0
    q[0, 11] = 0.5  # sign -, u = 0 -> v = -1
    out = np.empty(1, np.float32)
    K.magnitude_dots_range(planes, hot, np.zeros(1, np.int64), 2, q, np.zeros(1, np.int64), out, 0, 1)
    assert out[0] == pytest.approx(7.0 - 0.5)
    assert KR.magnitude_dots_ref(planes, hot, 2, q, np.zeros(1, np.int64))[0] == pytest.approx(6.5)


# --- refined scores vs a float reference ---------------------------------------------------


@given(seed=st.integers(0, 2**31), n=st.integers(1, 30), dim=st.sampled_from([64, 192, 960]),
       tier=st.sampled_from(TIERS), metric=st.sampled_from(["cosine", "ip", "l2"]), nq=st.integers(1, 3))
def test_refined_scores_equal_float_reference(seed, n, dim, tier, metric, nq):
    codec, xr, c, xh, hot = _hot(seed, n, dim, metric)
    b = R.encode(tier, xr, c, xh, hot.codes, metric)
    rng = np.random.default_rng(seed + 1)
    q = codec.prepare(rng.standard_normal((nq, dim)).astype(np.float32))
    qslot = rng.integers(0, nq, n).astype(np.int64)
    # the float reference: inner products with the decoded vector, in float64
    xref = R.decode(tier, b, c, xh, hot.codes).astype(np.float64)
    ip_ref = np.einsum("nd,nd->n", q[qslot].astype(np.float64), xref)
    want = 2 * ip_ref - (xr.astype(np.float64) ** 2).sum(1) if metric == "l2" else ip_ref
    out = np.empty(n, np.float32)
    if tier.kind == "int8":
        K.int8_dots(b.codes.view(np.int8), np.arange(n), q, qslot, out, 3)
    else:
        K.magnitude_dots(b.codes, hot.codes.view(np.uint8), np.arange(n), tier.bits, q, qslot, out, 3)
    hot_ip = np.einsum("nd,nd->n", q[qslot], xh)
    base_ip = np.einsum("nd,nd->n", q[qslot], c)
    for dots in (None, out):  # numpy twin, then the kernel's dot products
        ip = R.refined_ip(tier, b, q, qslot, hot_ip=hot_ip, base_ip=base_ip, hot_codes=hot.codes, dots=dots)
        got = R.ranking_values(ip, b, metric)
        scale = np.abs(q).sum(1).max() * np.abs(xref).max() + np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * scale)


def test_refined_ip_needs_its_inputs():
    _, xr, c, xh, hot = _hot(6, 5, 64)
    q = xr[:1]
    for tier in TIERS[:2]:
        b = R.encode(tier, xr, c, xh, hot.codes, "cosine")
        with pytest.raises(InvalidArgument, match="needs"):
            R.refined_ip(tier, b, q, np.zeros(5, np.int64))


# --- the error-bounded selection ------------------------------------------------------------


def test_error_slack_uses_the_query_part_orthogonal_to_the_base_row():
    slack = R.error_slack(np.array([[0.5], [0.5]]), base_ip=np.array([5.0, 0.0]), base_sqnorm=np.array([25.0, 25.0]),
                          qsq=np.array([1.0, 1.0]), multiplier=2.0)
    np.testing.assert_allclose(slack, [0.0, 1.0], atol=1e-7)  # q along c: nothing left to err
    # l2: 2 m s ||q - c||, with ||q - c||^2 = ||q||^2 - 2 q.c + ||c||^2 = 1 - 0 + 25
    l2 = R.error_slack(np.array([[0.5, 0.5]]), np.array([0.0]), np.array([25.0]), np.array([1.0]), 2.0, "l2")
    np.testing.assert_allclose(l2, [2 * 2.0 * 0.5 * np.sqrt(26.0)], rtol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "l2"])
def test_error_slack_bounds_the_hot_error_on_random_data(metric):
    """The hot estimate's error stays within the slack at m = 3 (the Gaussian model's 5 sigma)."""
    codec, xr, c, xh, hot = _hot(8, 400, 512, metric, n_base=4)
    rng = np.random.default_rng(9)
    q = codec.prepare(xr[:20] + 0.3 * rng.standard_normal((20, 512)).astype(np.float32) * np.abs(xr).mean())
    lam, term = codec.row_terms(hot.groups, hot.scales, hot.aux)
    ip_w = 2.0 if metric == "l2" else 1.0
    est = ip_w * (q @ xh.T) + term[None, :]
    exact = ip_w * (q @ xr.T) - ((xr * xr).sum(1)[None, :] if metric == "l2" else 0.0)
    qi, ri = np.meshgrid(np.arange(20), np.arange(400), indexing="ij")
    base_ip = (q @ codec.base.T)[qi, hot.groups[ri]]
    slack = R.error_slack(hot.scales.astype(np.float32)[ri], base_ip, codec.base_sqnorm[hot.groups[ri]],
                          (q * q).sum(1)[qi], 3.0, metric)
    assert (np.abs(est - exact) <= slack).mean() > 0.999


def _bounded_case(seed, nq, width, k, noise):
    rng = np.random.default_rng(seed)
    true = rng.standard_normal((nq, width)).astype(np.float32)
    err = rng.uniform(-noise, noise, (nq, width)).astype(np.float32)
    valid = rng.random((nq, width)) < 0.9
    calls = []

    def score(qi, pi):
        calls.append(len(qi))
        return true[qi, pi]

    return true, true + err, valid, score, calls


@given(seed=st.integers(0, 2**31), nq=st.integers(1, 5), width=st.integers(0, 60), k=st.integers(1, 12),
       noise=st.floats(0.0, 2.0), step=st.sampled_from([1, 3, None, 100]))
def test_bounded_refine_finds_the_exact_top_k_when_the_bound_holds(seed, nq, width, k, noise, step):
    true, est, valid, score, calls = _bounded_case(seed, nq, width, k, noise)
    slack = np.full_like(est, noise + 1e-6)  # |est - true| <= noise: est + slack bounds the truth
    pos, vals, n_refined = R.bounded_refine(est, slack, valid, k, score, step=step)
    assert pos.shape == vals.shape == (nq, k)
    for i in range(nq):
        want = np.sort(true[i][valid[i]])[::-1][:k]
        got = vals[i][pos[i] >= 0]
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(true[i, pos[i][pos[i] >= 0]], got)
        assert min(k, valid[i].sum()) <= n_refined[i] <= valid[i].sum()
    assert sum(calls) == n_refined.sum()  # every refined row scored exactly once


@given(seed=st.integers(0, 2**31), nq=st.integers(1, 4), width=st.integers(1, 60), k=st.integers(1, 12),
       noise=st.floats(0.0, 2.0))
def test_bounded_refine_sequential_refines_fewest(seed, nq, width, k, noise):
    true, est, valid, score, _ = _bounded_case(seed, nq, width, k, noise)
    slack = np.full_like(est, noise + 1e-6)
    counts = [R.bounded_refine(est, slack, valid, k, score, step=s)[2] for s in (1, k, width)]
    assert np.all(counts[0] <= counts[1]) and np.all(counts[1] <= counts[2])
    assert np.all(counts[1] <= counts[0] + k - 1)


def test_bounded_refine_skips_candidates_that_cannot_win():
    est = np.array([[1.0, 0.9, 0.5, 0.1, 0.0]], np.float32)
    true = est.copy()
    slack = np.full_like(est, 0.05)
    valid = np.ones_like(est, bool)
    pos, vals, n = R.bounded_refine(est, slack, valid, 2, lambda qi, pi: true[qi, pi], step=1)
    assert n.tolist() == [2] and pos.tolist() == [[0, 1]]
    slack[:] = 0.45  # 0.5 + 0.45 >= 0.9: the third may still beat the second
    pos, vals, n = R.bounded_refine(est, slack, valid, 2, lambda qi, pi: true[qi, pi], step=1)
    assert n.tolist() == [3] and pos.tolist() == [[0, 1]]
    with pytest.raises(InvalidArgument):
        R.bounded_refine(est, slack, valid, 0, lambda qi, pi: true[qi, pi])


# --- the study script, tiny -----------------------------------------------------------------


def test_refine_study_smoke(tmp_path, capsys):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "refine_study.py")
    spec = importlib.util.spec_from_file_location("refine_study", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "study.json"
    res = mod.main(["--smoke", "--data-dir", str(tmp_path), "--out", str(out)])
    assert json.loads(out.read_text())["benchmark"] == "refine_study"
    for ds in res["datasets"]:
        rows = {r["tier"]: r for r in ds["tiers"]}
        assert rows["float32"]["recall@10"]["50"] >= rows["hot"]["recall@10"]["50"]
        assert rows["int8"]["bytes_per_vector"] == ds["dim"] + 4
        assert rows["int8"]["recall@10"]["50"] >= rows["hot"]["recall@10"]["50"]
        assert ds["bound"]["rules"]
    assert "rerun:" in capsys.readouterr().out
    assert mod.main(["--summarize", str(out)]) == {}
    tables = capsys.readouterr().out
    assert "| int8 | " in tables and "fixed refine_k" in tables
