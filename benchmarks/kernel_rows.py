#!/usr/bin/env python
"""Nanoseconds per row of the two per-candidate kernels of a refined search, alone.

- ``rescore``: ``kernels.signs.rescore_rows_range``, the exact dequantized score of one
  shortlisted row (its 1-bit residual against a float query);
- ``int8``: ``kernels.refine.int8_dots_range``, one row of the int8 refine tier.

Random codes and queries, 200 rows per query drawn at random from a table of ``--rows``
rows (sorted per query, as the search passes them), best of ``--repeats``, one thread.
A table of 1,000 rows stays in the caches; 100,000 rows (96 MB of sign codes, 768 MB of
int8 records) is read from memory as a store's would be. To compare two versions of the
code, run it once per checkout with ``--src``; to see the kernels compiled for a CPU
without AVX-512, set numba's target (``NUMBA_CPU_NAME=haswell`` and a
``NUMBA_CPU_FEATURES`` without ``avx512*``, plus a separate ``NUMBA_CACHE_DIR``):

    python benchmarks/kernel_rows.py --src /path/to/old/checkout
    python benchmarks/kernel_rows.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _best(fn, args, repeats: int) -> float:
    fn(*args)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t)
    return best


def measure(n_rows: int, dim: int, nq: int, per_query: int, repeats: int, seed: int = 0) -> dict:
    import numpy as np

    from zenstore.kernels.refine import int8_dots_range
    from zenstore.kernels.signs import rescore_rows_range

    rng = np.random.default_rng(seed)
    nblocks = 4
    codes = rng.integers(0, 2**63, size=(n_rows, dim // 64), dtype=np.uint64).view(np.uint32)
    scales = rng.random((n_rows, nblocks), dtype=np.float32)
    rowlam = rng.random(n_rows, dtype=np.float32)
    rowterm = np.zeros(n_rows, np.float32)
    queries = rng.standard_normal((nq, dim)).astype(np.float32)
    rows = np.concatenate([np.sort(rng.choice(n_rows, min(per_query, n_rows), replace=False))
                           for _ in range(nq)]).astype(np.int64)
    qslot = np.repeat(np.arange(nq), rows.size // nq).astype(np.int64)
    qoff = rng.random(rows.size, dtype=np.float32)
    out = np.empty(rows.size, np.float32)
    rescore = _best(rescore_rows_range, (codes, scales, rowlam, rowterm, rows, qoff, qslot, queries,
                                         np.float32(1), out, 0, rows.size), repeats)
    del codes
    table = rng.integers(-127, 128, size=(n_rows, dim + 4), dtype=np.int8)
    int8 = _best(int8_dots_range, (table, rows, queries, qslot, out, 0, rows.size), repeats)
    return {"rows_in_table": n_rows, "pairs": int(rows.size),
            "rescore_ns_per_row": round(rescore / rows.size * 1e9, 1),
            "int8_ns_per_row": round(int8 / rows.size * 1e9, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", default=None, help="import zenstore from this checkout")
    p.add_argument("--rows", type=int, nargs="+", default=[1000, 100_000])
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--queries", type=int, default=50)
    p.add_argument("--per-query", type=int, default=200)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--out", default=None, help="append the JSON line to this file")
    args = p.parse_args(argv)
    if args.src:
        sys.path.insert(0, os.path.abspath(args.src))
    import numba

    import zenstore

    threads = numba.get_num_threads()
    numba.set_num_threads(1)  # the *_range kernels are serial; keep the machine's other core idle
    try:
        by_table = [measure(n, args.dim, args.queries, args.per_query, args.repeats) for n in args.rows]
    finally:
        numba.set_num_threads(threads)
    result = {"zenstore": os.path.dirname(zenstore.__file__), "dim": args.dim,
              "numba_cpu": os.environ.get("NUMBA_CPU_NAME", "host"), "by_table": by_table}
    line = json.dumps(result)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return result


if __name__ == "__main__":
    main()
