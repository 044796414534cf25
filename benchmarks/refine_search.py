#!/usr/bin/env python
"""Search with a refine tier (issue 12): recall@10 vs exact search, batch QPS, single-query
latency p50/p99 and rows refined per query, with and without refinement, side by side on
the same store in the same run.

For each data set and each ``--tiers`` value one store is built (``Store.create(...,
refine=tier)`` + ``add``). ``refine=False`` on that store is the hot ranking (the same
answers as a store without a tier: tests/test_refine_store.py checks it), so "without"
and "with" share every byte of the hot data. Swept: ``refine_k`` (``--refine-ks``, the
pool the error bound picks from). Once per store the single-query latency is measured
again right after the refine files were evicted from the page cache
(``posix_fadvise(DONTNEED)``; the hot data stays cached), which is what a query pays when
its candidates' refine records come from disk.

Data: generated 7680-d docs (``zenstore.synth`` profile A, seed 1, via tools/gendata.py,
exact top-10 cached) and, with ``--real``, SciFact MiniLM-L6 384-d from /work/shared/data
(exact top-10 by brute-force float search).

    python benchmarks/refine_search.py --n 100000 --tiers int8 --out docs/benchmarks/refine-search-n100000.json
    python benchmarks/refine_search.py --n 0 --real scifact cranfield --out docs/benchmarks/refine-search-real.json
    python benchmarks/refine_search.py --smoke --data-dir /tmp/rsb --out /tmp/rsb/r.json

Writes docs/benchmarks/refine-search-n<N>.json.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba load

import argparse  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402
from _common import gendata  # noqa: E402

K = 10
REAL_ROOT = "/work/shared/data"


def log(msg: str) -> None:
    print(msg, flush=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="generated docs (0: real sets only)")
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--nq", type=int, default=300)
    p.add_argument("--tiers", nargs="+", default=["int8", "magnitude4"])
    p.add_argument("--refine-ks", nargs="+", type=int, default=[20, 30, 50, 100, 200])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=3, help="batch timings per config (median kept)")
    p.add_argument("--real", nargs="*", default=[], choices=["scifact", "cranfield"])
    p.add_argument("--data-dir", default=gendata.DEFAULT_DATA_DIR)
    p.add_argument("--work-dir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes: seconds (tests run it)")
    return p


def synth_set(args):
    from zenstore.synth import SynthSpec

    spec = SynthSpec(dim=args.dim, seed=1)
    paths = gendata.prepare(spec, args.n, args.nq, 100, args.data_dir, log=log)
    docs = np.load(paths["docs"]["npy"], mmap_mode="r")
    queries = np.load(paths["queries"])
    ids, _ = gendata.load_ground_truth(paths["gt"])
    return f"synth A (seed 1), {args.n:,} x {args.dim}", docs, queries, ids[:, :K]


def real_set(name: str):
    model = {"scifact": "emb-minilm-l6-v2", "cranfield": "emb-mpnet-base-v2"}[name]
    base = os.path.join(REAL_ROOT, name, model)
    docs = np.load(os.path.join(base, "corpus.npy")).astype(np.float32)
    queries = np.load(os.path.join(base, "queries.npy")).astype(np.float32)
    d = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(q @ d.T), axis=1, kind="stable")[:, :K]
    return f"{name} {model}, {len(docs):,} x {docs.shape[1]}", docs, queries, truth


def evict(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(store, queries, truth, reps: int, **opts) -> dict:
    nq = len(queries)
    refined = np.zeros(nq, np.int64)
    ids, _ = store.search_batch(queries, k=K, refined_rows=refined, **opts)  # warm-up and answers
    batch = []
    for _ in range(reps):
        t0 = time.perf_counter()
        store.search_batch(queries, k=K, **opts)
        batch.append(time.perf_counter() - t0)
    lat = single_latencies(store, queries, **opts)
    return {"recall@10": _common.recall_at(ids, truth, K), "qps": nq / float(np.median(batch)),
            "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "refined_mean": float(refined.mean()), "refined_p99": float(np.percentile(refined, 99)),
            "refined_max": int(refined.max())}


def single_latencies(store, queries, **opts) -> np.ndarray:
    out = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        store.search(q, k=K, with_payload=False, **opts)
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def run_set(args, name, docs, queries, truth, work) -> dict:
    import zenstore

    res = {"dataset": name, "n": len(docs), "dim": docs.shape[1], "queries": len(queries), "tiers": []}
    for tier in args.tiers:
        path = os.path.join(work, f"{tier}.zen")
        t0 = time.perf_counter()
        store = zenstore.Store.create(path, dim=docs.shape[1], metric="cosine", refine=tier)
        for a in range(0, len(docs), 20000):
            store.add(np.arange(a, min(len(docs), a + 20000)), np.asarray(docs[a:a + 20000], np.float32))
        build = time.perf_counter() - t0
        st = store.stats()
        row = {"tier": tier, "build_s": build, "hot_bytes_per_vector": st["bytes_per_vector"],
               "refine_bytes_per_vector": st["refine_bytes_per_vector"],
               "refine_file_bytes": st["refine_file_bytes"], "n_base": st["n_base"], "configs": []}
        log(f"{name}: {tier} store built in {build:.0f} s ({st['segments']} segments)")
        configs = [("hot (refine=False)", {"refine": False})]
        configs += [(f"refine_k {rk}", {"refine_k": rk}) for rk in args.refine_ks]
        for label, opts in configs:
            m = measure(store, queries, truth, args.reps, **opts)
            m["config"] = label
            row["configs"].append(m)
            log(f"  {label:<20} recall@10 {m['recall@10']:.4f}  QPS {m['qps']:8.1f}  p50 {m['p50_ms']:6.2f} ms  "
                f"p99 {m['p99_ms']:6.2f} ms  refined {m['refined_mean']:.1f} (p99 {m['refined_p99']:.0f})")
        refine_files = [os.path.join(path, s.refine.file) for s in store.snapshot().manifest.segments]
        evict(refine_files)
        lat = single_latencies(store, queries)
        row["cold_refine_files"] = {"config": "default (refine_k 100)", "p50_ms": float(np.percentile(lat, 50)),
                                    "p99_ms": float(np.percentile(lat, 99))}
        log(f"  refine files evicted first: p50 {row['cold_refine_files']['p50_ms']:.2f} ms  "
            f"p99 {row['cold_refine_files']['p99_ms']:.2f} ms")
        store.close()
        shutil.rmtree(path, ignore_errors=True)
        res["tiers"].append(row)
    return res


def report(res: dict) -> str:
    lines = [f"{res['command']}", _common.machine_line(res["machine"]), ""]
    for ds in res["datasets"]:
        lines.append(f"**{ds['dataset']}** ({ds['queries']} queries, threads {res['threads']})")
        lines.append("")
        rows = []
        for t in ds["tiers"]:
            for c in t["configs"]:
                rows.append({"tier": t["tier"], "hot": t["hot_bytes_per_vector"],
                             "ref": t["refine_bytes_per_vector"] if c["config"].startswith("refine") else 0, **c})
            rows.append({"tier": t["tier"], "config": "refine_k 100, refine files evicted",
                         "p50_ms": t["cold_refine_files"]["p50_ms"], "p99_ms": t["cold_refine_files"]["p99_ms"]})
        lines.append(_common.table(rows, [("tier", "tier", ""), ("config", "config", ""), ("hot", "hot B/vec", "d"),
                                          ("ref", "refine B/vec", ","), ("recall@10", "recall@10", ".4f"),
                                          ("qps", "batch QPS", ".1f"), ("p50_ms", "p50 ms", ".2f"),
                                          ("p99_ms", "p99 ms", ".2f"), ("refined_mean", "rows refined mean", ".1f"),
                                          ("refined_p99", "p99", ".0f")]))
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.n, args.dim, args.nq, args.refine_ks, args.reps = 1500, 128, 20, [20, 100], 1
    _common.set_threads(args.threads)
    res = {"benchmark": "refine_search", "command": _common.rerun_command("benchmarks/refine_search.py", argv),
           "machine": _common.machine_info(), "threads": args.threads, "params": vars(args), "datasets": []}
    work = tempfile.mkdtemp(prefix="refine-search-", dir=args.work_dir)
    try:
        sets = ([synth_set(args)] if args.n else []) + [real_set(r) for r in args.real]
        for name, docs, queries, truth in sets:
            res["datasets"].append(run_set(args, name, docs, queries, truth, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = args.out or os.path.join("docs", "benchmarks", f"refine-search-n{args.n}.json")
    return _common.publish(res, out, report)


if __name__ == "__main__":
    main()
