"""Refine tiers: more bits per vector, kept apart from the 964-byte hot code and read only
for the few candidates a query shortlists (issue 12). Pure compute: no I/O, no LMDB.

Two kinds, both chosen by measurement (docs/refine.md has the tables):

``int8``
    The residual of the hot reconstruction, ``e = x - x_hat`` (rotated space; ``x_hat``
    the dequantized 964-byte vector), as int8 with one float32 scale per vector:
    ``x_ref = x_hat + scale * code``. Its inner product with a query is the hot estimate
    plus one int8 dot product, so refining costs one pass over ``dim`` bytes. Of the int8
    variants measured this one is the most accurate: ``e`` is smaller than the residual
    ``x - c`` against the base row (which in turn beats the rotated vector itself).

``magnitude`` (``bits`` = 1, 2, 3, 4 or 8)
    ``bits`` more bits per coordinate that refine the hot code instead of repeating it:
    the hot sign bit ``b`` of ``r = x - c`` is reused as the sign, and the refine tier
    stores only a uniform quantization ``u`` of ``|r|``, so the pair is a
    (bits + 1)-bit sign-magnitude code of ``r`` at the cost of ``bits``. With
    ``v = b * (2u + 1)`` (odd integers):

        x_ref = (1 + lam) * c + scale * v

    ``scale`` is the least-squares fit of ``v`` to ``r`` (float32) and ``lam`` the fp16
    coefficient that makes ``x_ref . c == x . c``, as the hot code's aux term does (worth
    +0.002 to +0.007 recall@10 at 3 bits, docs/refine.md). The quantizer's clip is the MSE-optimal
    one for Gaussian coordinates (``CLIP_SIGMAS``, an encoder choice: decoding needs only
    the stored scale); 8 bits clip at the row's max |r|. ``u`` is stored as ``bits`` bit
    planes laid out like sign codes, or (8 bits) as one byte per coordinate.

Both kinds store, for the l2 metric only, ``||x||^2`` as float32: ranking by
``2 q . x_ref - ||x||^2`` keeps the true norm, like the hot codec's l2 aux term.

A row of a refine file is ``row_bytes`` bytes: the code bytes, then the float32 scale,
then (magnitude) the fp16 ``lam``, then (l2) the float32 squared norm, little-endian.
:func:`to_rows` / :func:`from_rows` convert between that and a :class:`RefineBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import CorruptStore, InvalidArgument, InvalidVector
from .format import MAGNITUDE_BITS, REFINE_KINDS as KINDS, RefineTier  # noqa: F401 (the tier is part of the format)
from .kernels import refine_reference as _ref
from .kernels.bits import unpack_signs
INT8_LIMIT = 127
# clip of the magnitude quantizer in units of the row's rms(r): the MSE-optimal uniform
# quantizer of a Gaussian with 2^(bits+1) levels (Max 1960), sign included; 8 bits clip at
# the row's max |r| (measured better than 4.3 sigma, docs/refine.md)
CLIP_SIGMAS = {1: 1.99, 2: 2.34, 3: 2.68, 4: 3.01}
FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class RefineBatch:
    """A structure of arrays: row i of each array is the refine data of vector i."""

    codes: np.ndarray | None  # (n, code_bytes) uint8: int8 values, or magnitude bit planes;
    # None where the codes were read in place (``tail_fields``)
    scales: np.ndarray  # (n,) float32
    lam: np.ndarray  # (n,) float16 base coefficient (magnitude; zeros for int8)
    sqnorm: np.ndarray  # (n,) float32 ||x||^2 (stored for l2 only)

    def __len__(self) -> int:
        return self.codes.shape[0]

    def take(self, order: np.ndarray) -> RefineBatch:
        return RefineBatch(self.codes[order], self.scales[order], self.lam[order], self.sqnorm[order])

    @staticmethod
    def concat(parts: list[RefineBatch]) -> RefineBatch:
        return RefineBatch(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in ("codes", "scales", "lam", "sqnorm")))


def _check_dim(dim) -> None:
    if not isinstance(dim, (int, np.integer)) or dim <= 0 or dim % 64:
        raise InvalidArgument(f"dim must be a positive multiple of 64, got {dim!r}")


def _rows_f32(a, n: int, dim: int, what: str) -> np.ndarray:
    if a is None:
        raise InvalidArgument(f"{what} are needed")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if a.shape != (n, dim):
        raise InvalidArgument(f"{what} must have shape {(n, dim)}, got {a.shape}")
    return a


def _check_codes(hot_codes, n: int, dim: int) -> np.ndarray:
    if hot_codes is None:
        raise InvalidArgument("hot codes are needed")
    hot_codes = np.ascontiguousarray(hot_codes)
    if hot_codes.dtype != np.uint64 or hot_codes.shape != (n, dim // 64):
        raise InvalidArgument(f"hot codes must be uint64 of shape {(n, dim // 64)}, got "
                              f"{hot_codes.dtype} {hot_codes.shape}")
    return hot_codes


# --- encode / decode ------------------------------------------------------------------------


def encode(tier: RefineTier, rotated, base_rows, hot_rows, hot_codes, metric: str) -> RefineBatch:
    """Refine data of rotated vectors (cosine: already normalised, as the codec does).

    ``base_rows`` = each vector's base row ``c`` (the fp16 values as float32),
    ``hot_rows`` = its dequantized hot vector (``Codec.dequantize_rotated``) and
    ``hot_codes`` its stored sign code: the int8 kind refines ``hot_rows``, the magnitude
    kind reuses the signs of ``hot_codes``.
    """
    x = np.ascontiguousarray(rotated, dtype=np.float32)
    if x.ndim != 2:
        raise InvalidArgument(f"rotated vectors must be a 2-d array, got shape {x.shape}")
    n, dim = x.shape
    _check_dim(dim)
    c = _rows_f32(base_rows, n, dim, "base rows")
    if not np.isfinite(x).all():
        raise InvalidVector("rotated vectors contain NaN or infinity")
    sqnorm = np.einsum("ij,ij->i", x, x, dtype=np.float64).astype(np.float32) if metric == "l2" \
        else np.zeros(n, np.float32)
    if tier.kind == "int8":
        e = x - _rows_f32(hot_rows, n, dim, "hot rows")
        codes, scales = _encode_int8(e)
        lam = np.zeros(n, np.float16)
    else:
        signs = unpack_signs(_check_codes(hot_codes, n, dim))
        codes, scales, lam = _encode_magnitude(x - c, signs, c, tier.bits)
    return RefineBatch(codes, scales, lam, sqnorm)


def _encode_int8(e: np.ndarray):
    peak = np.abs(e).max(axis=1).astype(np.float64)
    scales = (peak / INT8_LIMIT).astype(np.float32)
    safe = np.where(scales > 0, scales, 1.0).astype(np.float32)
    q = np.clip(np.rint(e / safe[:, None]), -INT8_LIMIT, INT8_LIMIT).astype(np.int8)
    return q.view(np.uint8), scales


def magnitude_levels(r: np.ndarray, signs: np.ndarray, bits: int) -> np.ndarray:
    """``v = sign * (2u + 1)`` (float32 odd integers) of residuals ``r`` given their signs."""
    n, dim = r.shape
    if bits in CLIP_SIGMAS:
        clip = CLIP_SIGMAS[bits] * np.sqrt(np.einsum("ij,ij->i", r, r, dtype=np.float64) / dim)
    else:
        clip = np.abs(r).max(axis=1).astype(np.float64)
    step = clip / (1 << bits)
    safe = np.where(step > 0, step, 1.0)
    u = np.clip(np.floor(np.abs(r) / safe[:, None]), 0, (1 << bits) - 1)
    return (signs * (2 * u + 1)).astype(np.float32)


def _encode_magnitude(r: np.ndarray, signs: np.ndarray, c: np.ndarray, bits: int):
    n, dim = r.shape
    v = magnitude_levels(r, signs, bits)
    num = np.einsum("ij,ij->i", r, v, dtype=np.float64)
    den = np.einsum("ij,ij->i", v, v, dtype=np.float64)
    scales = (num / den).astype(np.float32)  # den >= dim > 0
    # lam: c . (r - scale v) / ||c||^2, with the scale as stored
    err = r - scales[:, None] * v
    csq = np.einsum("ij,ij->i", c, c, dtype=np.float64)
    lam = np.divide(np.einsum("ij,ij->i", c, err, dtype=np.float64), csq, out=np.zeros(n), where=csq > 0)
    lam[np.abs(lam) > FP16_MAX] = 0.0  # a base row of ~zero norm: drop the correction
    u = ((np.abs(v) - 1) / 2).astype(np.uint8)
    if bits == 8:
        return np.ascontiguousarray(u), scales, lam.astype(np.float16)
    planes = [np.packbits((u >> j) & 1, axis=1, bitorder="little") for j in range(bits)]
    return np.ascontiguousarray(np.concatenate(planes, axis=1)), scales, lam.astype(np.float16)


def magnitude_values(codes: np.ndarray, hot_codes: np.ndarray, bits: int) -> np.ndarray:
    """The odd integers ``v`` (float32, (n, dim)) of stored magnitude planes + hot signs."""
    n = codes.shape[0]
    signs = unpack_signs(hot_codes)
    dim = signs.shape[1]
    if bits == 8:
        u = codes.astype(np.int32)
    else:
        planes = np.unpackbits(codes.reshape(n, bits, dim // 8), axis=2, bitorder="little")
        u = (planes.astype(np.int32) << np.arange(bits, dtype=np.int32)[None, :, None]).sum(axis=1)
    return (signs * (2 * u + 1)).astype(np.float32)


def decode(tier: RefineTier, batch: RefineBatch, base_rows, hot_rows, hot_codes) -> np.ndarray:
    """The refined vectors in the rotated space (float32 (n, dim))."""
    n = len(batch)
    if tier.kind == "int8":
        hot = np.asarray(hot_rows, dtype=np.float32)
        return hot + batch.scales[:, None] * batch.codes.view(np.int8).astype(np.float32)
    c = np.asarray(base_rows, dtype=np.float32)
    v = magnitude_values(batch.codes, _check_codes(hot_codes, n, c.shape[1]), tier.bits)
    return (1 + batch.lam.astype(np.float32))[:, None] * c + batch.scales[:, None] * v


# --- rows of a refine file ------------------------------------------------------------------


def to_rows(tier: RefineTier, batch: RefineBatch, dim: int, metric: str) -> np.ndarray:
    """(n, row_bytes) uint8: the fixed-size records a refine file stores, in row order."""
    n, cb = len(batch), tier.code_bytes(dim)
    rows = np.empty((n, tier.row_bytes(dim, metric)), dtype=np.uint8)
    rows[:, :cb] = batch.codes
    rows[:, cb:cb + 4] = batch.scales.astype("<f4").view(np.uint8).reshape(n, 4)
    pos = cb + 4
    if tier.kind == "magnitude":
        rows[:, pos:pos + 2] = batch.lam.astype("<f2").view(np.uint8).reshape(n, 2)
        pos += 2
    if metric == "l2":
        rows[:, pos:pos + 4] = batch.sqnorm.astype("<f4").view(np.uint8).reshape(n, 4)
    return rows


def from_rows(tier: RefineTier, rows, dim: int, metric: str) -> RefineBatch:
    """Parse records written by :func:`to_rows` (e.g. gathered from a mapped file)."""
    rows = np.asarray(rows, dtype=np.uint8)
    want = tier.row_bytes(dim, metric)
    if rows.ndim != 2 or rows.shape[1] != want:
        raise CorruptStore(f"refine rows of tier {tier.name} must be {want} bytes, got shape {rows.shape}")
    cb = tier.code_bytes(dim)
    fields = tail_fields(tier, rows[:, cb:], metric)
    return RefineBatch(np.ascontiguousarray(rows[:, :cb]), fields.scales, fields.lam, fields.sqnorm)


def tail_fields(tier: RefineTier, tails, metric: str) -> RefineBatch:
    """The scalar fields of records whose code bytes stay in the mapped file (search reads
    those in place, ``kernels/refine.py``): ``tails`` (n, row_bytes - code_bytes) uint8 are
    the bytes after each record's codes. The batch's ``codes`` are None."""
    tails = np.asarray(tails, dtype=np.uint8)
    want = tier.row_bytes(64, metric) - tier.code_bytes(64)  # the same at every width
    if tails.ndim != 2 or tails.shape[1] != want:
        raise CorruptStore(f"refine record tails of tier {tier.name} must be {want} bytes, got shape {tails.shape}")
    n = tails.shape[0]

    def field(a, b, dtype):
        return np.ascontiguousarray(tails[:, a:b]).view(dtype).reshape(n)

    scales = field(0, 4, "<f4").astype(np.float32)
    pos = 4
    lam = np.zeros(n, np.float16)
    if tier.kind == "magnitude":
        lam = field(pos, pos + 2, "<f2").astype(np.float16)
        pos += 2
    sqnorm = field(pos, pos + 4, "<f4").astype(np.float32) if metric == "l2" else np.zeros(n, np.float32)
    return RefineBatch(None, scales, lam, sqnorm)


# --- scoring --------------------------------------------------------------------------------


def refined_ip(tier: RefineTier, batch: RefineBatch, queries, qslot, *, hot_ip=None, base_ip=None,
               hot_codes=None, dots=None) -> np.ndarray:
    """``q . x_ref`` (float32) of (query, row) pairs; row t of ``batch`` is scored against
    rotated query ``queries[qslot[t]]``.

    int8 needs ``hot_ip`` = q . x_hat of each pair (the hot rescoring computes it);
    magnitude needs ``base_ip`` = q . c and, without ``dots``, ``hot_codes`` (uint64) of each pair. ``dots``
    (the kernel's integer-code dot products, see ``kernels/refine.py``) are computed
    with the numpy reference when not given.
    """
    qslot = np.asarray(qslot, dtype=np.int64)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if tier.kind == "int8":
        if hot_ip is None:
            raise InvalidArgument("the int8 refine tier needs hot_ip (q . x_hat of each pair)")
        if dots is None:
            _need_codes(batch)
            dots = _ref.int8_dots_ref(batch.codes.view(np.int8), q, qslot)
        return (np.asarray(hot_ip, np.float32) + batch.scales * dots).astype(np.float32)
    if base_ip is None or (dots is None and hot_codes is None):
        raise InvalidArgument("the magnitude refine tier needs base_ip (q . c) and hot_codes of each pair")
    if dots is None:
        _need_codes(batch)
        dots = _ref.magnitude_dots_ref(batch.codes, np.ascontiguousarray(hot_codes).view(np.uint8), tier.bits, q, qslot)
    lam = batch.lam.astype(np.float32)
    return ((1 + lam) * np.asarray(base_ip, np.float32) + batch.scales * dots).astype(np.float32)


def _need_codes(batch: RefineBatch) -> None:
    if batch.codes is None:
        raise InvalidArgument("refined_ip needs the kernels' dots for a batch whose codes were read in place")


def ranking_values(ip: np.ndarray, batch: RefineBatch, metric: str) -> np.ndarray:
    """Kernels' ranking form: the inner product (cosine, ip) or ``2 ip - ||x||^2`` (l2,
    = ``||q||^2 - ||q - x||^2`` with the true norm)."""
    if metric == "l2":
        return (2 * ip - batch.sqnorm).astype(np.float32)
    return np.asarray(ip, dtype=np.float32)


# --- the error-bounded shortlist ------------------------------------------------------------
#
# The hot estimate of a row is q . x_hat; its error is q . e with e = x - x_hat. The aux
# term makes e orthogonal to the row's base row c, so only q's component q_perp orthogonal
# to c meets it, and after the random rotation e looks like a random direction in that
# complement: q . e ~ ||q_perp|| ||e|| / sqrt(dim) * N(0, 1) (RaBitQ's Theorem 3.2 has the
# same O(||e|| / sqrt(dim)) shape). ||e|| is not stored, but the hot scale is
# s = ||r||^2 / ||r||_1 and ||r - s b||^2 = s^2 dim - ||r||^2 exactly, so
# ||e|| / sqrt(dim) <= s: the slack ``multiplier * s * ||q_perp||`` needs no stored byte
# (measured ||e|| / (s sqrt(dim)) = 0.603, p99 0.61-0.64). ``multiplier`` is calibrated by
# measurement (docs/refine.md, cosine stores).
#
# l2 stores rank by 2 (q . c + s q . b) + aux_term, whose error is -2 (q - c) . (r - s b):
# the same argument with q - c in place of q_perp and a factor 2 (not measured on data).


def error_slack(scales, base_ip, base_sqnorm, qsq, multiplier: float, metric: str = "cosine") -> np.ndarray:
    """Per (query, row) pair: the half-width of the hot estimate's error bound, in the
    kernels' ranking units: ``multiplier * s * ||q_perp||`` (cosine, ip) or
    ``2 * multiplier * s * ||q - c||`` (l2).

    ``scales`` (..., blocks): each pair's row's hot scales (their rms is used when there are
    several blocks); ``base_ip`` = q . c, ``base_sqnorm`` = ||c||^2 and ``qsq`` = ||q||^2,
    each of shape (...).
    """
    s = np.asarray(scales, dtype=np.float64)
    if s.ndim < 1:
        raise InvalidArgument("scales need a trailing blocks axis")
    s = np.sqrt((s * s).mean(axis=-1))
    base_ip = np.asarray(base_ip, dtype=np.float64)
    csq = np.asarray(base_sqnorm, dtype=np.float64)
    qsq = np.asarray(qsq, dtype=np.float64)
    if metric == "l2":
        return (2 * multiplier * s * np.sqrt(np.maximum(qsq - 2 * base_ip + csq, 0.0))).astype(np.float32)
    along = np.divide(base_ip * base_ip, csq, out=np.zeros_like(base_ip), where=csq > 0)
    qperp = np.sqrt(np.maximum(qsq - along, 0.0))
    return (multiplier * s * qperp).astype(np.float32)


def bounded_refine(est, slack, valid, k: int, score_pairs, step: int | None = None):
    """Refine only the candidates that can still reach the top ``k``.

    ``est``, ``slack`` (nq, L): each candidate's hot estimate (higher is better) and the
    half-width of its error bound in the same units; ``valid`` (nq, L) marks filled
    entries. Candidates are visited in order of their upper bound ``est + slack``,
    ``step`` per query and round (default ``k``); after each round ``tau`` = the k-th best
    refined value so far, and a query stops at its first candidate whose upper bound is
    below ``tau`` -- every later one is lower still, so (if the bound holds) none of them
    can enter the top k, and they are never read. ``step=1`` is the sequential rule; a
    larger step costs at most ``step - 1`` extra rows per query and needs fewer rounds
    (each round is one batched ``score_pairs(qidx, pos)`` call, which returns the refined
    values of the (query, candidate position) pairs it is given).

    Returns (positions (nq, k) int64, -1 where fewer candidates; values (nq, k) float32;
    rows refined per query (nq,) int64).
    """
    est = np.asarray(est, dtype=np.float32)
    slack = np.asarray(slack, dtype=np.float32)
    valid = np.asarray(valid, dtype=bool)
    if k < 1:
        raise InvalidArgument(f"k must be >= 1, got {k}")
    step = k if step is None else step
    if step < 1:
        raise InvalidArgument(f"step must be >= 1, got {step}")
    nq, width = est.shape
    ub = np.where(valid, est + slack, -np.inf).astype(np.float32)
    order = np.argsort(-ub, axis=1, kind="stable")
    ub_sorted = np.take_along_axis(ub, order, axis=1)
    refined = np.full((nq, width), -np.inf, dtype=np.float32)
    done = np.zeros((nq, width), dtype=bool)
    ptr = np.zeros(nq, dtype=np.int64)
    tau = np.full(nq, -np.inf, dtype=np.float32)
    active = valid.any(axis=1)
    lanes = np.arange(step)
    kk = min(k, width)
    while active.any():
        idx = ptr[:, None] + lanes[None, :]
        inside = idx < width
        idx = np.minimum(idx, max(width - 1, 0))
        ubs = np.take_along_axis(ub_sorted, idx, axis=1)
        # ub_sorted is descending and tau fixed within a round: the selection is a prefix
        sel = active[:, None] & inside & (ubs > -np.inf) & (ubs >= tau[:, None])
        qi, j = np.nonzero(sel)
        if len(qi):
            pos = order[qi, idx[qi, j]]
            refined[qi, pos] = score_pairs(qi, pos)
            done[qi, pos] = True
        count = sel.sum(axis=1)
        ptr += count
        active &= (count == step) & (ptr < width)
        tau = -np.partition(-refined, kk - 1, axis=1)[:, kk - 1]
    top = np.argsort(-refined, axis=1, kind="stable")[:, :k]
    vals = np.take_along_axis(refined, top, axis=1)
    pos = np.where(np.take_along_axis(done, top, axis=1), top, -1)
    if pos.shape[1] < k:
        pos = np.pad(pos, ((0, 0), (0, k - pos.shape[1])), constant_values=-1)
        vals = np.pad(vals, ((0, 0), (0, k - vals.shape[1])), constant_values=-np.inf)
    return pos.astype(np.int64), vals.astype(np.float32), ptr
