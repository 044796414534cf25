"""Exact ``q . base[g]`` for a few listed base rows per query (the coarse step's candidates).

``coarse.py`` ranks every base row cheaply and keeps a candidate set a few times
``nprobe`` per query; only those need the exact product, and only the probed rows' exact
values reach the scan and the rescoring. The base is read as fp16 bits (2 bytes per value,
widened exactly in the kernel), like ``rescore.dot_rows_f16``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._cache import CACHE
from ._intrinsics import f16_to_f32
from ._kernel import kernel


@nb.njit(nogil=True, cache=CACHE, fastmath=True)
def _dot_listed_range(a, b_bits, idx, out, t0, t1):
    per = idx.shape[1]
    d = a.shape[1]
    for t in range(t0, t1):
        i = t // per
        j = t - i * per
        q = a[i]
        row = b_bits[idx[i, j]]
        acc = np.float32(0.0)
        for k in range(d):
            acc += q[k] * f16_to_f32(row[k])
        out[i, j] = acc


@kernel(parallel=True)
def dot_listed_f16(a, b_bits, idx, out, chunks):
    """out[i, j] = a[i] . b[idx[i, j]] for an fp16 matrix ``b`` given as its uint16 bits.

    The (query, listed row) pairs are split into ``chunks`` equal pieces, so one query
    with many candidates and many queries with a few each both use every thread.
    """
    n = idx.shape[0] * idx.shape[1]
    for c in nb.prange(chunks):
        _dot_listed_range(a, b_bits, idx, out, n * c // chunks, n * (c + 1) // chunks)
