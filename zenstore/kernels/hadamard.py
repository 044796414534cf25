"""Structured random rotation kernels: sign flips, permutations, block Walsh-Hadamard."""

from __future__ import annotations

import numba as nb
import numpy as np

from ._cache import CACHE
from ._intrinsics import hadamard16
from ._kernel import kernel

LANES = 16  # independent partial sums in reductions (dims are multiples of 64)


@nb.njit(nogil=True, cache=CACHE, inline="always")
def _fwht_row(v, block):
    """Unnormalised Walsh-Hadamard transform of each ``block``-sized slice of vector v
    (callers scale by 1/sqrt(block) per application). ``block`` >= 16 (coded widths are
    multiples of 64, so blocks are >= 64).

    The first four butterfly stages (strides 1, 2, 4, 8) run inside one 16-float vector per
    16 values (``_intrinsics.hadamard16``); the strided loops of the later stages vectorize.
    Measured per 7680-d row and round (block 512), both versions in one harness: 9.4 us with
    the earlier 8-point scalar block for the first three stages, 6.2 us now (results bit for
    bit equal; docs/benchmarks.md, "Rescoring with lane masks").
    """
    d = v.shape[0]
    for j in range(0, d, 16):
        hadamard16(v, j)
    h = 16
    while h < block:
        for start in range(0, d, 2 * h):
            # index slices with a bare range index: `v[start + k]` makes numba emit a
            # negative-index check per access, which stops LLVM vectorising (14 -> 2.3 us
            # per 7680-d row and round, measured)
            lo = v[start : start + h]
            hi = v[start + h : start + 2 * h]
            for k in range(h):
                a = lo[k]
                b = hi[k]
                lo[k] = a + b
                hi[k] = a - b
        h *= 2


@nb.njit(nogil=True, cache=CACHE)
def rotate_range(x, signs, perms, block, out, i0, i1, normalize):
    """out[i] = (H P_r S_r) ... (H P_1 S_1) x[i] for rows i0..i1-1 and the rounds in signs/perms,
    scaled to unit length first when ``normalize`` (cosine), in one pass per row.

    Round step: ``y[j] = s[perm[j]] * x[perm[j]]`` then the block Hadamard transform; the
    1/sqrt(block) factors and the normalisation are applied once, at the end.
    """
    d = x.shape[1]
    rounds = signs.shape[0]
    cur = np.empty(d, dtype=np.float32)
    nxt = np.empty(d, dtype=np.float32)
    lanes = np.empty(LANES, dtype=np.float64)
    for i in range(i0, i1):
        # ||x||^2 in LANES independent float64 sums: a single running sum is one serial
        # chain of d dependent adds (~7 us per 7680-d row); lanes vectorise
        lanes[:] = 0.0
        xi = x[i]
        for j0 in range(0, d, LANES):
            src = xi[j0 : j0 + LANES]
            dst = cur[j0 : j0 + LANES]
            for t in range(LANES):
                v = src[t]
                dst[t] = v
                lanes[t] += np.float64(v) * v
        sq = lanes.sum()
        for r in range(rounds):
            perm = perms[r]
            sign = signs[r]
            for j in range(d):
                p = perm[j]
                nxt[j] = cur[p] * sign[p]
            _fwht_row(nxt, block)
            cur, nxt = nxt, cur
        scale = (1.0 / np.sqrt(block)) ** rounds
        if normalize and sq > 0:
            scale /= np.sqrt(sq)
        f = np.float32(scale)
        dst = out[i]
        for j in range(d):
            dst[j] = cur[j] * f


@kernel(parallel=True)
def rotate_rows(x, signs, perms, block, out, chunks, normalize):
    """``rotate_range`` over all rows, ``chunks`` pieces in parallel."""
    n = x.shape[0]
    for c in nb.prange(chunks):
        rotate_range(x, signs, perms, block, out, n * c // chunks, n * (c + 1) // chunks, normalize)


@kernel(parallel=True)
def unrotate_rows(y, signs, perms, block, out):
    """Inverse of ``rotate_rows`` (without normalisation)."""
    n, d = y.shape
    rounds = signs.shape[0]
    scale = np.float32((1.0 / np.sqrt(block)) ** rounds)
    for i in nb.prange(n):
        cur = np.empty(d, dtype=np.float32)
        nxt = np.empty(d, dtype=np.float32)
        for j in range(d):
            cur[j] = y[i, j]
        for r in range(rounds - 1, -1, -1):
            _fwht_row(cur, block)
            for j in range(d):
                p = perms[r, j]
                nxt[p] = cur[j] * signs[r, p]
            cur, nxt = nxt, cur
        for j in range(d):
            out[i, j] = cur[j] * scale
