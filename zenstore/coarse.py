"""The coarse step without an exact product against every base row.

A probed search scans the rows of the ``nprobe`` base rows nearest the query, and the
scan and the rescoring need the exact ``q . c`` of those rows. Finding them by the exact
product against every base row costs ``n_base x dim`` multiply-adds per query (126 us of
a 281 us query at 1M docs, 1,024 base rows) and grows with the base. Here:

1. **Project.** The base rows, centred, mostly live in a low-dimensional subspace (they
   are k-means centroids of the data). An orthonormal basis ``P`` (``rank x dim``) of
   its main directions is derived once from the base (randomized range finder, one power
   iteration); every base row keeps its coordinates ``(c - mean) P^T``. A query costs
   ``rank x dim`` to project plus ``n_base x rank`` to rank every base row: at 7680
   dims and rank 384, 20x less per base row than the exact product.
2. **Keep candidates.** The best ``max(4 nprobe, 16)`` base rows by that approximation.
3. **Exact on candidates only.** ``q . c`` exactly for the candidates
   (``kernels.candidates``), and the ``nprobe`` best of those by exact closeness (ties:
   the smaller base row, as ``top_mask``) are probed.

The probe equals the exact probe whenever the exact top ``nprobe`` are among the
candidates (measured: docs/benchmarks.md, "Coarse step and default search"). ``q . c``
of the rows that are not candidates is left NaN: nothing may read it (the scan and
rescoring read only probed rows). Used only where it is cheaper by at least half
(``worthwhile``); a full scan, filtered searches and small bases keep the exact product.

The projection is derived from the base when a store's codec first probes (not stored:
no format change); its cost is measured in docs/benchmarks.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .kernels import dot_listed_f16, dot_rows_f16
from .kernels.topk import top_mask

MAX_RANK = 384  # projection rank at 7680 dims (exact-probe coverage 1.000 at 4 x nprobe, 100k)
RANK_DIVISOR = 8  # rank <= dim / 8
CANDIDATES_PER_PROBE = 4
MIN_CANDIDATES = 16
WORTHWHILE = 0.5  # used when its multiply-adds are at most this share of the exact product's
MIN_EXACT_WORK = 1 << 21  # ... and the exact product is at least this many (smaller: its fixed
#                           costs win; SciFact's 215 x 384 base took 9-20 us exact, 27-48 projected)
SMALL_BATCH = 16  # fewer queries: numba kernels over fp16 (no BLAS thread wake-up)
POWER_ITERATIONS = 1
MIN_CAPTURED = 0.97  # share of the centred base's energy the projection must keep to be used
#   Measured (docs/benchmarks.md, "The coarse step on a second profile"): the default generated
#   profile keeps 0.977 at rank 384 and probes exactly what the exact step probes (every query,
#   nprobe 2-32); the "noisy" profile keeps 0.693 and probed the exact top 16 for 29% of the
#   queries (hot recall@10 at nprobe 16: 0.5191 projected, 0.5333 exact, both with the old
#   q.c order). Below the threshold the exact product is used.


@dataclass(frozen=True)
class BaseProjection:
    """Base rows in a low-rank basis: ``q . c ~ q . mean + (q P^T) . coords[c]``."""

    basis: np.ndarray  # (rank, dim) float32, orthonormal rows
    coords: np.ndarray  # (n_base, rank) float32, (base - mean) @ basis.T
    basis16: np.ndarray  # the same in float16, read by the few-query kernels
    coords16: np.ndarray
    captured: float = 1.0  # ||coords||^2 / ||base - mean||^2: how much of the base it keeps

    @property
    def rank(self) -> int:
        return int(self.basis.shape[0])

    @property
    def faithful(self) -> bool:
        """Whether the base is near enough its projection for the candidates to hold the
        exact probe (``MIN_CAPTURED``); an unfaithful projection is not used."""
        return self.captured >= MIN_CAPTURED


def projection_rank(n_base: int, dim: int) -> int:
    return max(1, min(MAX_RANK, dim // RANK_DIVISOR, n_base))


def candidate_count(nprobe: int, n_base: int) -> int:
    return min(n_base, max(CANDIDATES_PER_PROBE * nprobe, MIN_CANDIDATES))


def worthwhile(n_base: int, dim: int, nprobe: int) -> bool:
    """True when projecting, ranking and the candidates' exact products together cost at
    most ``WORTHWHILE`` of the exact product against every base row."""
    if nprobe >= n_base or n_base * dim < MIN_EXACT_WORK:
        return False
    rank = projection_rank(n_base, dim)
    cost = rank * (dim + n_base) + candidate_count(nprobe, n_base) * dim
    return cost <= WORTHWHILE * n_base * dim


def _orthonormal(y: np.ndarray) -> np.ndarray:
    """Columns spanning the same space as ``y``'s, orthonormal (via the small Gram matrix:
    no LAPACK QR of a tall matrix, which took 18 s at 7680 x 256 on a loaded 2-core VM)."""
    g = y.T.astype(np.float64) @ y.astype(np.float64)
    w, v = np.linalg.eigh(g)
    keep = w > max(float(w.max()), 1e-300) * 1e-9
    return (y.astype(np.float64) @ (v[:, keep] / np.sqrt(w[keep]))).astype(np.float32)


def derive_projection(base: np.ndarray, rank: int, seed: int = 0,
                      power_iterations: int = POWER_ITERATIONS) -> BaseProjection:
    """The projection of an (n_base, dim) base (rotated space). Deterministic for a base."""
    x = np.asarray(base, dtype=np.float32)
    x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
    rng = np.random.default_rng(seed)
    y = _orthonormal(x.T @ rng.standard_normal((x.shape[0], rank), dtype=np.float32))
    for _ in range(power_iterations):
        y = _orthonormal(x.T @ (x @ y))
    basis = np.ascontiguousarray(y.T)
    coords = np.ascontiguousarray(x @ y)
    total = float(np.einsum("ij,ij->", x, x, dtype=np.float64))
    captured = 1.0 if total == 0 else float(np.einsum("ij,ij->", coords, coords, dtype=np.float64)) / total
    return BaseProjection(basis, coords, basis.astype(np.float16), coords.astype(np.float16), min(1.0, captured))


def _products(a: np.ndarray, m32: np.ndarray, m16: np.ndarray) -> np.ndarray:
    """a @ m.T: numba over the fp16 copy for a few rows, BLAS otherwise."""
    if a.shape[0] <= SMALL_BATCH:
        out = np.empty((a.shape[0], m16.shape[0]), dtype=np.float32)
        dot_rows_f16(np.ascontiguousarray(a, dtype=np.float32), m16.view(np.uint16), out,
                     2 * numba.get_num_threads())
        return out
    return a @ m32.T


def approximate_closeness(proj: BaseProjection, q: np.ndarray, base_sqnorm: np.ndarray,
                          l2: bool) -> np.ndarray:
    """(nq, n_base) closeness of every base row, up to a per-query constant."""
    approx = _products(_products(q, proj.basis, proj.basis16), proj.coords, proj.coords16)
    if l2:
        approx = 2 * approx - base_sqnorm[None, :].astype(np.float32)
    return approx


def probe_rows(proj: BaseProjection, base16: np.ndarray, base_sqnorm: np.ndarray, q: np.ndarray,
               nprobe: int, l2: bool) -> tuple[np.ndarray, np.ndarray]:
    """(qoff, mask), each (nq, n_base): exact ``q . c`` on every candidate (NaN elsewhere)
    and the ``nprobe`` base rows each query probes."""
    nq = q.shape[0]
    n_base = base16.shape[0]
    n_cand = candidate_count(nprobe, n_base)
    approx = approximate_closeness(proj, q, base_sqnorm, l2)
    if n_cand < n_base:
        cand = np.argpartition(-approx, n_cand - 1, axis=1)[:, :n_cand].astype(np.int64)
    else:
        cand = np.broadcast_to(np.arange(n_base, dtype=np.int64), (nq, n_base))
    cand = np.ascontiguousarray(cand)
    exact = np.empty((nq, n_cand), dtype=np.float32)
    dot_listed_f16(np.ascontiguousarray(q, dtype=np.float32), base16.view(np.uint16), cand, exact,
                   2 * numba.get_num_threads())
    qrow = np.arange(nq)[:, None]
    qoff = np.full((nq, n_base), np.nan, dtype=np.float32)
    qoff[qrow, cand] = exact
    close = np.full((nq, n_base), -np.inf, dtype=np.float32)
    close[qrow, cand] = 2 * exact - base_sqnorm[cand].astype(np.float32) if l2 else exact
    mask = np.empty((nq, n_base), dtype=np.bool_)
    top_mask(close, nprobe, mask)
    return qoff, mask
