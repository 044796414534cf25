"""Refine-tier dot products of gathered (query, row) pairs (``zenstore/refine.py``).

Each pair ``t`` is one gathered refine row scored against rotated query
``queries[qslot[t]]``; the caller turns the integer-code dot product into a score with the
row's scale and offset (``refine.refined_ip``), which costs O(1) per pair in numpy. The
dot products, O(dim) per pair, are here:

- ``int8_dots``: ``sum_i q_i * code_i`` for int8 codes;
- ``magnitude_dots``: ``sum_i q_i * sign_i * (2 u_i + 1)`` with the sign from the row's
  hot code bytes and ``u`` from ``bits`` bit planes (plane ``j`` = bit ``j`` of ``u``,
  packed like the sign code: dimension ``8p + k`` is bit ``k`` of byte ``p``).

Sums run in independent float32 lanes so LLVM can vectorise them without reassociating
(no ``fastmath``). Pairs are split across threads in ``chunks`` pieces, like the rescoring
kernels; ``*_range`` is the one-thread body, for a few pairs.
"""

from __future__ import annotations

import numba as nb
import numpy as np

LANES = 16


@nb.njit(nogil=True, cache=True)
def int8_dots_range(codes, queries, qslot, out, t0, t1):
    """out[t] = queries[qslot[t]] . codes[t] (int8 (n, d)) for pairs t0..t1-1."""
    d = codes.shape[1]
    acc = np.empty(LANES, dtype=np.float32)
    for t in range(t0, t1):
        code = codes[t]
        q = queries[qslot[t]]
        acc[:] = 0.0
        for c in range(d // LANES):
            src_q = q[c * LANES : c * LANES + LANES]
            src_c = code[c * LANES : c * LANES + LANES]
            for j in range(LANES):
                acc[j] += src_q[j] * np.float32(src_c[j])
        total = np.float32(0.0)
        for j in range(d - d % LANES, d):  # dims are multiples of 64: normally empty
            total += q[j] * np.float32(code[j])
        out[t] = acc.sum() + total


@nb.njit(nogil=True, cache=True, parallel=True)
def int8_dots(codes, queries, qslot, out, chunks):
    """``int8_dots_range`` over all pairs, ``chunks`` pieces in parallel."""
    n = qslot.shape[0]
    for c in nb.prange(chunks):
        int8_dots_range(codes, queries, qslot, out, n * c // chunks, n * (c + 1) // chunks)


@nb.njit(nogil=True, cache=True)
def magnitude_dots_range(planes, hot, bits, queries, qslot, out, t0, t1):
    """out[t] = sum_i q_i * s_i * (2 u_i + 1) for pairs t0..t1-1.

    ``hot`` (n, d/8) uint8: the rows' sign-code bytes (bit set: s = +1, else -1);
    ``planes`` (n, bits * d/8) uint8: plane j holds bit j of every u_i.
    """
    nbytes = hot.shape[1]
    acc = np.empty(8, dtype=np.float32)
    u = np.empty(8, dtype=np.int32)
    for t in range(t0, t1):
        h_row = hot[t]
        p_row = planes[t]
        q = queries[qslot[t]]
        acc[:] = 0.0
        for p in range(nbytes):
            h = np.int32(h_row[p])
            u[:] = 0
            for j in range(bits):
                m = np.int32(p_row[j * nbytes + p])
                for k in range(8):
                    u[k] += ((m >> k) & 1) << j
            src_q = q[8 * p : 8 * p + 8]
            for k in range(8):
                sign = np.float32(2 * ((h >> k) & 1) - 1)
                acc[k] += src_q[k] * sign * np.float32(2 * u[k] + 1)
        out[t] = acc.sum()


@nb.njit(nogil=True, cache=True, parallel=True)
def magnitude_dots(planes, hot, bits, queries, qslot, out, chunks):
    """``magnitude_dots_range`` over all pairs, ``chunks`` pieces in parallel."""
    n = qslot.shape[0]
    for c in nb.prange(chunks):
        magnitude_dots_range(planes, hot, bits, queries, qslot, out, n * c // chunks, n * (c + 1) // chunks)
