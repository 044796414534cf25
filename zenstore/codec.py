"""BitDelta: a vector as its nearest base row plus a 1-bit residual with per-block scales.

Encoding a (rotated) vector ``x``:

1. ``g`` = the base row nearest to ``x`` (L2), ``c = base[g]`` (the fp16 values, so
   encoder and decoder agree exactly);
2. ``r = x - c``; the code is the sign bits of ``r`` (``kernels.pack_signs``);
3. per block ``b`` of dims one fp16 scale: ``||r_b||^2 / ||r_b||_1`` ("unbiased": makes
   ``s * sign(r) . q`` an unbiased estimate of ``r . q`` for a rotated query, RaBitQ's
   choice) or ``mean |r_b|`` ("l2": the least-squares reconstruction, BitDelta's choice);
4. for the l2 metric only, ``||x||^2`` as an fp16 ratio to ``max(||c||^2, ||r_hat||^2)``,
   so distances use the true norm (the dequantized vector's norm is biased upwards).

The dequantized vector is ``c + s_b * sign(r_b)``; with the unbiased scale its inner
product with any query equals the score search ranks by.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InvalidVector
from .format import StoreConfig
from .kernels import dot_rows, unpack_signs
from .kernels.bits import encode_residuals
from .rotation import Rotation

FP16_MAX = float(np.finfo(np.float16).max)
ENCODE_CHUNK = 8192
SMALL_BATCH = 16


@dataclass(frozen=True)
class EncodedBatch:
    """A structure of arrays: row i of each array describes vector i."""

    groups: np.ndarray  # (n,) int64 base row of each vector
    codes: np.ndarray  # (n, dim/64) uint64 sign bits of the residual
    scales: np.ndarray  # (n, scale_blocks) float16
    norms: np.ndarray | None  # (n,) float16 norm ratio (l2 metric) or None

    def __len__(self) -> int:
        return self.codes.shape[0]

    def take(self, order: np.ndarray) -> EncodedBatch:
        return EncodedBatch(
            self.groups[order],
            self.codes[order],
            self.scales[order],
            None if self.norms is None else self.norms[order],
        )


class Codec:
    """Encoder/decoder for one store, rebuilt from the store's config and base file."""

    def __init__(self, config: StoreConfig, base: np.ndarray, rotation: Rotation) -> None:
        base = np.ascontiguousarray(base, dtype=np.float16)
        if base.ndim != 2 or base.shape[1] != config.dim or base.shape[0] < 1:
            raise ValueError(f"base matrix shape {base.shape} does not fit dim {config.dim}")
        self.config = config
        self.rotation = rotation
        self.base16 = base
        self.base = base.astype(np.float32)  # rotated space
        self.base_sqnorm = np.einsum("ij,ij->i", self.base, self.base)
        self.block_dims = config.dim // config.scale_blocks

    @property
    def n_base(self) -> int:
        return self.base.shape[0]

    # --- vectors in, rotated space -------------------------------------------------------

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Normalise (cosine) and rotate validated float32 vectors."""
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.config.metric == "cosine":
            x = x / np.linalg.norm(x, axis=1, keepdims=True)
        return self.rotation.apply(x)

    def base_dots(self, xr: np.ndarray) -> np.ndarray:
        """(n, n_base) inner products of rotated vectors with the base rows.

        Small batches use a numba kernel: multithreaded BLAS pays a thread wake-up cost
        per call (measured ~8 ms on a 2-core VM) that dominates a single query.
        """
        if xr.shape[0] <= SMALL_BATCH:
            out = np.empty((xr.shape[0], self.n_base), dtype=np.float32)
            dot_rows(np.ascontiguousarray(xr, dtype=np.float32), self.base, out)
            return out
        return xr @ self.base.T

    def assign(self, xr: np.ndarray) -> np.ndarray:
        """Nearest base row (L2) of each rotated vector."""
        if self.n_base == 1:
            return np.zeros(xr.shape[0], dtype=np.int64)
        d = self.base_sqnorm[None, :] - 2.0 * self.base_dots(xr)
        return np.argmin(d, axis=1).astype(np.int64)

    # --- encode / decode ---------------------------------------------------------------------

    def encode(self, vectors: np.ndarray) -> EncodedBatch:
        """Encode validated (n, dim) vectors (original space), in bounded-memory chunks."""
        parts = [self._encode_chunk(vectors[i : i + ENCODE_CHUNK])
                 for i in range(0, vectors.shape[0], ENCODE_CHUNK)]
        return EncodedBatch(
            np.concatenate([p.groups for p in parts]),
            np.concatenate([p.codes for p in parts]),
            np.concatenate([p.scales for p in parts]),
            None if parts[0].norms is None else np.concatenate([p.norms for p in parts]),
        )

    def _encode_chunk(self, vectors: np.ndarray) -> EncodedBatch:
        xr = self.prepare(vectors)
        groups = self.assign(xr)
        n, nb = xr.shape[0], self.config.scale_blocks
        codes = np.empty((n, self.config.words), dtype=np.uint64)
        l1 = np.empty((n, nb), dtype=np.float64)
        sq = np.empty((n, nb), dtype=np.float64)
        encode_residuals(xr, self.base, groups, nb, codes, l1, sq)
        if self.config.scale_estimator == "unbiased":
            scales = np.divide(sq, l1, out=np.zeros_like(sq), where=l1 > 0)
        else:
            scales = l1 / self.block_dims
        if np.any(scales > FP16_MAX):
            raise InvalidVector(
                f"vector values too large: a residual scale exceeds the fp16 range ({FP16_MAX:g})"
            )
        scales16 = scales.astype(np.float16)
        norms = None
        if self.config.has_norms:
            sqnorm = np.einsum("ij,ij->i", xr, xr, dtype=np.float64)
            ref = self._norm_reference(groups, scales16)
            ratio = np.divide(sqnorm, ref, out=np.zeros_like(sqnorm), where=ref > 0)
            norms = ratio.astype(np.float16)
        return EncodedBatch(groups, codes, scales16, norms)

    def _norm_reference(self, groups: np.ndarray, scales16: np.ndarray) -> np.ndarray:
        """max(||c||^2, ||r_hat||^2): the scale the l2 norm ratio is stored against."""
        s = scales16.astype(np.float64)
        rhat_sq = (s * s).sum(axis=1) * self.block_dims
        return np.maximum(self.base_sqnorm[groups].astype(np.float64), rhat_sq)

    def row_sqnorms(self, groups: np.ndarray, scales16: np.ndarray, norms16: np.ndarray) -> np.ndarray:
        """Decoded ||x||^2 of each row (l2 metric), float32."""
        return (norms16.astype(np.float64) * self._norm_reference(groups, scales16)).astype(np.float32)

    def dequantize_rotated(self, groups, codes, scales16) -> np.ndarray:
        """base[g] + s_b * sign(r_b), in the rotated space (float32)."""
        n = codes.shape[0]
        signs = unpack_signs(codes).reshape(n, self.config.scale_blocks, self.block_dims)
        signs *= scales16.astype(np.float32)[:, :, None]
        return self.base[groups] + signs.reshape(n, -1)

    def decode(self, groups, codes, scales16) -> np.ndarray:
        """The dequantized vectors in the caller's original space (float32)."""
        return self.rotation.invert(self.dequantize_rotated(groups, codes, scales16))
