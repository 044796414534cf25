"""Exact dequantized scores read in place from a segment's sign bits, no tables, no gather.

The ranking value of row ``r`` (group ``g``) for a full-precision query ``q`` is

    ip_w * (lam[r] * (q . base[g]) + sum_b s[r, b] * (q_b . sign_b(r))) + term[r]

where ``sign_b(r)`` is the row's +-1 residual signs in block ``b``. ``rescore.py`` reads
``q . sign`` from per-query nibble tables (1,920 dependent table reads per 7680-d row,
plus a 123 KB table built per query) over codes first copied out of their segments.
Here ``q . sign`` is a masked sum (``_intrinsics.signed_sum32``): each 16 bits of a code
word are the lane mask of one 16-float add, and the rows are read where they are mapped
(``rows`` index the segment), the rows two pairs ahead prefetched (without that, the
random row reads cost what the copy did). Measured in benchmarks/stages.py ("rescore")
and, kernel alone, in docs/benchmarks.md ("Rescoring with lane masks").

Codes are the segment's uint64 words viewed as uint32 (little-endian: bit ``j`` of word
``w`` is coordinate ``32 w + j``, as ``pack_signs`` writes them). Summation order differs
from the table kernels': values agree to float32 rounding, not bit for bit; one kernel
scores every path (single query, batch, rerank), so those agree exactly with each other.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types

from ._cache import CACHE
from ._intrinsics import prefetch, signed_sum32
from ._kernel import kernel

AHEAD = 2  # the row of pair t + AHEAD is prefetched while pair t is scored
LINE_WORDS = 16  # uint32 words per 64-byte cache line


def _array(dtype, ndim: int, readonly: bool = True):
    return types.Array(dtype, ndim, "C", readonly=readonly)


_ARGS = (_array(types.uint32, 2), _array(types.float32, 2), _array(types.float32, 1),
         _array(types.float32, 1),  # codes (as uint32 words), scales, rowlam, rowterm: the segment's
         _array(types.int64, 1), _array(types.float32, 1), _array(types.int64, 1),  # rows, qoff, qslot
         _array(types.float32, 2), types.float32,  # queries, ip_w
         _array(types.float32, 1, readonly=False))  # out


@nb.njit(nogil=True, cache=CACHE, fastmath=True)
def _span(codes, scales, rowlam, rowterm, rows, qoff, qslot, queries, ip_w, out, t0, t1):
    nblocks = scales.shape[1]
    per_block = codes.shape[1] // nblocks
    for t in range(t0, t1):
        if t + AHEAD < t1:
            ahead = rows[t + AHEAD]
            for w in range(0, codes.shape[1], LINE_WORDS):
                prefetch(codes, ahead, w)
        r = rows[t]
        qi = qslot[t]
        ip = qoff[t] * rowlam[r]
        for b in range(nblocks):
            ip += scales[r, b] * signed_sum32(codes, r, b * per_block, (b + 1) * per_block, queries, qi)
        out[t] = ip_w * ip + rowterm[r]


@kernel(types.void(*_ARGS, types.int64, types.int64))
def rescore_rows_range(codes, scales, rowlam, rowterm, rows, qoff, qslot, queries, ip_w, out, t0, t1):
    """Ranking values of pairs t0..t1-1: pair ``t`` is segment row ``rows[t]`` against
    query ``queries[qslot[t]]``, whose ``q . base[g]`` for the row's group is ``qoff[t]``."""
    _span(codes, scales, rowlam, rowterm, rows, qoff, qslot, queries, ip_w, out, t0, t1)


@kernel(types.void(*_ARGS, types.int64), parallel=True)
def rescore_rows(codes, scales, rowlam, rowterm, rows, qoff, qslot, queries, ip_w, out, chunks):
    """``rescore_rows_range`` over all pairs in ``chunks`` parallel pieces (each pair's
    value does not depend on the split)."""
    n = rows.shape[0]
    for c in nb.prange(chunks):
        _span(codes, scales, rowlam, rowterm, rows, qoff, qslot, queries, ip_w, out,
              n * c // chunks, n * (c + 1) // chunks)
