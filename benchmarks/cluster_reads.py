#!/usr/bin/env python
"""The Ray overhead per query of a sharded store's reader actors, ordinary calls against a
Ray Compiled Graph (``compiled_reads=True``), each paired call by call with the same
search in-process.

For an existing sharded store (built by ``benchmarks/cluster.py --work-dir DIR``), two
blocks, one after the other so that the compiled graph's polling reader (it spins ~0.5
core while it waits) is not open while the ordinary path is measured:

1. in-process (``backend="local"``) and ordinary reader actors, alternating query by query;
2. in-process and compiled reader actors, alternating the same way.

Overhead = median over the queries of (Ray latency - in-process latency) of the same
query in the same block, so drifting load falls on both. Also: batch QPS of each path,
and the idle CPU of a compiled reader actor (psutil-free: /proc/PID/stat).

    OMP_WAIT_POLICY=passive python benchmarks/cluster_reads.py --store /tmp/zc/sharded-4.zens --nprobe 16
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

os.environ.setdefault("RAY_worker_niceness", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def paired(local, remote, queries, nprobe, k):
    gaps, lat_l, lat_r = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        local.search(q, k=k, nprobe=nprobe, with_payload=False)
        t1 = time.perf_counter()
        remote.search(q, k=k, nprobe=nprobe, with_payload=False)
        t2 = time.perf_counter()
        lat_l.append(t1 - t0)
        lat_r.append(t2 - t1)
        gaps.append((t2 - t1) - (t1 - t0))
    ms = lambda v, p: float(np.percentile(np.asarray(v) * 1e3, p))  # noqa: E731
    return {"in_process_p50_ms": ms(lat_l, 50), "ray_p50_ms": ms(lat_r, 50), "ray_p99_ms": ms(lat_r, 99),
            "overhead_p50_ms": ms(gaps, 50), "pairs": len(gaps)}


def batch_qps(store, queries, nprobe, k, repeats=3):
    best = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        store.search_batch(queries, k=k, nprobe=nprobe)
        best.append(len(queries) / (time.perf_counter() - t0))
    return float(np.median(best))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", required=True, help="a sharded store directory")
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--nprobe", default="16", help="an int or 'all'")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    import ray

    from zenstore.cluster import ShardedStore

    nprobe = args.nprobe if args.nprobe == "all" else int(args.nprobe)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    with ShardedStore.open(args.store, readonly=True, backend="local") as local:
        dim = local.dim
        rng = np.random.default_rng(7)
        queries = rng.standard_normal((args.queries, dim)).astype(np.float32)
        result = {"store": args.store, "shards": local.shards, "rows": len(local), "nprobe": args.nprobe,
                  "load_at_start": os.getloadavg()[0], "blocks": {}}
        for name, compiled in (("ordinary", False), ("compiled", True)):
            with ShardedStore.open(args.store, readonly=True, backend="ray", compiled_reads=compiled,
                                   actor_options={"num_cpus": 0.01}) as remote:
                for q in queries[:20]:  # warm both paths (and compile the graph)
                    local.search(q, k=args.k, nprobe=nprobe, with_payload=False)
                    remote.search(q, k=args.k, nprobe=nprobe, with_payload=False)
                block = paired(local, remote, queries, nprobe, args.k)
                block["batch_qps_in_process"] = batch_qps(local, queries, nprobe, args.k)
                block["batch_qps_ray"] = batch_qps(remote, queries, nprobe, args.k)
                pid = ray.get(remote.actors[0].pid.remote())
                c0 = cpu_seconds(pid)
                time.sleep(3.0)
                block["reader_idle_cpu_s_per_s"] = (cpu_seconds(pid) - c0) / 3.0
                result["blocks"][name] = block
                print(f"{name:>9}: in-process p50 {block['in_process_p50_ms']:.2f} ms, Ray p50 "
                      f"{block['ray_p50_ms']:.2f} / p99 {block['ray_p99_ms']:.2f} ms, overhead p50 "
                      f"{block['overhead_p50_ms']:+.2f} ms; batch QPS {block['batch_qps_in_process']:.0f} "
                      f"in-process, {block['batch_qps_ray']:.0f} Ray; idle reader CPU "
                      f"{block['reader_idle_cpu_s_per_s']:.2f} s/s", flush=True)
    ray.shutdown()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
