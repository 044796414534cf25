"""Per-query preparation in one pass: rotate (+normalise), sign code, block statistics."""

from __future__ import annotations

import numba as nb
import numpy as np

from ._cache import CACHE
from ._kernel import kernel
from .bits import _pack_rows
from .hadamard import LANES, rotate_range


@nb.njit(nogil=True, cache=CACHE)
def prepare_range(x, signs, perms, block, normalize, nblocks, q, codes, alpha, qsums, qsq, i0, i1):
    """For rows i0..i1-1: ``q`` = rotated (unit, if ``normalize``) query, ``codes`` = its
    sign bits, and per block ``alpha`` = mean |q_b| (the 1-bit query's weight) and
    ``qsums`` = sum q_b; ``qsq`` = ||q||^2."""
    rotate_range(x, signs, perms, block, q, i0, i1, normalize)
    _pack_rows(q, codes, i0, i1)
    d = q.shape[1]
    per_block = d // nblocks
    # LANES independent float64 partial sums, so the reductions vectorise (see rotate_range)
    l_abs = np.empty(LANES, dtype=np.float64)
    l_sum = np.empty(LANES, dtype=np.float64)
    l_sq = np.empty(LANES, dtype=np.float64)
    for i in range(i0, i1):
        l_sq[:] = 0.0
        qi = q[i]
        for b in range(nblocks):
            l_abs[:] = 0.0
            l_sum[:] = 0.0
            qb = qi[b * per_block : (b + 1) * per_block]
            for c in range(per_block // LANES):
                src = qb[c * LANES : c * LANES + LANES]
                for t in range(LANES):
                    v = np.float64(src[t])
                    l_abs[t] += abs(v)
                    l_sum[t] += v
                    l_sq[t] += v * v
            alpha[i, b] = l_abs.sum() / per_block
            qsums[i, b] = l_sum.sum()
        qsq[i] = l_sq.sum()


@kernel(parallel=True)
def prepare_rows(x, signs, perms, block, normalize, nblocks, q, codes, alpha, qsums, qsq, chunks):
    """``prepare_range`` over all rows, ``chunks`` pieces in parallel."""
    n = x.shape[0]
    for c in nb.prange(chunks):
        prepare_range(x, signs, perms, block, normalize, nblocks, q, codes, alpha, qsums, qsq,
                      n * c // chunks, n * (c + 1) // chunks)
