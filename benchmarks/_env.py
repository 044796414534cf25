"""The thread environment of every benchmark process, in one place.

Import this module FIRST in a benchmark script, before anything imports numpy, numba or
faiss: GNU OpenMP reads ``OMP_WAIT_POLICY`` and OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT``
once, when the library loads, so setting them later does nothing. It is a module of its
own (not part of ``_common``) because ``_common`` itself imports numpy, and because a study
script that needs none of ``_common`` (``probe_candidates.py``) still needs this.

- ``OMP_WAIT_POLICY=passive`` is forced (not just defaulted): idle OpenMP workers spinning
  cost ~8 ms per parallel launch on the 2-core VM, and a benchmark must not depend on the
  caller's shell (docs/benchmarks.md, "Threads").
- ``OPENBLAS_THREAD_TIMEOUT=4`` is a default (as zenstore's own, zenstore/kernels/_threads.py):
  idle OpenBLAS threads sleep instead of spinning ~0.1 s after every call.

``LOADED_TOO_EARLY`` names the libraries that were already imported when this ran (then
their settings above may not have taken effect); ``_common.machine_info`` records it.
"""

import os
import sys

FORCED = {"OMP_WAIT_POLICY": "passive"}
DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def apply(env=os.environ):
    """Set the benchmark thread environment in ``env`` (a child's env dict, or ours)."""
    env.update(FORCED)
    for key, value in DEFAULTS.items():
        env.setdefault(key, value)
    return env


LOADED_TOO_EARLY = sorted(m for m in ("numpy", "numba", "faiss") if m in sys.modules)
apply()
