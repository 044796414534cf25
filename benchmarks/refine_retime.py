#!/usr/bin/env python
"""Re-time a refine store built by benchmarks/search.py (no rebuild, no source .npy needed):
batch QPS (best of 3 passes over all queries) and single-query p50/p99, per nprobe and
thread count, with recall@10 against the cached ground truth.

Written for the 1M int8 run (docs/refine.md "At 1M"): the search.py run timed zenstore while
other processes used ~50% of the CPUs and faiss while they used ~1%, so the zenstore rows were
timed again once the machine was quiet.

    python benchmarks/refine_retime.py data/search-1cb097d7bc86-n1000000-b1024-int8.zen \
        data/synth-1cb097d7bc86 --nprobes 8 16 32 --out docs/benchmarks/search-refine-n1000000-retime.json
"""

from __future__ import annotations

import argparse
import json
import os
import time

import _common  # noqa: F401  (thread environment before numpy)
import numba
import numpy as np

import zenstore


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("store")
    p.add_argument("synth_dir", help="data/synth-<fingerprint> (queries-q1000.npy, gt-n<N>-q1000-k100.npz)")
    p.add_argument("--nprobes", nargs="+", type=int, default=[8, 16, 32])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--refine-k", type=int, default=100)
    p.add_argument("--latency-queries", type=int, default=200)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    Q = np.load(os.path.join(args.synth_dir, "queries-q1000.npy"))
    with zenstore.Store.open(args.store, readonly=True) as s:
        n = len(s)
        gt_file = np.load(os.path.join(args.synth_dir, f"gt-n{n}-q{len(Q)}-k100.npz"))
        gt = gt_file[gt_file.files[0]][:, :10]
        s.search_batch(Q[:64], k=10, nprobe=args.nprobes[0])
        rows = []
        for nprobe in args.nprobes:
            for th in args.threads:
                numba.set_num_threads(th)
                best = float("inf")
                for _ in range(3):
                    t = time.perf_counter()
                    ids = s.search_batch(Q, k=10, nprobe=nprobe, refine_k=args.refine_k)[0]
                    best = min(best, time.perf_counter() - t)
                recall = float(np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(np.asarray(ids), gt)]))
                lat = []
                for q in Q[:args.latency_queries]:
                    t = time.perf_counter()
                    s.search(q, k=10, nprobe=nprobe, refine_k=args.refine_k, with_payload=False)
                    lat.append(time.perf_counter() - t)
                row = {"nprobe": nprobe, "threads": th, "refine_k": args.refine_k, "recall@10": recall,
                       "qps": len(Q) / best, "p50_ms": float(np.median(lat)) * 1e3,
                       "p99_ms": float(np.percentile(lat, 99)) * 1e3, "loadavg": open("/proc/loadavg").read().split()[:3]}
                print(json.dumps(row), flush=True)
                rows.append(row)
    if args.out:
        _common.write_json(args.out, {"benchmark": "refine_retime", "store": args.store, "n": n,
                                      "machine": _common.machine_info(), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
