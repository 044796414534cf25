"""Keep numba's OpenMP worker threads from spinning against the caller.

With GNU OpenMP's default wait policy, idle workers spin; on a 2-core machine that made
every parallel kernel launch cost ~8 ms (measured: an empty ``prange`` over 4 items,
7.8-8.3 ms per call) instead of ~7 us with ``OMP_WAIT_POLICY=passive``. A search launches
several kernels, so the default would dominate single-query latency.

This sets ``OMP_WAIT_POLICY=passive`` only when the user has set neither it nor
``NUMBA_THREADING_LAYER``; it must run before numba first loads its OpenMP layer, which
happens lazily at the first parallel kernel call.
"""

import os

if "OMP_WAIT_POLICY" not in os.environ and "NUMBA_THREADING_LAYER" not in os.environ:
    os.environ["OMP_WAIT_POLICY"] = "passive"
