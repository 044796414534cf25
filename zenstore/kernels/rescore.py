"""Exact dequantized scores straight from the sign bits, without building float vectors.

The dequantized vector of row ``i`` in group ``g`` is ``lam[i] * base[g] + s[i, b] * sign_i``
in block ``b``, so its inner product with a full-precision query ``q`` is

    ip(i) = lam[i] * (q . base[g]) + sum_b s[i, b] * (2 * S_b(i) - sum(q_b))

where ``S_b(i)`` is the sum of the query coordinates whose bit is set in block ``b``.
``S_b`` is read from per-nibble lookup tables: ``lut[p, v]`` is the sum of the query
coordinates of nibble ``p`` (4 dims) selected by the bits of ``v``, so a 7680-dim code
costs 1920 table reads instead of 7680 multiply-adds. Nibble tables (123 KB per 7680-d
query) stay in L2 where byte tables (983 KB) did not: measured 0.57 vs 0.53 us per
candidate for one query in cache, but 10 vs 72 us to build and far fewer cache misses when
a batch of queries is rescored together. The final value uses the same
``ip_w * ip + term[i]`` form as the coarse pass.

The kernels take candidates already gathered out of their segments (one row of codes,
scales and terms per (query, row) pair; ``search.exact_scores``), so one call covers
candidates from any number of segments.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._cache import CACHE
from ._intrinsics import f16_to_f32
from ._kernel import kernel


@nb.njit(nogil=True, cache=CACHE)
def build_nibble_lut(q, out):
    """Fill ``out[p, v]`` = sum of q[4p + j] over the set bits j of v; out is (d/4, 16)."""
    for p in range(q.shape[0] // 4):
        out[p, 0] = 0.0
        for j in range(4):
            step = 1 << j
            qj = q[4 * p + j]
            for v in range(step):
                out[p, step + v] = out[p, v] + qj


@kernel(parallel=True)
def build_nibble_luts(queries, out):
    """``build_nibble_lut`` for every row of a (nq, d) query array into (nq, d/4, 16)."""
    for i in nb.prange(queries.shape[0]):
        build_nibble_lut(queries[i], out[i])


@nb.njit(nogil=True, cache=CACHE, inline="always")
def _score(code, scale_row, lam, term, off, lut, qsum_row, ip_w):
    """Ranking value ``ip_w * ip + term`` of one code row (bytes) against one query's tables."""
    nblocks = scale_row.shape[0]
    bytes_per_block = code.shape[0] // nblocks  # 8 x whole words: a multiple of 4
    ip = off * lam
    for b in range(nblocks):
        # 8 independent sums (2 nibbles x 4 bytes) so the table reads overlap
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
        p0 = b * bytes_per_block
        # views indexed by a bare range index: no per-access negative-index checks
        block_code = code[p0 : p0 + bytes_per_block]
        table = lut[2 * p0 : 2 * (p0 + bytes_per_block)]
        for u in range(bytes_per_block // 4):
            p = 4 * u
            v0 = block_code[p]
            v1 = block_code[p + 1]
            v2 = block_code[p + 2]
            v3 = block_code[p + 3]
            a0 += table[2 * p, v0 & 15]
            a1 += table[2 * p + 1, v0 >> 4]
            a2 += table[2 * p + 2, v1 & 15]
            a3 += table[2 * p + 3, v1 >> 4]
            a4 += table[2 * p + 4, v2 & 15]
            a5 += table[2 * p + 5, v2 >> 4]
            a6 += table[2 * p + 6, v3 & 15]
            a7 += table[2 * p + 7, v3 >> 4]
        set_sum = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))
        ip += scale_row[b] * (np.float32(2.0) * set_sum - qsum_row[b])
    return ip_w * ip + term


@nb.njit(nogil=True, cache=CACHE)
def rescore_range(codes_u8, scales, rowlam, rowterm, qoff, qslot, luts, qsums, ip_w, out, t0, t1):
    """Exact dequantized ranking values of the gathered pairs t0..t1-1.

    Pair ``t`` is a stored row given by its own code bytes ``codes_u8[t]``, ``scales[t]``,
    ``rowlam[t]``, ``rowterm[t]`` and ``qoff[t]`` = q . base[g] for its query and group;
    ``qslot[t]`` is its query's index in ``luts`` / ``qsums``.
    """
    for t in range(t0, t1):
        s = qslot[t]
        out[t] = _score(codes_u8[t], scales[t], rowlam[t], rowterm[t], qoff[t], luts[s],
                        qsums[s], ip_w)


@kernel(parallel=True)
def rescore(codes_u8, scales, rowlam, rowterm, qoff, qslot, luts, qsums, ip_w, out, chunks):
    """``rescore_range`` over all pairs, ``chunks`` pieces in parallel (tables shared):
    for a few queries with many candidates each."""
    n = qslot.shape[0]
    for c in nb.prange(chunks):
        rescore_range(codes_u8, scales, rowlam, rowterm, qoff, qslot, luts, qsums, ip_w, out,
                      n * c // chunks, n * (c + 1) // chunks)


@kernel(parallel=True)
def rescore_by_query(codes_u8, scales, rowlam, rowterm, qoff, qstart, queries, qsums, ip_w, out,
                     chunks):
    """Exact ranking values for a batch whose pairs are sorted by query: the pairs of query
    ``q`` are ``qstart[q] .. qstart[q + 1] - 1``.

    Queries are split into ``chunks`` pieces in parallel; each thread builds one query's
    nibble tables at a time into a private buffer (123 KB at 7680 dims, stays in L2) and
    scores that query's pairs against it: one parallel launch per batch, and no batch of
    tables spilling out of cache.
    """
    nq = qstart.shape[0] - 1
    d = queries.shape[1]
    for c in nb.prange(chunks):
        lut = np.empty((d // 4, 16), dtype=np.float32)
        for q in range(nq * c // chunks, nq * (c + 1) // chunks):
            a = qstart[q]
            b = qstart[q + 1]
            if a == b:
                continue
            build_nibble_lut(queries[q], lut)
            for t in range(a, b):
                out[t] = _score(codes_u8[t], scales[t], rowlam[t], rowterm[t], qoff[t], lut,
                                qsums[q], ip_w)


@nb.njit(nogil=True, cache=CACHE, fastmath=True)
def _dot_rows_f16_range(a, b_bits, out, j0, j1):
    m, d = a.shape
    for j in range(j0, j1):
        row = b_bits[j]
        for i in range(m):
            q = a[i]
            acc = np.float32(0.0)
            for k in range(d):
                acc += q[k] * f16_to_f32(row[k])
            out[i, j] = acc


@kernel(parallel=True)
def dot_rows_f16(a, b_bits, out, chunks):
    """out[i, j] = a[i] . b[j] for an fp16 matrix ``b`` given as its uint16 bits.

    For a handful of queries against the base matrix: streams 2 bytes per base value
    instead of 4 (BLAS, for large batches, needs float32 and pays a thread wake-up that
    dwarfs a single query's work).
    """
    n = b_bits.shape[0]
    for c in nb.prange(chunks):
        _dot_rows_f16_range(a, b_bits, out, n * c // chunks, n * (c + 1) // chunks)
