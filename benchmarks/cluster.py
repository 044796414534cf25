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
* for every sharded store two read paths: in-process reads over read-only handles of the
  shards (the ``local`` backend; a writable Ray-backed store reads the same way by
  default, ``local_reads=True``) and Ray reader actors (``ShardedStore.open(readonly=True,
  backend="ray")``: one reader actor per node answers for all its shards in one call;
  with ``--per-shard-readers`` also one actor per shard, ``reader_actors=S``); the **Ray
  overhead per query** is the actor path's p50 minus the in-process path's p50 over the
  same shards, and the bare round trip of a scatter of no-op calls to the actors is
  measured too. All stores are open at once and measured in
  interleaved rounds, so the load of a shared machine drifts alike for all of them;
* each shard's own single-query latency distribution (4 shards, or the largest S), from
  which it simulates the scatter-gather tail: p50/p99 of the max over S shards for
  S = 4 ... 256 (bootstrap of the measured samples; independent shards assumed).

Targets (issue 16): Ray overhead per query < 1 ms at p50; sharded batch QPS >= 0.8x the
single store's; ingest rows/s >= the single store's. The report says which were met.

    python benchmarks/cluster.py --n 100000 --work-dir /tmp/zc  # ~10 min on 2 quiet cores
    python benchmarks/cluster.py --n 300000 --work-dir /tmp/zc --ingest-only --out /tmp/zc/ingest.json
    python benchmarks/cluster.py --n 300000 --work-dir /tmp/zc --reuse /tmp/zc/ingest.json
    python benchmarks/cluster.py --n 100000 --work-dir /tmp/zc --reuse docs/benchmarks/cluster-n100000.json
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
import json  # noqa: E402
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


def _tree_ticks() -> dict:
    """{pid: utime + stime in clock ticks} of this process and all its descendants (with
    a local ``ray.init`` that is every Ray process: GCS, raylet, workers, actors)."""
    stats = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime + stime
    children: dict = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = {}, [os.getpid()]
    while todo:
        pid = todo.pop()
        if pid in stats:
            out[pid] = stats[pid][1]
        todo.extend(children.get(pid, ()))
    return out


class TreeCpu:
    """CPU seconds used by this process and its descendants (Ray's) while a block runs:
    the work a loader did, whatever share of a contended machine it got. Processes that
    ended inside the block are missed (the shard actors and Ray Data's workers live on)."""

    def __enter__(self):
        self.t0 = _tree_ticks()
        return self

    def __exit__(self, *exc):
        t1 = _tree_ticks()
        hz = os.sysconf("SC_CLK_TCK")
        self.seconds = sum(v - self.t0.get(pid, 0) for pid, v in t1.items()) / hz
        self.descendants = self.seconds - (t1.get(os.getpid(), 0) - self.t0.get(os.getpid(), 0)) / hz


def latencies(search, queries) -> np.ndarray:
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t = time.perf_counter()
        search(q)
        out[i] = time.perf_counter() - t
    return out * 1e3


def measure_interleaved(stores: dict, queries, k: int, nprobes, rounds: int) -> list:
    """Per (store, nprobe): single-query latencies (each round times a slice of the
    queries) and batch QPS (each round times one ``search_batch`` of all queries; the
    median is kept), the stores taken in turn within every round."""
    lat = {(key, nprobe): [] for key in stores for nprobe in nprobes}
    qps = {(key, nprobe): [] for key in stores for nprobe in nprobes}
    for key, store in stores.items():  # warm every store first
        for nprobe in nprobes:
            store.search_batch(queries[:8], k=k, nprobe=nprobe)
            for q in queries[:3]:
                store.search(q, k=k, nprobe=nprobe, with_payload=False)
    for r in range(rounds):
        for key, store in stores.items():
            for nprobe in nprobes:
                search = functools.partial(store.search, k=k, nprobe=nprobe, with_payload=False)
                lat[(key, nprobe)].append(latencies(search, queries[r::rounds]))
                t = time.perf_counter()
                store.search_batch(queries, k=k, nprobe=nprobe)
                qps[(key, nprobe)].append(len(queries) / (time.perf_counter() - t))
    out = []
    for (key, nprobe), parts in lat.items():
        ms = np.concatenate(parts)
        kind, shards, path = key
        out.append({"store": kind, "shards": shards, "path": path, "nprobe": nprobe,
                    "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                    "mean_ms": float(ms.mean()), "batch_qps": float(np.median(qps[(key, nprobe)])),
                    "batch_qps_rounds": [float(v) for v in qps[(key, nprobe)]]})
    return out


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


