"""Per-query preparation in one pass: rotate (+normalise), sign code, block statistics."""

from __future__ import annotations

import numba as nb

from .bits import _pack_rows
from .hadamard import rotate_range


@nb.njit(nogil=True, cache=True)
def prepare_range(x, signs, perms, block, normalize, nblocks, q, codes, alpha, qsums, qsq, i0, i1):
    """For rows i0..i1-1: ``q`` = rotated (unit, if ``normalize``) query, ``codes`` = its
    sign bits, and per block ``alpha`` = mean |q_b| (the 1-bit query's weight) and
    ``qsums`` = sum q_b; ``qsq`` = ||q||^2."""
    rotate_range(x, signs, perms, block, q, i0, i1, normalize)
    _pack_rows(q, codes, i0, i1)
    d = q.shape[1]
    per_block = d // nblocks
    for i in range(i0, i1):
        total_sq = 0.0
        for b in range(nblocks):
            s_abs = 0.0
            s_sum = 0.0
            for j in range(per_block):
                v = q[i, b * per_block + j]
                s_abs += abs(v)
                s_sum += v
                total_sq += v * v
            alpha[i, b] = s_abs / per_block
            qsums[i, b] = s_sum
        qsq[i] = total_sq


@nb.njit(nogil=True, cache=True, parallel=True)
def prepare_rows(x, signs, perms, block, normalize, nblocks, q, codes, alpha, qsums, qsq, chunks):
    """``prepare_range`` over all rows, ``chunks`` pieces in parallel."""
    n = x.shape[0]
    for c in nb.prange(chunks):
        prepare_range(x, signs, perms, block, normalize, nblocks, q, codes, alpha, qsums, qsq,
                      n * c // chunks, n * (c + 1) // chunks)
