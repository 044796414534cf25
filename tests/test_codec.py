"""BitDelta encode/decode: exact identities and statistical error bounds."""

import numpy as np
import pytest

from zenstore.codec import Codec
from zenstore.format import StoreConfig
from zenstore.kernels.reference import pack_signs_ref
from zenstore.rotation import Rotation
from zenstore.train import effective_n_base, train_base


def make_codec(dim, estimator="unbiased", blocks=1, metric="ip", rotation=True, n_base=4, seed=0):
    rng = np.random.default_rng(seed)
    cfg = StoreConfig(dim=dim, metric=metric, n_base=n_base, scale_blocks=blocks,
                      scale_estimator=estimator, rotation="hadamard" if rotation else "none")
    rot = Rotation.random(dim, 1) if rotation else Rotation.identity(dim)
    x = rng.standard_normal((2000, dim)).astype(np.float32) + 2 * rng.standard_normal((1, dim)).astype(np.float32)
    base = train_base(rot.apply(x), n_base, seed=0).astype(np.float16)
    return Codec(cfg, base, rot), x


@pytest.mark.parametrize("dim,blocks", [(64, 1), (384, 2), (7680, 2)])
@pytest.mark.parametrize("rotation", [True, False])
def test_unbiased_scale_identity(dim, blocks, rotation):
    """With s_b = ||r_b||^2 / ||r_b||_1: (x_hat - c)_b . r_b = ||r_b||^2 (up to fp16)."""
    codec, x = make_codec(dim, blocks=blocks, rotation=rotation)
    enc = codec.encode(x[:50])
    xr = codec.prepare(x[:50]).astype(np.float64)
    c = codec.base[enc.groups].astype(np.float64)
    r = xr - c
    np.testing.assert_array_equal(enc.codes, pack_signs_ref(r))
    lam, _ = codec.row_terms(enc.groups, enc.scales, enc.aux)
    xhat = codec.dequantize_rotated(enc.groups, enc.codes, enc.scales, enc.aux).astype(np.float64)
    rhat = xhat - lam[:, None] * c  # the s * sign(r) part
    rb = r.reshape(50, blocks, -1)
    hb = rhat.reshape(50, blocks, -1)
    np.testing.assert_allclose((rb * hb).sum(2), (rb * rb).sum(2), rtol=2e-3)
    # and the aux term makes the dequantized vector exact along its base row
    np.testing.assert_allclose((xhat * c).sum(1), (xr * c).sum(1), rtol=2e-3, atol=1e-3)


def test_l2_scale_is_least_squares():
    codec, x = make_codec(384, estimator="l2", metric="l2")  # l2: lam = 1, x_hat = c + s b
    enc = codec.encode(x[:100])
    xr = codec.prepare(x[:100]).astype(np.float64)
    c = codec.base[enc.groups].astype(np.float64)
    r = xr - c
    xhat = codec.dequantize_rotated(enc.groups, enc.codes, enc.scales, enc.aux)
    err = ((r - (xhat - c)) ** 2).sum(1)
    predicted = (r**2).sum(1) - np.abs(r).sum(1) ** 2 / r.shape[1]  # min over s of ||r - s sign r||^2
    np.testing.assert_allclose(err, predicted, rtol=5e-3, atol=1e-6)


def test_decode_inverts_rotation_and_approximates_input():
    codec, x = make_codec(768)
    enc = codec.encode(x[:200])
    xhat = codec.decode(enc.groups, enc.codes, enc.scales, enc.aux)
    cos = (xhat * x[:200]).sum(1) / np.linalg.norm(xhat, axis=1) / np.linalg.norm(x[:200], axis=1)
    assert cos.mean() > 0.85  # ~sqrt(2/pi) of the residual energy plus the exact base part


def test_inner_product_estimate_is_unbiased_with_predicted_spread():
    """For random queries the estimate's error has mean ~0 and at most the RaBitQ-predicted
    spread (less: the aux term removes the error along the base row)."""
    dim = 1024
    codec, x = make_codec(dim)
    enc = codec.encode(x[:300])
    rng = np.random.default_rng(5)
    q = rng.standard_normal((50, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    xr = codec.prepare(x[:300]).astype(np.float64)
    qr = codec.rotation.apply(q).astype(np.float64)
    est = qr @ codec.dequantize_rotated(enc.groups, enc.codes, enc.scales, enc.aux).astype(np.float64).T
    err = est - qr @ xr.T
    r = xr - codec.base[enc.groups]
    rn = np.linalg.norm(r, axis=1)
    # relative error spread: sqrt(1/eff^2 - 1)/sqrt(D) per unit ||r||, eff = ||r||_1/(sqrt(D)||r||)
    eff = np.abs(r).sum(1) / (np.sqrt(dim) * rn)
    predicted = rn * np.sqrt(1 / eff**2 - 1) / np.sqrt(dim)
    z = err / predicted[None, :]
    assert abs(z.mean()) < 0.05
    assert 0.7 < z.std() < 1.1


def test_l2_term_precision():
    """term = 2 c.(r - s b) - ||x||^2, kept to fp16 relative precision at any scale."""
    codec, x = make_codec(384, metric="l2")
    x = x * 37.0
    enc = codec.encode(x[:100])
    _, term = codec.row_terms(enc.groups, enc.scales, enc.aux)
    xr = codec.prepare(x[:100]).astype(np.float64)
    c = codec.base[enc.groups].astype(np.float64)
    s = enc.scales.astype(np.float64)
    e = (xr - c) - s * np.sign(xr - c)
    want = 2 * (c * e).sum(1) - (xr**2).sum(1)
    np.testing.assert_allclose(term, want, rtol=2e-3)


def test_cosine_normalizes_before_encoding():
    codec, x = make_codec(128, metric="cosine")
    a = codec.encode(x[:10])
    b = codec.encode(x[:10] * 5.0)
    np.testing.assert_array_equal(a.codes, b.codes)
    np.testing.assert_array_equal(a.scales, b.scales)


def test_zero_residual_gets_zero_scale():
    codec, _ = make_codec(64, n_base=1)
    x = codec.rotation.invert(codec.base[:1])  # exactly the base row
    enc = codec.encode(x)
    assert np.all(np.abs(enc.scales.astype(np.float32)) < 1e-3)


def test_effective_n_base():
    assert effective_n_base(1024, 100_000, 32) == 1024
    assert effective_n_base(1024, 3200, 32) == 100
    assert effective_n_base(1024, 5, 32) == 1
