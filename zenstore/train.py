"""Learning the base matrix: k-means on a sample (faiss, imported lazily).

faiss runs k-means on its own GNU OpenMP, whose thread pool does not survive ``fork``: a
child forked after the parent used it hangs forever in its first multi-threaded faiss
call. A child forked while faiss was loaded therefore trains on one thread (libgomp then
never touches the inherited pool); the hook below only sets this module's flag.
"""

from __future__ import annotations

import os
import sys

import numpy as np

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


def train_base(sample: np.ndarray, n_base: int, seed: int = 0, niter: int = 10) -> np.ndarray:
    """Return an (n_base, d) float32 matrix of k-means centroids of ``sample``.

    ``n_base == 1`` is the sample mean, computed exactly. Ten iterations: on 20k 7680-d
    synthetic docs with 512 rows, recall@10 was 0.895 after 10 and 0.894 after 20.
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    if n_base == 1:
        return sample.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
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
    finally:
        if _faiss_pool_inherited:
            faiss.omp_set_num_threads(threads)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)
