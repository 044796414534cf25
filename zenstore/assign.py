"""The nearest base row of many rotated vectors, without a full product against every row.

Encoding (``codec.py``) and k-means refinement (``train.py``) need, for each vector, the base row
nearest to it (L2). The exact answer is one (n, dim) x (dim, n_base) product: 15.7 MFLOP
per 7680-d vector against 1,024 rows, the largest cost of a bulk load. Vectors here are
*rotated* (``rotation.py``): every coordinate mixes all input dimensions, so a fixed subset
of coordinates is a random projection that keeps distances up to a small relative error.
:class:`NearestRow` therefore

1. ranks all base rows on ``dim / COARSE_STRIDE`` coordinates (every 16th: a product 16x
   smaller), and
2. computes the exact distance to the ``CANDIDATES`` best of them and keeps the nearest
   (``kernels.coarse.nearest_of_candidates``).

Measured on 8,192 generated 7680-d documents against a 1,024-row k-means base
(docs/benchmarks.md, "Ingest"): with 480 coordinates the exact nearest row was among the
best 8 for 99.8% of the vectors and among the best 16 for all of them. On 40,000 documents against
1,024 rows (``benchmarks/assign_quality.py``) 0.005% (default generated profile) and 0.17%
(a noisier one) of the rows got another row than the exact nearest, and recall@10 moved by
0.0000 and -0.0002 (95% interval [-0.0005, +0.0001]). Picking a row that
is not the nearest costs nothing but a slightly larger residual -- any base row encodes a
vector correctly -- so this is a speed/quality trade, never a correctness one.

Without a rotation (``rotation="none"``), for few dimensions or few base rows, the exact
product is used.
"""

from __future__ import annotations

import numpy as np

from .kernels.coarse import nearest_of_candidates

COARSE_STRIDE = 16  # rank on every 16th rotated coordinate
CANDIDATES = 16  # exact distances per vector
MIN_COARSE_DIMS = 64  # fewer coordinates than this: the exact product
MIN_BASE_ROWS = 4 * CANDIDATES  # fewer rows than this: the exact product


def uses_coarse(dim: int, n_base: int) -> bool:
    """Whether the coordinate-subset ranking applies to this shape (else: exact product)."""
    return dim // COARSE_STRIDE >= MIN_COARSE_DIMS and n_base >= MIN_BASE_ROWS


class NearestRow:
    """Nearest-base-row search for one base matrix (float32, rotated space)."""

    def __init__(self, base: np.ndarray, base_sqnorm: np.ndarray | None = None, *,
                 coarse: bool = True, base16: np.ndarray | None = None) -> None:
        """``base16``: the same base as fp16 (a codec's stored base, of which ``base`` is the
        exact float32 copy): the candidates' exact distances then read half the bytes, with
        the same result. k-means centroids are not fp16 values and pass none."""
        self.base = np.ascontiguousarray(base, dtype=np.float32)
        self.rows = self.base if base16 is None else np.ascontiguousarray(base16, dtype=np.float16).view(np.uint16)
        if base_sqnorm is None:
            base_sqnorm = np.einsum("ij,ij->i", self.base, self.base, dtype=np.float64)
        self.base_sqnorm = np.ascontiguousarray(base_sqnorm, dtype=np.float64)
        n_base, dim = self.base.shape
        self.coarse = coarse and uses_coarse(dim, n_base)
        if self.coarse:
            self.sub_base = np.ascontiguousarray(self.base[:, ::COARSE_STRIDE])
            self.sub_sqnorm = np.einsum("ij,ij->i", self.sub_base, self.sub_base).astype(np.float32)

    def exact(self, xr: np.ndarray) -> np.ndarray:
        """Nearest row by the full product (the reference the coarse path approximates)."""
        d = self.base_sqnorm[None, :] - 2.0 * (xr @ self.base.T)
        return np.argmin(d, axis=1).astype(np.int64)

    def candidates(self, xr: np.ndarray, count: int = CANDIDATES) -> np.ndarray:
        """(n, count) base rows ranked best on the coordinate subset (in no order)."""
        proxy = self.sub_sqnorm[None, :] - 2.0 * (xr[:, ::COARSE_STRIDE] @ self.sub_base.T)
        return np.argpartition(proxy, count - 1, axis=1)[:, :count].astype(np.int64)

    def __call__(self, xr: np.ndarray) -> np.ndarray:
        """(n,) int64 nearest base row of each rotated (n, dim) float32 vector."""
        n = xr.shape[0]
        if self.base.shape[0] == 1:
            return np.zeros(n, dtype=np.int64)
        if not self.coarse or n == 0:
            return self.exact(xr)
        xr = np.ascontiguousarray(xr, dtype=np.float32)
        out = np.empty(n, dtype=np.int64)
        nearest_of_candidates(xr, self.rows, self.base_sqnorm, self.candidates(xr), out)
        return out