def tail_quantile(samples_ms: np.ndarray, p: float, top: float = 0.05) -> float:
    """Quantile ``p`` of the per-shard latency: empirical while at least ``top * n / 10``
    samples lie beyond it; past that, a Pareto tail fitted to the top ``top`` fraction of
    the samples (Hill's estimator of its index), so quantiles beyond the largest sample are
    extrapolated instead of stopping at it. A power law, not an exponential: the slow
    samples here come from the scheduler, and their tail is heavy."""
    x = np.sort(np.asarray(samples_ms, dtype=np.float64))
    n = len(x)
    k = max(10, int(top * n))
    if (1 - p) * n >= k / 10:
        return float(np.quantile(x, p))
    tail = x[n - k:]
    alpha = k / float(np.sum(np.log(tail / tail[0])))
    return float(tail[0] * ((k / n) / (1 - p)) ** (1 / alpha))


def simulate_tail(samples_ms: np.ndarray, shard_counts=SIM_SHARDS, trials: int = SIM_TRIALS, seed: int = 0) -> list:
    """Scatter-gather latency = the slowest of S shards (independent shards assumed).

    ``bootstrap_*``: p50/p99 of the max of S draws from the measured samples (it cannot
    exceed the largest sample). ``p50_ms`` / ``p99_ms``: from :func:`tail_quantile`:
    P(max <= x) = F(x)^S, so the max's quantile p is F^-1(p^(1/S)).
    """
    rng = np.random.default_rng(seed)
    med = float(np.median(samples_ms))
    rows = []
    for s in shard_counts:
        worst = samples_ms[rng.integers(0, len(samples_ms), size=(trials, s))].max(axis=1)
        p50, p99 = tail_quantile(samples_ms, 0.5 ** (1 / s)), tail_quantile(samples_ms, 0.99 ** (1 / s))
        rows.append({"shards": s, "bootstrap_p50_ms": float(np.percentile(worst, 50)),
                     "bootstrap_p99_ms": float(np.percentile(worst, 99)), "p50_ms": p50, "p99_ms": p99,
                     "p99_over_shard_p50": p99 / med})
    return rows


class _Done(Exception):
    """--tail-only: nothing more to measure."""


