"""Refine-tier dot products of (query, row) pairs (``zenstore/refine.py``).

Each pair ``t`` is row ``rows[t]`` of a segment's refine records scored against rotated
query ``queries[qslot[t]]``. The kernels read the records in place from the mapped refine
file (``table``: its (rows, row_bytes) records, code bytes first; the tail fields are not
read here), so refining a candidate copies nothing but its result. Gathering the records
into an array first (7.7 KB each at 7680-d, copied twice) made the whole refine stage ~3x
slower: 260 vs 80 us per query (100k docs, nprobe 12, 1 thread, ~25 rows refined per
query; an A/B of the two checkouts on one store, machine under load). The caller turns the
integer-code dot product into a score with the row's scale and offset
(``refine.refined_ip``, O(1) per pair in numpy). The O(dim) part:

- ``int8_dots``: ``sum_i q_i * code_i`` for int8 codes;
- ``magnitude_dots``: ``sum_i q_i * sign_i * (2 u_i + 1)`` with the sign from the row's
  hot code bytes and ``u`` from ``bits`` bit planes (plane ``j`` = bit ``j`` of ``u``,
  packed like the sign code: dimension ``8p + k`` is bit ``k`` of byte ``p``), or for 8
  bits one byte per dimension.

Performance notes (measured on the 2-core VM, one thread, 7680 dims): the dot products
use ``fastmath`` reassociation so LLVM vectorises the float sum (0.7 us per int8 pair; a
loop with 16 explicit lanes in a local array measured 37 us). The magnitude kernel first
decodes a row into signed int8 levels with SWAR on uint64 words (8 dims per word: bit
``k`` of a byte spread to byte ``k`` by a multiply and a carry trick), plane by plane --
one loop per bit count with constant shifts (a loop over the planes inside the byte loop,
or accumulating plane by plane in memory, measured 7-20x slower at 3-4 bits) -- then runs
the int8 dot.
``int8_dots`` prefetches the record two pairs ahead (1,470 -> 1,130 ns per 7680-d pair
at random rows of a 100k-row table, scratch microbenchmark on the AVX-512 VM).
Pairs are split across threads in ``chunks`` pieces, like the rescoring kernels;
``*_range`` is the one-thread body, for a few pairs.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._cache import CACHE
from ._intrinsics import prefetch
from ._kernel import kernel

AHEAD = 2  # int8_dots prefetches the record of pair t + AHEAD while scoring pair t
LINE_BYTES = 64
FASTMATH = {"reassoc", "contract"}  # reorder/fuse the float sums; no finite-math assumptions
_ONES = np.uint64(0x0101010101010101)
_BIT_OF_BYTE = np.uint64(0x8040201008040201)  # byte k keeps bit k
_CARRY = np.uint64(0x00406070787C7E7F)  # byte k: 0x80 - 2^k, so a set bit carries into bit 7
_SEVEN = np.uint64(7)
_FF = np.uint64(0xFF)
_ONE, _TWO, _THREE, _FOUR = (np.uint64(v) for v in (1, 2, 3, 4))  # level weights 2^(j+1) as shifts


@nb.njit(nogil=True, cache=CACHE, fastmath=FASTMATH)
def int8_dots_range(table, rows, queries, qslot, out, t0, t1):
    """out[t] = queries[qslot[t]] . table[rows[t], :d] for pairs t0..t1-1 (``table``: int8
    records of at least d = ``queries.shape[1]`` bytes)."""
    d = queries.shape[1]
    for t in range(t0, t1):
        if t + AHEAD < t1:  # the record two pairs ahead: random reads from the mapped file
            ahead = rows[t + AHEAD]
            for i in range(0, d, LINE_BYTES):
                prefetch(table, ahead, i)
        code = table[rows[t]]
        q = queries[qslot[t]]
        acc = np.float32(0.0)
        for i in range(d):
            acc += q[i] * np.float32(code[i])
        out[t] = acc


@kernel(parallel=True)
def int8_dots(table, rows, queries, qslot, out, chunks):
    """``int8_dots_range`` over all pairs, ``chunks`` pieces in parallel."""
    n = qslot.shape[0]
    for c in nb.prange(chunks):
        int8_dots_range(table, rows, queries, qslot, out, n * c // chunks, n * (c + 1) // chunks)


@nb.njit(nogil=True, cache=CACHE, inline="always")
def _spread_bits(byte):
    """The 8 bits of ``byte`` as 8 bytes of 0/1 (bit k -> byte k) of a uint64."""
    x = (np.uint64(byte) * _ONES) & _BIT_OF_BYTE
    return ((x + _CARRY) >> _SEVEN) & _ONES


@nb.njit(nogil=True, cache=CACHE, fastmath=FASTMATH)
def _magnitude8_dots_range(u_bytes, hot, rows, queries, qslot, out, t0, t1):
    """``magnitude_dots_range`` for 8 bits: ``u_bytes`` records start with u_i, one byte each."""
    nbytes = queries.shape[1] // 8
    signs = np.empty(nbytes, dtype=np.uint64)  # 0/1 per dimension, 8 per word
    signs8 = signs.view(np.uint8)
    for t in range(t0, t1):
        h_row = hot[rows[t]]
        for p in range(nbytes):
            signs[p] = _spread_bits(h_row[p])
        u = u_bytes[rows[t]]
        q = queries[qslot[t]]
        acc = np.float32(0.0)
        for i in range(8 * nbytes):
            level = (2 * np.int32(signs8[i]) - 1) * (2 * np.int32(u[i]) + 1)
            acc += q[i] * np.float32(level)
        out[t] = acc


@nb.njit(nogil=True, cache=CACHE, fastmath=FASTMATH)
def magnitude_dots_range(planes, hot, rows, bits, queries, qslot, out, t0, t1):
    """out[t] = sum_i q_i * s_i * (2 u_i + 1) for pairs t0..t1-1 (``bits`` 1, 2, 3, 4 or 8),
    u and s of row ``rows[t]``.

    ``hot`` (N, >= d/8) uint8: the rows' sign-code bytes (bit set: s = +1, else -1);
    ``planes`` (N, >= bits * d/8) uint8 records starting with the planes: plane j holds
    bit j of every u_i (8 bits: u_i itself, one byte per dimension). d = ``queries.shape[1]``.
    """
    if bits == 8:
        _magnitude8_dots_range(planes, hot, rows, queries, qslot, out, t0, t1)
        return
    if bits < 1 or bits > 4:
        raise ValueError("magnitude_dots: bits must be 1, 2, 3, 4 or 8")
    nbytes = queries.shape[1] // 8
    levels = np.empty(nbytes, dtype=np.uint64)  # 8 signed int8 levels per word
    levels8 = levels.view(np.int8)
    for t in range(t0, t1):
        h_row = hot[rows[t]]
        p_row = planes[rows[t]]
        p0 = p_row[0:nbytes]
        if bits == 1:
            for p in range(nbytes):
                levels[p] = _ONES + (_spread_bits(p0[p]) << _ONE)
        else:
            p1 = p_row[nbytes : 2 * nbytes]
            if bits == 2:
                for p in range(nbytes):
                    levels[p] = _ONES + (_spread_bits(p0[p]) << _ONE) + (_spread_bits(p1[p]) << _TWO)
            else:
                p2 = p_row[2 * nbytes : 3 * nbytes]
                if bits == 3:
                    for p in range(nbytes):
                        levels[p] = (_ONES + (_spread_bits(p0[p]) << _ONE) + (_spread_bits(p1[p]) << _TWO)
                                     + (_spread_bits(p2[p]) << _THREE))
                else:
                    p3 = p_row[3 * nbytes : 4 * nbytes]
                    for p in range(nbytes):
                        levels[p] = (_ONES + (_spread_bits(p0[p]) << _ONE) + (_spread_bits(p1[p]) << _TWO)
                                     + (_spread_bits(p2[p]) << _THREE) + (_spread_bits(p3[p]) << _FOUR))
        for p in range(nbytes):
            # bytes whose sign bit is clear become -level: (level ^ 0xFF) + 1, no carry out
            neg = (_spread_bits(h_row[p]) ^ _ONES) * _FF
            levels[p] = (levels[p] ^ neg) + (neg & _ONES)
        q = queries[qslot[t]]
        acc = np.float32(0.0)
        for i in range(8 * nbytes):
            acc += q[i] * np.float32(levels8[i])
        out[t] = acc


@kernel(parallel=True)
def magnitude_dots(planes, hot, rows, bits, queries, qslot, out, chunks):
    """``magnitude_dots_range`` over all pairs, ``chunks`` pieces in parallel."""
    n = qslot.shape[0]
    for c in nb.prange(chunks):
        magnitude_dots_range(planes, hot, rows, bits, queries, qslot, out, n * c // chunks, n * (c + 1) // chunks)
