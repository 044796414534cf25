"""Bounded top-k selection with a binary min-heap (no full sort).

Candidates are ordered by value, larger is better, and on equal values the smaller
index wins. That total order makes every result independent of scan order and of how
work is split across threads, so the same store returns the same hits every time.

The heap keeps the *worst* kept candidate at the root: a new candidate costs one
comparison when it does not qualify, which is the common case in a long scan.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._cache import CACHE
from ._kernel import kernel


@nb.njit(inline="always")
def _worse(v1, i1, v2, i2):
    """True when candidate (v1, i1) ranks strictly below (v2, i2)."""
    return v1 < v2 or (v1 == v2 and i1 > i2)


@nb.njit(nogil=True, cache=CACHE)
def heap_push(vals, idxs, size, v, ix):
    """Offer (v, ix) to the heap stored in vals/idxs holding ``size`` items; return new size."""
    cap = vals.shape[0]
    if cap == 0:
        return size
    if size < cap:
        pos = size
        while pos > 0:
            parent = (pos - 1) >> 1
            if not _worse(v, ix, vals[parent], idxs[parent]):
                break
            vals[pos] = vals[parent]
            idxs[pos] = idxs[parent]
            pos = parent
        vals[pos] = v
        idxs[pos] = ix
        return size + 1
    if not _worse(vals[0], idxs[0], v, ix):
        return size
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= cap:
            break
        right = child + 1
        if right < cap and _worse(vals[right], idxs[right], vals[child], idxs[child]):
            child = right
        if not _worse(vals[child], idxs[child], v, ix):
            break
        vals[pos] = vals[child]
        idxs[pos] = idxs[child]
        pos = child
    vals[pos] = v
    idxs[pos] = ix
    return size


@nb.njit(nogil=True, cache=CACHE)
def heap_sorted(vals, idxs, size):
    """The heap's first ``size`` items as (values, indices), best first (copies)."""
    out_v = vals[:size].copy()
    out_i = idxs[:size].copy()
    # insertion sort is fine for the sizes involved once the heap has been filled
    # (k <= a few thousand), but use argsort with the tie rule for large heaps.
    order = np.argsort(-out_v, kind="mergesort")
    out_v = out_v[order]
    out_i = out_i[order]
    # enforce the tie rule (smaller index first) inside runs of equal values
    start = 0
    while start < size:
        end = start + 1
        while end < size and out_v[end] == out_v[start]:
            end += 1
        if end - start > 1:
            out_i[start:end] = np.sort(out_i[start:end])
        start = end
    return out_v, out_i


@nb.njit(nogil=True, cache=CACHE)
def topk_largest(values, k):
    """Indices of the ``k`` largest values, best first (ties: smaller index first)."""
    n = values.shape[0]
    k = min(k, n)
    vals = np.empty(k, dtype=values.dtype)
    idxs = np.empty(k, dtype=np.int64)
    size = np.int64(0)  # a literal 0 would compile a second heap_push for its first call
    for i in range(n):
        size = heap_push(vals, idxs, size, values[i], i)
    _, order = heap_sorted(vals, idxs, size)
    return order


@kernel(parallel=True)
def top_mask(values, k, mask):
    """mask[i, j] = True for the ``k`` largest values of each row (ties: smaller j)."""
    n, m = values.shape
    k = min(k, m)
    for i in nb.prange(n):
        vals = np.empty(k, dtype=values.dtype)
        idxs = np.empty(k, dtype=np.int64)
        size = np.int64(0)
        for j in range(m):
            size = heap_push(vals, idxs, size, values[i, j], j)
        for j in range(m):
            mask[i, j] = False
        for t in range(size):
            mask[i, idxs[t]] = True
