"""Plain-numpy twins of the refine kernels (``kernels/refine.py``): slow, obviously
correct, float64; used by the tests and by ``refine.refined_ip`` when no kernel result
is passed."""

from __future__ import annotations

import numpy as np


def int8_dots_ref(codes: np.ndarray, queries: np.ndarray, qslot: np.ndarray) -> np.ndarray:
    """queries[qslot[t]] . codes[t] for int8 codes (n, d)."""
    q = np.asarray(queries, dtype=np.float64)[np.asarray(qslot, dtype=np.int64)]
    return np.einsum("nd,nd->n", q, np.asarray(codes, dtype=np.int8).astype(np.float64))


def magnitude_dots_ref(planes: np.ndarray, hot: np.ndarray, bits: int, queries: np.ndarray,
                       qslot: np.ndarray) -> np.ndarray:
    """sum_i q_i * sign_i * (2 u_i + 1): sign from the hot code bytes (bit set: +1),
    u from ``bits`` bit planes (bit k of byte p is dimension 8p + k) or, for 8 bits, one
    byte per dimension."""
    n, nbytes = hot.shape
    signs = np.unpackbits(np.asarray(hot, np.uint8), axis=1, bitorder="little").astype(np.float64) * 2 - 1
    if bits == 8:  # one byte per dimension
        u = np.asarray(planes, np.uint8).astype(np.int64)
    else:
        bitplanes = np.unpackbits(np.asarray(planes, np.uint8).reshape(n, bits, nbytes), axis=2, bitorder="little")
        u = (bitplanes.astype(np.int64) << np.arange(bits)[None, :, None]).sum(axis=1)
    q = np.asarray(queries, dtype=np.float64)[np.asarray(qslot, dtype=np.int64)]
    return np.einsum("nd,nd->n", q, signs * (2 * u + 1))
