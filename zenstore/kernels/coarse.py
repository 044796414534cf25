"""Kernels of the coarse step of encoding and training: which base row is nearest.

The exact nearest base row of a 7680-d vector against 1,024 rows is a 15.7 MFLOP product
per vector, which made assignment the largest cost of a bulk load. ``zenstore.assign``
ranks the base rows on a few rotated coordinates first (a BLAS product 16x smaller) and
calls :func:`nearest_of_candidates` to pick the exact nearest among each vector's best
few; :func:`sum_rows_by_label` gives k-means its new centroids without a one-hot product.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._kernel import kernel

LANES = 16  # independent partial sums per dot product (dims are multiples of 64)


@kernel(parallel=True)
def nearest_of_candidates(x, base, base_sqnorm, cand, out):
    """``out[i]`` = the candidate ``g`` in ``cand[i]`` with the smallest
    ``base_sqnorm[g] - 2 x[i] . base[g]`` (L2 order; ties: the earlier candidate).

    Dot products run in float32 over ``LANES`` independent sums (so they vectorise),
    then are compared in float64, as the exact path's BLAS product is.
    """
    n, d = x.shape
    c = cand.shape[1]
    for i in nb.prange(n):
        xi = x[i]
        best = np.inf
        best_g = cand[i, 0]
        lanes = np.empty(LANES, dtype=np.float32)
        for k in range(c):
            g = cand[i, k]
            row = base[g]
            lanes[:] = 0.0
            for j0 in range(0, d, LANES):
                xs = xi[j0 : j0 + LANES]
                bs = row[j0 : j0 + LANES]
                for t in range(LANES):
                    lanes[t] += xs[t] * bs[t]
            dist = base_sqnorm[g] - 2.0 * np.float64(lanes.sum())
            if dist < best:
                best = dist
                best_g = g
        out[i] = best_g


@kernel(parallel=True)
def sum_rows_by_label(x, labels, sums, counts, chunks):
    """Add row ``i`` of ``x`` to ``sums[labels[i]]`` (float64) and count it in ``counts``.

    Work splits by columns (each of ``chunks`` threads owns a slice of dimensions), so no
    two threads write the same sum; chunk 0 also counts.
    """
    n, d = x.shape
    for c in nb.prange(chunks):
        j0 = d * c // chunks
        j1 = d * (c + 1) // chunks
        for i in range(n):
            g = labels[i]
            xi = x[i]
            acc = sums[g]
            for j in range(j0, j1):
                acc[j] += xi[j]
            if c == 0:
                counts[g] += 1
