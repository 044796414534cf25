"""Keep idle worker threads (numba's OpenMP, numpy's OpenBLAS) from spinning against the caller.

With GNU OpenMP's default wait policy, idle workers spin; on a 2-core machine that made
every parallel kernel launch cost ~8 ms (measured: an empty ``prange`` over 4 items,
7.8-8.3 ms per call) instead of ~7 us with ``OMP_WAIT_POLICY=passive``. A search launches
several kernels, so the default would dominate single-query latency.

This sets ``OMP_WAIT_POLICY=passive`` only when the user has set neither it nor
``NUMBA_THREADING_LAYER``; it must run before numba first loads its OpenMP layer, which
happens lazily at the first parallel kernel call.

It also sets ``OPENBLAS_THREAD_TIMEOUT=4`` when unset: after each call OpenBLAS's worker
threads otherwise spin for 2^28 cycles (~0.1 s), and a batch search runs its numba
kernels right after the BLAS product with the base rows -- the spinning BLAS thread took
one of the 2 cores from them (1M docs, nprobe 2, 2 threads: 199 -> 158 µs per query,
measured with benchmarks/stages.py). OpenBLAS reads it when it loads, so it only takes
effect when zenstore is imported before numpy (``zenstore/__init__`` imports this first);
set it yourself otherwise.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ and "NUMBA_THREADING_LAYER" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "passive"

if "OPENBLAS_THREAD_TIMEOUT" not in os.environ:
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"
