"""Packing signs into uint64 words, and the query-side helpers built on the same layout.

Bit layout (also specified in docs/format.md): dimension ``j`` of a vector lives in word
``j // 64`` at bit ``j % 64`` (least significant bit first), and the bit is 1 when the
value is strictly positive. Read as little-endian bytes, dimension ``j`` is bit ``j % 8``
of byte ``j // 8``, which is what the nibble lookup tables of the rescoring kernel rely on.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._cache import CACHE
from ._kernel import kernel

WORD_BITS = 64
PARALLEL_ROWS = 64  # fewer rows than this: one thread (a parallel launch costs more)


@nb.njit(cache=CACHE, nogil=True)
def _pack_rows(x, out, i0, i1):
    words = x.shape[1] // 64
    for i in range(i0, i1):
        for w in range(words):
            acc = np.uint64(0)
            base = w * 64
            for j in range(64):
                if x[i, base + j] > 0:
                    acc |= np.uint64(1) << np.uint64(j)
            out[i, w] = acc


@kernel(parallel=True)
def _pack_signs_parallel(x, out, chunks):
    n = x.shape[0]
    for c in nb.prange(chunks):
        _pack_rows(x, out, n * c // chunks, n * (c + 1) // chunks)


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Pack ``x > 0`` of a (n, d) float array into a (n, d // 64) uint64 array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % WORD_BITS:
        raise ValueError(f"pack_signs needs a (n, d) array with d a multiple of 64, got {x.shape}")
    out = np.empty((x.shape[0], x.shape[1] // WORD_BITS), dtype=np.uint64)
    if x.shape[0] < PARALLEL_ROWS:
        _pack_rows(x, out, 0, x.shape[0])
    else:
        _pack_signs_parallel(x, out, 4 * nb.get_num_threads())
    return out


def unpack_signs(codes: np.ndarray) -> np.ndarray:
    """Expand (n, w) uint64 codes into a (n, 64 w) float32 array of +1 / -1."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    bits = np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little")
    return bits.astype(np.float32) * 2.0 - 1.0


SUM_LANES = 8  # independent float64 partial sums per quantity (a multiple of 64 dims)


@kernel(parallel=True)
def encode_residuals(xr, base, groups, nblocks, codes, l1, sq, cb, cr):
    """Sign-pack ``r = xr[i] - base[groups[i]]`` and gather the sums the codec needs.

    Per row and block: ``l1 = sum |r|``, ``sq = sum r^2``, ``cb = sum c * sign(r)``; per
    row: ``cr = c . r``. ``r`` is never materialised as an (n, d)
    matrix; the sums are accumulated in float64 over ``SUM_LANES`` independent partial sums
    in a second pass over the row (one running sum per quantity, interleaved with the
    packing, made a chain of dependent adds: 68 -> 24 CPU us per 7680-d row, measured;
    docs/benchmarks.md "Ingest").
    """
    n, d = xr.shape
    words = d // 64
    block_dims = d // nblocks
    for i in nb.prange(n):
        crow = base[groups[i]]
        xrow = xr[i]
        for w in range(words):
            cw = crow[w * 64 : w * 64 + 64]
            xw = xrow[w * 64 : w * 64 + 64]
            acc = np.uint64(0)
            for j in range(64):
                if xw[j] - cw[j] > 0:
                    acc |= np.uint64(1) << np.uint64(j)
            codes[i, w] = acc
        v4 = np.zeros(SUM_LANES)
        for b in range(nblocks):
            v1 = np.zeros(SUM_LANES)
            v2 = np.zeros(SUM_LANES)
            v3 = np.zeros(SUM_LANES)
            for j0 in range(b * block_dims, (b + 1) * block_dims, SUM_LANES):
                # slices indexed by a bare range index: no negative-index checks, which
                # stop LLVM vectorising (as in hadamard.py)
                c8 = crow[j0 : j0 + SUM_LANES]
                x8 = xrow[j0 : j0 + SUM_LANES]
                for t in range(SUM_LANES):
                    c = np.float64(c8[t])
                    r = np.float64(x8[t]) - c  # exact; its sign is the float32 difference's
                    v1[t] += abs(r)
                    v2[t] += r * r
                    v3[t] += c if r > 0 else -c
                    v4[t] += c * r
            l1[i, b] = v1.sum()
            sq[i, b] = v2.sum()
            cb[i, b] = v3.sum()
        cr[i] = v4.sum()