def measure_tail(result: dict, Store, path: str, s: int, queries, args) -> None:
    """Each shard's own single-query latencies (``--tail-repeats`` passes over the queries),
    and the scatter-gather tail simulated from them."""
    per_shard = []
    for i in range(s):
        with Store.open(os.path.join(path, f"shard-{i:04d}"), readonly=True) as shard:
            search = functools.partial(shard.search, k=args.k, with_payload=False)
            for q in queries[:3]:
                search(q)
            per_shard.append(np.concatenate([latencies(search, queries) for _ in range(args.tail_repeats)]))
    samples = np.concatenate(per_shard)
    result["per_shard_latency"] = {
        "shards": s, "rows_per_shard": args.n // s, "p50_ms": float(np.percentile(samples, 50)),
        "p90_ms": float(np.percentile(samples, 90)), "p99_ms": float(np.percentile(samples, 99)),
        "max_ms": float(samples.max()), "samples": len(samples),
        "samples_ms": [round(float(v), 4) for v in samples]}
    result["tail_simulation"] = simulate_tail(samples)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--nprobe", type=int, nargs="+", default=[0, 16], help="0: full scan (default: 0 16)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved read rounds (default 5)")
    p.add_argument("--tail-repeats", type=int, default=3, help="passes over the queries per shard for the "
                   "latency distribution of the tail simulation (default 3)")
    p.add_argument("--tail-only", action="store_true", help="with --reuse: only measure the per-shard "
                   "latencies and simulate the tail (reads of the earlier result kept)")
    p.add_argument("--per-shard-readers", action=argparse.BooleanOptionalAction, default=True,
                   help="also measure Ray reads with one reader actor per shard (default: on)")
    p.add_argument("--ingest-only", action="store_true", help="build the stores, record the ingest figures and "
                   "stop (measure the reads later with --reuse; needs --work-dir)")
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="skip the ingests: reuse the stores in --work-dir and the ingest figures of this "
                        "earlier result file")
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
    # 0 is a full scan: "all" (nprobe=None would be the store's calibrated default, and a
    # Store and a ShardedStore need not have the same one: Ray Data ingests route batches of
    # ~batch_size / S rows to each shard, too few for a shard to calibrate on)
    nprobes = ["all" if v == 0 else v for v in args.nprobe]
    work = args.work_dir or tempfile.mkdtemp(prefix="zcluster-")
    os.makedirs(work, exist_ok=True)
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    if args.reuse and not args.work_dir:
        p.error("--reuse needs the --work-dir of the run that built the stores")
    if args.tail_only and not args.reuse:
        p.error("--tail-only needs --reuse")
    if args.ingest_only and (args.reuse or not args.work_dir):
        p.error("--ingest-only builds the stores: it needs --work-dir and no --reuse")
    result = {"machine": machine, "ray_worker_niceness": args.ray_niceness, "n": args.n, "dim": args.dim,
              "queries": args.queries, "k": args.k,
              "ingest": [], "reads": [], "rerun": _common.rerun_command("benchmarks/cluster.py", argv)}
    try:
        # --- ingest: one in-process store, then a sharded store per S ------------------------
        single_path = os.path.join(work, "single.zen")
        paths_by_s = {s: os.path.join(work, f"sharded-{s}.zens") for s in args.shards}
        prev = {}
        if args.reuse:
            with open(args.reuse) as f:
                prev = json.load(f)
            result["ingest"] = prev["ingest"]
            result["ingest_from"] = args.reuse
            result["ingest_machine_load"] = prev["machine"].get("loadavg_at_start")
        else:
            shutil.rmtree(single_path, ignore_errors=True)
            with Store.create(single_path, dim=args.dim) as single, _common.CpuWatch() as cw, TreeCpu() as tc:
                t = time.perf_counter()
                ingest(single, [docs], IngestOptions(batch_size=4096))
                dt = time.perf_counter() - t
            result["ingest"].append({"store": "single", "shards": 0, "seconds": dt, "rows_per_s": args.n / dt,
                                     "others_cpu": cw.others, "cpu_seconds": tc.seconds,
                                     "cpu_us_per_row": 1e6 * tc.seconds / args.n})
            print(f"single store ingest: {args.n / dt:,.0f} rows/s", flush=True)
            for s, path in paths_by_s.items():
                shutil.rmtree(path, ignore_errors=True)
                with ShardedStore.create(path, dim=args.dim, shards=s) as store, _common.CpuWatch() as cw, \
                        TreeCpu() as tc:
                    t = time.perf_counter()
                    summary = store.ingest(npy_dataset(docs, args.n, args.dim), batch_size=4096, name="bench")
                    dt = time.perf_counter() - t
                    assert summary.rows_added == args.n and len(store) == args.n
                result["ingest"].append({"store": "sharded", "shards": s, "seconds": dt, "rows_per_s": args.n / dt,
                                         "others_cpu": cw.others, "cpu_seconds": tc.seconds,
                                         "others_cpu_without_ray": max(0.0, cw.others - tc.descendants
                                                                       / (dt * (os.cpu_count() or 1))),
                                         "cpu_us_per_row": 1e6 * tc.seconds / args.n,
                                         "per_shard": list(summary.per_shard_added),
                                         "driver_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                         * 1024})
                print(f"{s} shards ingest: {args.n / dt:,.0f} rows/s", flush=True)

        if args.ingest_only:
            raise _Done
        if args.tail_only:
            result["reads"] = prev["reads"]
            measure_tail(result, Store, paths_by_s[max(args.shards)], max(args.shards), queries, args)
            raise _Done
        # --- reads: every store open at once, measured in interleaved rounds ----------------
        # (the machine's load drifts; round-robin over the stores gives each the same drift)
        stores = {("single", 0, "in-process"): Store.open(single_path, readonly=True)}
        base = stores[("single", 0, "in-process")].base()
        for s, path in paths_by_s.items():
            stores[("sharded", s, "in-process (local backend)")] = ShardedStore.open(path, readonly=True,
                                                                                    backend="local")
            stores[("sharded", s, "ray reader actors")] = ShardedStore.open(
                path, readonly=True, backend="ray", actor_options={"num_cpus": 0.01})
            if s > 1 and args.per_shard_readers:
                stores[("sharded", s, "ray reader actors, one per shard")] = ShardedStore.open(
                    path, readonly=True, backend="ray", reader_actors=s, actor_options={"num_cpus": 0.01})
            result.setdefault("same_base_as_single", {})[s] = bool(
                np.array_equal(stores[("sharded", s, "ray reader actors")].base().matrix, base.matrix))
        try:
            result["reads"] = measure_interleaved(stores, queries, args.k, nprobes, args.rounds)
            for (kind, s, path), store in stores.items():
                if path.startswith("ray reader actors"):
                    rtt = scatter_rtt(ray, store.actors, queries)
                    for r in result["reads"]:
                        if r["shards"] == s and r["path"] == path:
                            r["scatter_noop"] = rtt
            measure_tail(result, Store, paths_by_s[max(args.shards)], max(args.shards), queries, args)
        finally:
            for store in stores.values():
                store.close()
    except _Done:
        pass
    finally:
        ray.shutdown()
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    report(result)
    out = args.out or os.path.join(_common.OUT_DIR, f"cluster-n{args.n}.json")
    print(f"wrote {_common.write_json(out, result)}")
    return result


def report(r: dict) -> None:
    single_ingest = next(x for x in r["ingest"] if x["store"] == "single")["rows_per_s"]
    print("\ningest (rows/s, training included)")
    for x in r["ingest"]:
        name = "single store" if x["store"] == "single" else f"{x['shards']} shards (Ray Data)"
        print(f"  {name:<26}{x['rows_per_s']:>10,.0f}   {x['rows_per_s'] / single_ingest:5.2f}x single"
              f"   (other processes used {100 * x.get('others_cpu_without_ray', x['others_cpu'] or 0):.0f}%"
              " of the CPUs)"
              + (f"; {x['cpu_us_per_row']:,.0f} CPU us/row, Ray's processes included" if "cpu_us_per_row" in x else ""))
    print("\nreads: single-query p50 / p99 (ms), batch QPS, QPS vs single store")
    singles = {x["nprobe"]: x for x in r["reads"] if x["store"] == "single"}
    for x in r["reads"]:
        ref = singles[x["nprobe"]]
        name = "single store" if x["store"] == "single" else f"{x['shards']} shards, {x['path']}"
        extra = ""
        if x["path"].startswith("ray reader actors"):
            local = next(y for y in r["reads"] if y["shards"] == x["shards"] and y["nprobe"] == x["nprobe"]
                         and y["path"] == "in-process (local backend)")
            extra = (f"   Ray overhead p50 {x['p50_ms'] - local['p50_ms']:+.2f} ms (no-op scatter "
                     f"{x['scatter_noop']['p50_ms']:.2f} ms)")
        print(f"  nprobe {str(x['nprobe']):<5}{name:<54}{x['p50_ms']:8.2f} {x['p99_ms']:8.2f} "
              f"{x['batch_qps']:9.1f} {x['batch_qps'] / ref['batch_qps']:6.2f}x{extra}")
    if "tail_simulation" in r:
        ps = r["per_shard_latency"]
        print(f"\nscatter-gather tail from {ps['samples']} per-shard latencies ({ps['rows_per_shard']:,} rows per "
              f"shard: p50 {ps['p50_ms']:.2f} ms, p99 {ps['p99_ms']:.2f} ms)")
        for row in r["tail_simulation"]:
            print(f"  S={row['shards']:<4} max over shards: p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms"
                  f"  ({row['p99_over_shard_p50']:.2f}x a shard's p50; bootstrap p99 {row['bootstrap_p99_ms']:.2f})")
    print(f"\nrerun: {r['rerun']}")


if __name__ == "__main__":
    main()
