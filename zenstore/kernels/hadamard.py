"""Structured random rotation kernels: sign flips, permutations, block Walsh-Hadamard."""

from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(nogil=True, cache=True, inline="always")
def _fwht_row(v, block):
    """Orthonormal Walsh-Hadamard transform of each ``block``-sized slice of vector v."""
    d = v.shape[0]
    norm = np.float32(1.0 / np.sqrt(block))
    for start in range(0, d, block):
        h = 1
        while h < block:
            for j in range(0, block, 2 * h):
                base = start + j
                # range(n) + offset: the form LLVM vectorizes (see kernels/scan.py)
                for k in range(h):
                    a = v[base + k]
                    b = v[base + k + h]
                    v[base + k] = a + b
                    v[base + k + h] = a - b
            h *= 2
    for k in range(d):
        v[k] *= norm


@nb.njit(nogil=True, cache=True)
def rotate_range(x, signs, perms, block, out, i0, i1):
    """out[i] = (H P_r S_r) ... (H P_1 S_1) x[i] for rows i0..i1-1 and the rounds in signs/perms.

    Round step: ``y[j] = s[perm[j]] * x[perm[j]]`` then the block Hadamard transform.
    """
    d = x.shape[1]
    rounds = signs.shape[0]
    for i in range(i0, i1):
        cur = np.empty(d, dtype=np.float32)
        nxt = np.empty(d, dtype=np.float32)
        for j in range(d):
            cur[j] = x[i, j]
        for r in range(rounds):
            for j in range(d):
                p = perms[r, j]
                nxt[j] = cur[p] * signs[r, p]
            _fwht_row(nxt, block)
            cur, nxt = nxt, cur
        for j in range(d):
            out[i, j] = cur[j]


@nb.njit(nogil=True, cache=True, parallel=True)
def rotate_rows(x, signs, perms, block, out, chunks):
    """``rotate_range`` over all rows, ``chunks`` pieces in parallel."""
    n = x.shape[0]
    for c in nb.prange(chunks):
        rotate_range(x, signs, perms, block, out, n * c // chunks, n * (c + 1) // chunks)


@nb.njit(nogil=True, cache=True, parallel=True)
def unrotate_rows(y, signs, perms, block, out):
    """Inverse of ``rotate_rows``."""
    n, d = y.shape
    rounds = signs.shape[0]
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
            out[i, j] = cur[j]
