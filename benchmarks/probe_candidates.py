#!/usr/bin/env python
"""Study (not part of the engine): could a cheaper coarse product pick the probed base rows?

The exact ``q . c`` against every base row is the largest fixed per-query cost of a batch
(benchmarks/stages.py). This measures, on an existing store and its queries, how often the
exact top-``nprobe`` base rows are all among the top ``K`` rows ranked by a cheaper
approximation -- the rows a two-step probe would then score exactly:

- ``1-bit``: float query x sign bits of each base row, scaled by mean |c|;
- ``int8``: float query x base rows quantized to int8 with a per-row scale.

    python benchmarks/probe_candidates.py data/search-1cb097d7bc86-n1000000-b1024.zen \\
        --queries data/synth-1cb097d7bc86/queries-q1000.npy
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402

import numpy as np  # noqa: E402

from zenstore import Store  # noqa: E402
from zenstore import search as pipeline  # noqa: E402


def approximations(base: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (matrix to multiply the query with, per-row scale)."""
    signs = np.where(base > 0, 1.0, -1.0).astype(np.float32)
    step = np.abs(base).max(axis=1) / 127.0
    int8 = np.round(base / step[:, None]).astype(np.float32)
    return {"1-bit": (signs, np.abs(base).mean(axis=1)), "int8": (int8, step)}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store")
    p.add_argument("--queries", required=True)
    p.add_argument("--nprobes", nargs="+", type=int, default=[2, 4, 8, 16])
    p.add_argument("--multiples", nargs="+", type=int, default=[2, 4, 8], help="K = multiple x nprobe")
    args = p.parse_args(argv)
    queries = np.load(args.queries).astype(np.float32)
    rows = []
    with Store.open(args.store, readonly=True) as store:
        snap = store.snapshot()
        prep = pipeline.prepare(snap, queries)
        base = snap.codec.base.astype(np.float32)  # rotated, like prep.q
        exact = prep.q @ base.T
        for name, (matrix, scale) in approximations(base).items():
            approx = (prep.q @ matrix.T) * scale[None, :]
            for nprobe in args.nprobes:
                truth = np.argsort(-exact, axis=1)[:, :nprobe]
                for mult in args.multiples:
                    cand = np.argsort(-approx, axis=1)[:, : mult * nprobe]
                    covered = np.mean([np.isin(truth[i], cand[i]).all() for i in range(len(queries))])
                    rows.append({"approximation": name, "nprobe": nprobe, "K": mult * nprobe,
                                 "queries_fully_covered": float(covered)})
                    print(f"{name:6s} nprobe {nprobe:3d}  K {mult * nprobe:4d}: exact top-{nprobe} all in "
                          f"the candidates for {covered:.3f} of {len(queries)} queries")
    return rows


if __name__ == "__main__":
    main()
