#!/usr/bin/env python
"""Sharded zenstore on Ray against one in-process Store, side by side in one run.

For N generated documents (``tools/gendata.py``, streamed to ``data/synth-*/docs-n<N>.npy``;
never held in memory whole) it builds:

* one ``Store``, loaded with ``zenstore.ingest.ingest`` (the library loader), and
* a ``ShardedStore`` of S shards for each S in ``--shards``, loaded with
  ``ShardedStore.ingest`` from a Ray Data dataset (``ray.data.range(N).map_batches(...)``
  reading the same ``.npy`` in row ranges: bounded memory, the same rows in the same order),

then measures, on the same queries and the same cores:

* ingest rows/s (training included, as a user sees it);
* batch QPS (``search_batch`` of all queries) and single-query p50/p99 (``search``);
* for every sharded store three read paths: in-process reads beside the writer actors
  (``local_reads=True``, the default), the ``local`` backend (no Ray at all), and Ray
  reader actors (``ShardedStore.open(readonly=True, backend="ray")``); the **Ray overhead
  per query** is the actor path's p50 minus the in-process path's p50 over the same shards,
  and the bare round trip of a scatter of no-op calls to the S actors is measured too;
* each shard's own single-query latency distribution (4 shards, or the largest S), from
  which it simulates the scatter-gather tail: p50/p99 of the max over S shards for
  S = 4 ... 256 (bootstrap of the measured samples; independent shards assumed).

Targets (issue 16): Ray overhead per query < 1 ms at p50; sharded batch QPS >= 0.8x the
single store's; ingest rows/s >= the single store's. The report says which were met.

    python benchmarks/cluster.py --n 100000                     # ~10 min on 2 cores
    python benchmarks/cluster.py --n 20000 --shards 1 2 --queries 100
    python benchmarks/cluster.py --n 3000 --dim 256 --data-dir /tmp/zc --out /tmp/zc/cluster.json
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import functools  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402
import numpy as np  # noqa: E402
from _common import gendata  # noqa: E402

SIM_SHARDS = (4, 8, 16, 32, 64, 128, 256)
SIM_TRIALS = 20000


def read_rows(path: str, header: int, dim: int, batch: dict) -> dict:
    """A Ray Data batch of ``ids`` -> those rows of the .npy (ids are row numbers)."""
    ids = batch["id"].astype(np.int64)
    a, b = int(ids[0]), int(ids[-1]) + 1
    if b - a == len(ids) and np.all(np.diff(ids) == 1):
        with open(path, "rb") as f:
            f.seek(header + a * dim * 4)
            x = np.fromfile(f, dtype=np.float32, count=(b - a) * dim).reshape(b - a, dim)
    else:  # not contiguous: gather
        mm = np.memmap(path, dtype=np.float32, mode="r", offset=header, shape=(int(ids.max()) + 1, dim))
        x = np.asarray(mm[ids])
    return {"id": ids, "vector": x}


def npy_dataset(path: str, n: int, dim: int):
    import ray.data

    with open(path, "rb") as f:
        gendata._npy_header(f)
        header = f.tell()
    blocks = max(1, n // 8192)
    return ray.data.range(n, override_num_blocks=blocks).map_batches(
        functools.partial(read_rows, path, header, dim), batch_size=4096, batch_format="numpy")


def latencies(search, queries) -> np.ndarray:
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        search(q)
        out[i] = time.perf_counter() - t
    return out * 1e3


def measure_reads(store, queries, k: int, nprobe, repeats: int) -> dict:
    """Single-query latencies and batch QPS of ``store`` (a Store or a ShardedStore)."""
    search = functools.partial(store.search, k=k, nprobe=nprobe, with_payload=False)
    for q in queries[:3]:
        search(q)  # warm: kernels loaded, pages mapped
    lat = latencies(search, queries)
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        store.search_batch(queries, k=k, nprobe=nprobe)
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(lat.mean()), "batch_qps": len(queries) / best, "latencies_ms": lat.tolist()}


def scatter_rtt(ray, actors, queries) -> dict:
    """p50/p99 of one scatter-gather of a no-op call (``length``) to every actor."""
    for _ in range(5):
        ray.get([a.length.remote() for a in actors])
    lat = np.empty(len(queries))
    for i in range(len(queries)):
        t = time.perf_counter()
        ray.get([a.length.remote() for a in actors])
        lat[i] = time.perf_counter() - t
    lat *= 1e3
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}


def simulate_tail(samples_ms: np.ndarray, shard_counts=SIM_SHARDS, trials: int = SIM_TRIALS, seed: int = 0) -> list:
    """p50/p99 of max over S independent draws from the measured per-shard latencies."""
    rng = np.random.default_rng(seed)
    med = float(np.median(samples_ms))
    rows = []
    for s in shard_counts:
        worst = samples_ms[rng.integers(0, len(samples_ms), size=(trials, s))].max(axis=1)
        rows.append({"shards": s, "p50_ms": float(np.percentile(worst, 50)), "p99_ms": float(np.percentile(worst, 99)),
                     "p99_over_shard_p50": float(np.percentile(worst, 99)) / med})
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nprobe", type=int, nargs="+", default=[0, 16], help="0: full scan (default: 0 16)")
    p.add_argument("--repeats", type=int, default=3, help="batch runs, best kept")
    p.add_argument("--data-dir", default=gendata.DEFAULT_DATA_DIR)
    p.add_argument("--work-dir", default=None, help="where the stores are built (default: a temp dir)")
    p.add_argument("--ray-niceness", type=int, default=0,
                   help="nice value of Ray's worker processes (Ray's own default is 15; default here 0, "
                        "the in-process store's)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    # Ray starts its workers (the shard actors) at nice 15 by default: on a machine shared
    # with other work they would then lose every contended core to the in-process store
    os.environ["RAY_worker_niceness"] = str(args.ray_niceness)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from zenstore import Store
    from zenstore.cluster import ShardedStore
    from zenstore.ingest import IngestOptions, ingest

    machine = _common.machine_info()
    print(_common.machine_line(machine), flush=True)
    spec = gendata.make_spec(args.dim)
    paths = gendata.prepare(spec, args.n, 0, data_dir=args.data_dir)
    docs = paths["docs"]["npy"]
    queries = np.load(gendata.ensure_queries(spec, args.queries, args.data_dir))
    nprobes = [None if v == 0 else v for v in args.nprobe]
    work = args.work_dir or tempfile.mkdtemp(prefix="zcluster-")
    os.makedirs(work, exist_ok=True)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    result = {"machine": machine, "ray_worker_niceness": args.ray_niceness, "n": args.n, "dim": args.dim,
              "queries": args.queries, "k": args.k,
              "ingest": [], "reads": [], "rerun": _common.rerun_command("benchmarks/cluster.py", argv)}
    try:
        # --- one in-process store -------------------------------------------------------
        single_path = os.path.join(work, "single.zen")
        shutil.rmtree(single_path, ignore_errors=True)
        single = Store.create(single_path, dim=args.dim)
        with _common.CpuWatch() as cw:
            t = time.perf_counter()
            ingest(single, [docs], IngestOptions(batch_size=4096))
            dt = time.perf_counter() - t
        result["ingest"].append({"store": "single", "shards": 0, "seconds": dt, "rows_per_s": args.n / dt,
                                 "others_cpu": cw.others})
        print(f"single store ingest: {args.n / dt:,.0f} rows/s", flush=True)
        for nprobe in nprobes:
            r = measure_reads(single, queries, args.k, nprobe, args.repeats)
            result["reads"].append({"store": "single", "shards": 0, "path": "in-process", "nprobe": nprobe, **r})
        base = single.base()

        for s in args.shards:
            path = os.path.join(work, f"sharded-{s}.zens")
            shutil.rmtree(path, ignore_errors=True)
            store = ShardedStore.create(path, dim=args.dim, shards=s)
            with _common.CpuWatch() as cw:
                t = time.perf_counter()
                summary = store.ingest(npy_dataset(docs, args.n, args.dim), batch_size=4096, name="bench")
                dt = time.perf_counter() - t
            assert summary.rows_added == args.n and len(store) == args.n
            result["ingest"].append({"store": "sharded", "shards": s, "seconds": dt, "rows_per_s": args.n / dt,
                                     "others_cpu": cw.others, "per_shard": list(summary.per_shard_added),
                                     "driver_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                     * 1024})
            print(f"{s} shards ingest: {args.n / dt:,.0f} rows/s", flush=True)
            same_base = np.array_equal(store.base().matrix, base.matrix)
            for nprobe in nprobes:
                r = measure_reads(store, queries, args.k, nprobe, args.repeats)
                result["reads"].append({"store": "sharded", "shards": s, "path": "in-process beside actors",
                                        "nprobe": nprobe, **r})
            store.close()
            with ShardedStore.open(path, readonly=True, backend="local") as local:
                for nprobe in nprobes:
                    r = measure_reads(local, queries, args.k, nprobe, args.repeats)
                    result["reads"].append({"store": "sharded", "shards": s, "path": "local backend",
                                            "nprobe": nprobe, **r})
            with ShardedStore.open(path, readonly=True, backend="ray") as remote:
                rtt = scatter_rtt(ray, remote.actors, queries)
                for nprobe in nprobes:
                    r = measure_reads(remote, queries, args.k, nprobe, args.repeats)
                    result["reads"].append({"store": "sharded", "shards": s, "path": "ray reader actors",
                                            "nprobe": nprobe, "scatter_noop": rtt, **r})
            result.setdefault("same_base_as_single", {})[s] = bool(same_base)
            if s == max(args.shards):
                per_shard = []
                for i in range(s):
                    with Store.open(os.path.join(path, f"shard-{i:04d}"), readonly=True) as shard:
                        search = functools.partial(shard.search, k=args.k, with_payload=False)
                        for q in queries[:3]:
                            search(q)
                        per_shard.append(latencies(search, queries))
                samples = np.concatenate(per_shard)
                result["per_shard_latency"] = {
                    "shards": s, "rows_per_shard": args.n // s, "p50_ms": float(np.percentile(samples, 50)),
                    "p90_ms": float(np.percentile(samples, 90)), "p99_ms": float(np.percentile(samples, 99)),
                    "max_ms": float(samples.max()), "samples": len(samples)}
                result["tail_simulation"] = simulate_tail(samples)
    finally:
        ray.shutdown()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    report(result)
    out = args.out or os.path.join(_common.OUT_DIR, f"cluster-n{args.n}.json")
    slim = {**result, "reads": [{k: v for k, v in r.items() if k != "latencies_ms"} for r in result["reads"]]}
    print(f"wrote {_common.write_json(out, slim)}")
    return result


def report(r: dict) -> None:
    single_ingest = next(x for x in r["ingest"] if x["store"] == "single")["rows_per_s"]
    print("\ningest (rows/s, training included)")
    for x in r["ingest"]:
        name = "single store" if x["store"] == "single" else f"{x['shards']} shards (Ray Data)"
        print(f"  {name:<26}{x['rows_per_s']:>10,.0f}   {x['rows_per_s'] / single_ingest:5.2f}x single"
              f"   (other processes used {100 * (x['others_cpu'] or 0):.0f}% of the CPUs)")
    print("\nreads: single-query p50 / p99 (ms), batch QPS, QPS vs single store")
    singles = {x["nprobe"]: x for x in r["reads"] if x["store"] == "single"}
    for x in r["reads"]:
        ref = singles[x["nprobe"]]
        name = "single store" if x["store"] == "single" else f"{x['shards']} shards, {x['path']}"
        extra = ""
        if x["path"] == "ray reader actors":
            local = next(y for y in r["reads"] if y["shards"] == x["shards"] and y["nprobe"] == x["nprobe"]
                         and y["path"] == "local backend")
            extra = (f"   Ray overhead p50 {x['p50_ms'] - local['p50_ms']:+.2f} ms (no-op scatter "
                     f"{x['scatter_noop']['p50_ms']:.2f} ms)")
        print(f"  nprobe {str(x['nprobe']):<5}{name:<44}{x['p50_ms']:8.2f} {x['p99_ms']:8.2f} "
              f"{x['batch_qps']:9.1f} {x['batch_qps'] / ref['batch_qps']:6.2f}x{extra}")
    if "tail_simulation" in r:
        ps = r["per_shard_latency"]
        print(f"\nscatter-gather tail from {ps['samples']} per-shard latencies ({ps['rows_per_shard']:,} rows per "
              f"shard: p50 {ps['p50_ms']:.2f} ms, p99 {ps['p99_ms']:.2f} ms)")
        for row in r["tail_simulation"]:
            print(f"  S={row['shards']:<4} max over shards: p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms"
                  f"  ({row['p99_over_shard_p50']:.2f}x a shard's p50)")
    print(f"\nrerun: {r['rerun']}")


if __name__ == "__main__":
    main()
