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
from ._intrinsics import row_dot
from ._kernel import kernel



@kernel(parallel=True)
def nearest_of_candidates(x, base, base_sqnorm, cand, out):
    """``out[i]`` = the candidate ``g`` in ``cand[i]`` with the smallest
    ``base_sqnorm[g] - 2 x[i] . base[g]`` (L2 order; ties: the earlier candidate).

    ``base``: float32, or an fp16 matrix given as its uint16 bits, widened exactly -- the
    same values as its float32 copy and the same arithmetic, so the same answer from half
    the bytes (the codec passes its stored fp16 base). Dot products are
    ``_intrinsics.row_dot`` (float32, register accumulators, fixed order), compared in
    float64 as the exact path's BLAS product is. Measured: docs/benchmarks.md, "Ingest on
    the quiet machine".
    """
    n = x.shape[0]
    c = cand.shape[1]
    if x.shape[1] % 64 != 0 or base.shape[1] != x.shape[1]:
        raise ValueError("nearest_of_candidates: x and base need the same width, a multiple of 64")
    for i in nb.prange(n):
        best = np.inf
        best_g = cand[i, 0]
        for k in range(c):
            g = cand[i, k]
            dist = base_sqnorm[g] - 2.0 * np.float64(row_dot(x, i, base, g))
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
