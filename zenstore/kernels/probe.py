"""Probing under a filter: the nearest base rows of each query until they hold enough
matching rows (``planner.filtered_probe``).

Per query, base rows are taken in order of closeness (larger first; on equal values the
smaller index first, the order of ``topk.top_mask``). The first ``nprobe`` taken are the
unfiltered probe; the rows they store, at least ``k`` and at most every matching row,
are the *goal*. Taking goes on until the matching rows taken reach the goal (or every
base row is taken); the taken base rows that hold a match are flagged. A heap over the
query's row gives the order lazily: ``p`` of ``G`` base rows cost ``O(G + p log G)``
instead of a full sort, and one pass gives both the goal and the probe.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types

from ._cache import CACHE
from ._kernel import kernel


@nb.njit(inline="always")
def _better(v1, i1, v2, i2):
    return v1 > v2 or (v1 == v2 and i1 < i2)


@nb.njit(nogil=True, cache=CACHE)
def _sift_down(vals, idxs, pos, size):
    v, ix = vals[pos], idxs[pos]
    while True:
        child = 2 * pos + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _better(vals[right], idxs[right], vals[child], idxs[child]):
            child = right
        if not _better(vals[child], idxs[child], v, ix):
            break
        vals[pos] = vals[child]
        idxs[pos] = idxs[child]
        pos = child
    vals[pos] = v
    idxs[pos] = ix


@kernel(types.void(types.Array(types.float32, 2, "C", readonly=True), types.Array(types.int64, 1, "C", readonly=True),
                   types.Array(types.int64, 1, "C", readonly=True), types.int64, types.int64,
                   types.Array(types.bool_, 2, "C")), parallel=True)
def probe_covering(closeness, group_rows, matches, nprobe, k, mask):
    """mask[q, g] = True for the base rows query q probes (see the module docstring).
    closeness (nq, G) float32; group_rows, matches (G,) int64; mask (nq, G) bool out."""
    nq, g = closeness.shape
    total = 0
    for j in range(g):
        total += matches[j]
    for q in nb.prange(nq):
        vals = closeness[q].copy()
        idxs = np.arange(g)
        for pos in range(g // 2 - 1, -1, -1):  # heapify: best at the root
            _sift_down(vals, idxs, pos, g)
        for j in range(g):
            mask[q, j] = False
        size = g
        taken = 0
        covered = 0
        scanned = 0  # rows the first nprobe base rows store
        goal = 0
        while size > 0:
            if taken >= nprobe and covered >= goal:
                break
            top = idxs[0]
            size -= 1
            vals[0] = vals[size]
            idxs[0] = idxs[size]
            if size > 0:
                _sift_down(vals, idxs, 0, size)
            taken += 1
            covered += matches[top]
            if matches[top] > 0:
                mask[q, top] = True
            if taken <= nprobe:
                scanned += group_rows[top]
                if taken == nprobe:
                    goal = max(min(max(scanned, k), total), 1)
