"""Learning the base matrix: k-means on a sample (faiss, imported lazily).

The writer trains in all dimensions. ``coarse=True`` (not the default; kept for
measurement) runs Lloyd's iterations on every 16th rotated coordinate
(``assign.COARSE_STRIDE``), lifts the clusters to full centroids and refines ``REFINE``
times with ``assign.NearestRow``: ~8x less work on the 24,576 x 7680 sample of a default
store, but measured by ``benchmarks/assign_quality.py`` (docs/benchmarks.md, "Ingest")
it loses recall@10 at small nprobe on the noisy generated profile (-0.023 at nprobe 4,
-0.032 at 16, 40k docs, both intervals clear of zero), so it stays off.

faiss runs k-means on its own GNU OpenMP, whose thread pool does not survive ``fork``: a
child forked after the parent used it hangs forever in its first multi-threaded faiss
call. A child forked while faiss was loaded therefore trains on one thread (libgomp then
never touches the inherited pool); the hook below only sets this module's flag.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from .assign import COARSE_STRIDE, NearestRow, uses_coarse
from .kernels.coarse import sum_rows_by_label

REFINE = 2  # full-dimension Lloyd iterations after k-means on the coordinate subset
_faiss_pool_inherited = False  # a forked child whose parent had loaded faiss


def _after_fork_in_child() -> None:
    global _faiss_pool_inherited
    _faiss_pool_inherited = _faiss_pool_inherited or "faiss" in sys.modules


os.register_at_fork(after_in_child=_after_fork_in_child)


def effective_n_base(requested: int, n_sample: int, min_rows_per_base: int) -> int:
    """How many base rows a sample of ``n_sample`` vectors can support.

    k-means with fewer than ~``min_rows_per_base`` points per centroid overfits the sample
    (centroids collapse onto single points), so small first batches get fewer base rows.
    """
    return max(1, min(requested, n_sample // min_rows_per_base))


def train_base(sample: np.ndarray, n_base: int, seed: int = 0, niter: int = 10, *,
               coarse: bool = False) -> np.ndarray:
    """Return an (n_base, d) float32 matrix of k-means centroids of ``sample``.

    ``n_base == 1`` is the sample mean, computed exactly. Ten iterations: on 20k 7680-d
    synthetic docs with 512 rows, recall@10 was 0.895 after 10 and 0.894 after 20.
    ``coarse``: the sample is rotated (``rotation.py``), so iterate on a coordinate subset
    first (see the module docstring); ignored where ``NearestRow`` would not use one.
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if n_base == 1:
        return sample.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    if coarse and uses_coarse(sample.shape[1], n_base):
        return _train_on_subset(sample, n_base, seed, niter)
    return _faiss_kmeans(sample, n_base, seed, niter)[0]


def _faiss_kmeans(sample: np.ndarray, n_base: int, seed: int, niter: int, labels: bool = False):
    """(centroids, each sample row's nearest centroid or None) of faiss k-means on ``sample``."""
    import faiss  # heavy import, only needed when training

    kmeans = faiss.Kmeans(
        sample.shape[1],
        n_base,
        niter=niter,
        seed=seed,
        max_points_per_centroid=256,
        min_points_per_centroid=1,
        verbose=False,
    )
    threads = faiss.omp_get_max_threads()
    if _faiss_pool_inherited:
        faiss.omp_set_num_threads(1)  # this thread's setting only; restored below
    try:
        kmeans.train(sample)
        nearest = kmeans.index.search(sample, 1)[1].ravel().astype(np.int64) if labels else None
    finally:
        if _faiss_pool_inherited:
            faiss.omp_set_num_threads(threads)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32), nearest


def _train_on_subset(sample: np.ndarray, n_base: int, seed: int, niter: int) -> np.ndarray:
    sub = np.ascontiguousarray(sample[:, ::COARSE_STRIDE])
    _, labels = _faiss_kmeans(sub, n_base, seed, niter, labels=True)
    del sub
    rng = np.random.default_rng([seed, 0xCE17])
    # clusters the subset k-means left empty start at random sample rows
    centroids = sample[rng.choice(sample.shape[0], n_base, replace=sample.shape[0] < n_base)]
    centroids = means_by_label(sample, labels, centroids)
    for _ in range(REFINE):
        centroids = means_by_label(sample, NearestRow(centroids)(sample), centroids)
    return centroids


def means_by_label(x: np.ndarray, labels: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Mean of the rows of each label (float32); a label without rows keeps ``previous``."""
    k, d = previous.shape
    sums = np.zeros((k, d), dtype=np.float64)
    counts = np.zeros(k, dtype=np.int64)
    sum_rows_by_label(x, labels, sums, counts, _column_chunks())
    out = np.array(previous, dtype=np.float32)
    has = counts > 0
    out[has] = (sums[has] / counts[has, None]).astype(np.float32)
    return out


def _column_chunks() -> int:
    import numba

    return 4 * numba.get_num_threads()
