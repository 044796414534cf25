"""BitDelta: a vector as its nearest base row plus a 1-bit residual with per-block scales.

Encoding a (rotated) vector ``x``:

1. ``g`` = the base row nearest to ``x`` (L2), ``c = base[g]`` (the fp16 values, so
   encoder and decoder agree exactly);
2. ``r = x - c``; the code is the sign bits ``b`` of ``r``;
3. per block of dims one fp16 scale ``s``: ``||r_b||^2 / ||r_b||_1`` ("unbiased": makes
   ``s * b . q`` an unbiased estimate of ``r . q`` for a rotated query, RaBitQ's choice)
   or ``mean |r_b|`` ("l2": least squares, BitDelta's choice);
4. one more fp16, ``aux``, that removes the part of the quantization error
   ``e = r - s * b`` lying along the base row; ``delta = c . e`` is known exactly at
   encode time. For cosine and ip, ``aux = delta / ||c||^2`` and the dequantized vector is

       x_hat = (1 + aux) * c + s * b        so that  x_hat . c == x . c  exactly.

   Queries are strongly aligned with base rows (both share the data's mean and topic
   directions), so this removes the largest error term (docs/design.md has the numbers).
   For l2, ``aux = (2 delta - ||x||^2) / ref`` with ``ref = max(||c||^2, ||s b||^2)``: the
   ranking value ``2 (q.c + s q.b) + 2 delta - ||x||^2`` estimates ``||q||^2 - ||q - x||^2``
   with the residual measured against ``q - c`` (RaBitQ's centred form) and the true norm
   of ``x``; storing a ratio keeps fp16's relative precision at any vector scale.

Vector data per row: dim/8 + 2 * blocks + 2 bytes (964 at 7680 dims with one block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import coarse
from .errors import InvalidVector
from .format import StoreConfig
import numba

from .assign import NearestRow
from .kernels import dot_rows_f16, numba_ready, unpack_signs
from .kernels.bits import encode_residuals
from . import refine
from .refine import RefineBatch
from .rotation import Rotation

FP16_MAX = float(np.finfo(np.float16).max)
ENCODE_CHUNK = 4096
SMALL_BATCH = 16
PREPARE_CHUNK = 8192  # rows per call: bounds the float32 copy of a float64 input


@dataclass(frozen=True)
class EncodedBatch:
    """A structure of arrays: row i of each array describes vector i."""

    groups: np.ndarray  # (n,) int64 base row of each vector
    codes: np.ndarray  # (n, dim/64) uint64 sign bits of the residual
    scales: np.ndarray  # (n, scale_blocks) float16
    aux: np.ndarray  # (n,) float16 base coefficient (cosine, ip) or norm-term ratio (l2)

    def __len__(self) -> int:
        return self.codes.shape[0]

    def take(self, order: np.ndarray) -> EncodedBatch:
        return EncodedBatch(self.groups[order], self.codes[order], self.scales[order], self.aux[order])

    @staticmethod
    def concat(parts: list[EncodedBatch]) -> EncodedBatch:
        return EncodedBatch(*(np.concatenate([getattr(p, f) for p in parts])
                              for f in ("groups", "codes", "scales", "aux")))


class Codec:
    """Encoder/decoder for one store, rebuilt from the store's config and base file."""

    def __init__(self, config: StoreConfig, base: np.ndarray, rotation: Rotation) -> None:
        base = np.ascontiguousarray(base, dtype=np.float16)
        width = config.coded_dim  # dim padded to a multiple of 64 (format.coded_dim)
        if base.ndim != 2 or base.shape[1] != width or base.shape[0] < 1:
            raise ValueError(f"base matrix shape {base.shape} does not fit dim {config.dim} "
                             f"(coded width {width})")
        self.config = config
        self.rotation = rotation
        self.base16 = base
        self.base = base.astype(np.float32)  # rotated space
        self.base_sqnorm = np.einsum("ij,ij->i", self.base, self.base, dtype=np.float64)
        self.block_dims = width // config.scale_blocks
        self._projection: coarse.BaseProjection | None = None
        self.calibration = None  # calibration.Calibration: the search default learnt for this base
        self.nearest = NearestRow(self.base, self.base_sqnorm, coarse=not rotation.is_identity, base16=base)
        # numba's registries load here, with Ctrl-C deferred, not inside the first search's
        # compilation, where an interrupt breaks numba for the process (kernels/_kernel.py)
        numba_ready()

    @property
    def n_base(self) -> int:
        return self.base.shape[0]

    def projection(self) -> coarse.BaseProjection:
        """The base's low-rank projection for the coarse step (``coarse.py``), derived
        from the base on first use and kept for the codec's life. No lock: two threads
        that both find it missing derive the same (deterministic) projection, and a child
        forked mid-derivation cannot inherit a held lock."""
        proj = self._projection
        if proj is None:
            proj = coarse.derive_projection(self.base, coarse.projection_rank(self.n_base, self.base.shape[1]))
            self._projection = proj
        return proj

    @property
    def probe_by_l2(self) -> bool:
        """Whether the probed base rows are the nearest in L2 (``2 q.c - ||c||^2``) rather
        than those with the largest ``q . c``. Rows are assigned to their nearest base row in
        L2, so a base row's rows form its L2 (Voronoi) cell, and a unit query's nearest
        documents lie in the cells nearest it in L2. The base rows are means of unit vectors,
        of unequal norms (0.47-0.76 on the noisy generated profile): probing by ``q . c``
        there found 0.53 recall@10 at nprobe 16 against 0.71 by L2 (docs/benchmarks.md, "The
        coarse step on a second profile"). ``ip`` stores (unnormalised vectors, the largest
        inner product wanted) keep ``q . c``."""
        return self.config.metric in ("l2", "cosine")

    def probe(self, xr: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """(qoff, mask) of rotated queries: exact ``q . c`` on each query's candidate base
        rows (NaN elsewhere) and its ``nprobe`` nearest base rows (``coarse.probe_rows``)."""
        return coarse.probe_rows(self.projection(), self.base16, self.base_sqnorm, xr, nprobe,
                                 self.probe_by_l2)

    # --- vectors in, rotated space -------------------------------------------------------

    def prepare(self, vectors: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Normalise (cosine) and rotate validated vectors into ``out``: one fused kernel
        pass per row, no temporaries (a 24k x 7680 training sample would otherwise need
        two more 0.75 GB copies). Validated vectors already have the coded width
        (``validation.as_matrix`` zero-pads them)."""
        n = vectors.shape[0]
        if out is None:
            out = np.empty((n, self.config.coded_dim), dtype=np.float32)
        for i in range(0, n, PREPARE_CHUNK):
            self.rotation.apply(vectors[i : i + PREPARE_CHUNK], out=out[i : i + PREPARE_CHUNK],
                                normalize=self.config.metric == "cosine")
        return out

    def base_dots(self, xr: np.ndarray) -> np.ndarray:
        """(n, n_base) exact inner products of rotated vectors with the base rows.

        A few queries use a numba kernel that reads the fp16 base directly: half the bytes
        of the float32 copy (0.25 vs ~0.5-1 ms per 7680-d query against 1024 rows), and no
        multithreaded BLAS call, whose thread wake-up (measured ~8 ms on a 2-core VM)
        would dwarf the work. Batches use BLAS.
        """
        if xr.shape[0] <= SMALL_BATCH:
            out = np.empty((xr.shape[0], self.n_base), dtype=np.float32)
            dot_rows_f16(np.ascontiguousarray(xr, dtype=np.float32), self.base16.view(np.uint16),
                         out, 2 * numba.get_num_threads())
            return out
        return xr @ self.base.T

    def assign(self, xr: np.ndarray) -> np.ndarray:
        """Nearest base row (L2) of each rotated vector: exact among the best candidates
        of a cheaper ranking (``assign.NearestRow``), or exact outright where that does
        not apply; a few vectors take the fp16 kernel of ``base_dots``."""
        if self.n_base == 1:
            return np.zeros(xr.shape[0], dtype=np.int64)
        if xr.shape[0] <= SMALL_BATCH or not self.nearest.coarse:
            d = self.base_sqnorm[None, :] - 2.0 * self.base_dots(xr)
            return np.argmin(d, axis=1).astype(np.int64)
        return self.nearest(xr)

    # --- encode ---------------------------------------------------------------------------

    def encode(self, vectors: np.ndarray) -> EncodedBatch:
        """Encode validated (n, dim) vectors (original space), in bounded-memory chunks."""
        return EncodedBatch.concat([self._encode_chunk(vectors[i : i + ENCODE_CHUNK])
                                    for i in range(0, vectors.shape[0], ENCODE_CHUNK)])

    def encode_with_refine(self, vectors: np.ndarray, tier) -> tuple[EncodedBatch, RefineBatch]:
        """Encode validated vectors and their refine tier (``refine.RefineTier``) from the
        same rotated vectors, in bounded-memory chunks (re-rotating would cost ~24 us per
        7680-d vector)."""
        hot, ref = [], []
        for i in range(0, vectors.shape[0], ENCODE_CHUNK):
            xr = self.prepare(vectors[i : i + ENCODE_CHUNK])
            b = self._encode_chunk(xr, rotated=True)
            hot_rows = self.dequantize_rotated(b.groups, b.codes, b.scales, b.aux)
            ref.append(refine.encode(tier, xr, self.base[b.groups], hot_rows, b.codes, self.config.metric))
            hot.append(b)
        return EncodedBatch.concat(hot), refine.RefineBatch.concat(ref)

    def decode_refined(self, tier, groups, codes, scales16, aux16, refine_rows: np.ndarray) -> np.ndarray:
        """The refined vectors (original space, float32) of rows given with their refine
        records (``refine.to_rows`` bytes)."""
        batch = refine.from_rows(tier, refine_rows, self.config.coded_dim, self.config.metric)
        hot_rows = self.dequantize_rotated(groups, codes, scales16, aux16)
        xr = refine.decode(tier, batch, self.base[groups], hot_rows, np.ascontiguousarray(codes))
        out = self.rotation.invert(xr)
        return out if out.shape[1] == self.config.dim else np.ascontiguousarray(out[:, :self.config.dim])

    def _encode_chunk(self, vectors: np.ndarray, rotated: bool = False) -> EncodedBatch:
        xr = vectors if rotated else self.prepare(vectors)
        groups = self.assign(xr)
        n, nb = xr.shape[0], self.config.scale_blocks
        codes = np.empty((n, self.config.words), dtype=np.uint64)
        l1, sq, cb = (np.empty((n, nb), dtype=np.float64) for _ in range(3))
        cr = np.empty(n, dtype=np.float64)
        encode_residuals(xr, self.base, groups, nb, codes, l1, sq, cb, cr)
        if self.config.scale_estimator == "unbiased":
            scales = np.divide(sq, l1, out=np.zeros_like(sq), where=l1 > 0)
        else:
            scales = l1 / self.block_dims
        if np.any(scales > FP16_MAX):
            raise InvalidVector(
                f"vector values too large: a residual scale exceeds the fp16 range ({FP16_MAX:g})"
            )
        scales16 = scales.astype(np.float16)
        s = scales16.astype(np.float64)
        delta = cr - (s * cb).sum(axis=1)  # c . (r - s b), with the scale as stored
        if self.config.metric == "l2":
            xsq = np.einsum("ij,ij->i", xr, xr, dtype=np.float64)
            ref = self._l2_reference(groups, scales16)
            aux = np.divide(2 * delta - xsq, ref, out=np.zeros_like(ref), where=ref > 0)
        else:
            csq = self.base_sqnorm[groups]
            aux = np.divide(delta, csq, out=np.zeros_like(csq), where=csq > 0)
        with np.errstate(over="ignore"):
            aux16 = aux.astype(np.float16)
        aux16[~np.isfinite(aux16)] = 0  # a base row of ~zero norm: drop the correction
        return EncodedBatch(groups, codes, scales16, aux16)

    # --- decode -----------------------------------------------------------------------------

    def _l2_reference(self, groups: np.ndarray, scales16: np.ndarray) -> np.ndarray:
        """max(||c||^2, ||s b||^2): the l2 norm term is stored as an fp16 ratio to this."""
        s = scales16.astype(np.float64)
        sb_sq = (s * s).sum(axis=1) * self.block_dims
        return np.maximum(self.base_sqnorm[groups], sb_sq)

    def row_terms(self, groups: np.ndarray, scales16: np.ndarray, aux16: np.ndarray):
        """(lam, term) float32 per row: kernels rank by ip_w * (lam q.c + s q.b) + term."""
        if self.config.metric == "l2":
            term = aux16.astype(np.float64) * self._l2_reference(groups, scales16)
            return np.ones(len(groups), np.float32), term.astype(np.float32)
        return 1.0 + aux16.astype(np.float32), np.zeros(len(groups), np.float32)

    def dequantize_rotated(self, groups, codes, scales16, aux16) -> np.ndarray:
        """lam * base[g] + s_b * sign(r_b) in the rotated space (float32); lam = 1 for l2."""
        n = codes.shape[0]
        signs = unpack_signs(codes).reshape(n, self.config.scale_blocks, self.block_dims)
        signs *= scales16.astype(np.float32)[:, :, None]
        lam, _ = self.row_terms(groups, scales16, aux16)
        return lam[:, None] * self.base[groups] + signs.reshape(n, -1)

    def decode(self, groups, codes, scales16, aux16) -> np.ndarray:
        """The dequantized vectors in the caller's original space (float32), without the
        zero padding of the coded width."""
        out = self.rotation.invert(self.dequantize_rotated(groups, codes, scales16, aux16))
        return out if out.shape[1] == self.config.dim else np.ascontiguousarray(out[:, :self.config.dim])

