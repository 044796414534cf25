"""Packing signs into uint64 words, and the query-side helpers built on the same layout.

Bit layout (also specified in docs/format.md): dimension ``j`` of a vector lives in word
``j // 64`` at bit ``j % 64`` (least significant bit first), and the bit is 1 when the
value is strictly positive. Read as little-endian bytes, dimension ``j`` is bit ``j % 8``
of byte ``j // 8``, which is what the byte lookup tables of the rescoring kernel rely on.
"""

from __future__ import annotations

import numba as nb
import numpy as np

WORD_BITS = 64


@nb.njit(cache=True, nogil=True, parallel=True)
def _pack_signs(x, out):
    n, d = x.shape
    words = d // 64
    for i in nb.prange(n):
        for w in range(words):
            acc = np.uint64(0)
            base = w * 64
            for j in range(64):
                if x[i, base + j] > 0:
                    acc |= np.uint64(1) << np.uint64(j)
            out[i, w] = acc


def pack_signs(x: np.ndarray) -> np.ndarray:
    """Pack ``x > 0`` of a (n, d) float array into a (n, d // 64) uint64 array."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] % WORD_BITS:
        raise ValueError(f"pack_signs needs a (n, d) array with d a multiple of 64, got {x.shape}")
    out = np.empty((x.shape[0], x.shape[1] // WORD_BITS), dtype=np.uint64)
    if x.shape[0]:
        _pack_signs(x, out)
    return out


def unpack_signs(codes: np.ndarray) -> np.ndarray:
    """Expand (n, w) uint64 codes into a (n, 64 w) float32 array of +1 / -1."""
    codes = np.ascontiguousarray(codes, dtype=np.uint64)
    bits = np.unpackbits(codes.view(np.uint8), axis=1, bitorder="little")
    return bits.astype(np.float32) * 2.0 - 1.0
