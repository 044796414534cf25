#!/usr/bin/env python
"""The coarse step (zenstore/coarse.py): the projected probe against the exact probe.

Three measurements, each side by side in the same run:

- ``store``: on an existing store and its queries, for each nprobe: recall@10 of the
  whole search with the exact probe (``q . c`` against every base row) and with the
  projected probe, the share of queries whose probed base rows are identical, and the
  coarse step's microseconds per query (batch and single query) both ways.
- ``beir``: the same on a real collection's embeddings (a store built in a temporary
  directory; ground truth = exact float top-10 over the corpus).
- ``store`` / ``beir`` also time the calibrated default ``search()`` against the full
  scan (recall@10 and QPS, alternating runs; ``--default-only`` for just that).
- ``scaling``: per-query coarse cost at n_base 1k/4k/16k (synthetic 7680-d rows from
  ``zenstore.synth``; timing only, plus the projection's one-off derivation cost).

    python benchmarks/coarse.py store data/search-1cb097d7bc86-n100000-b1024.zen \\
        --queries data/synth-1cb097d7bc86/queries-q1000.npy --gt data/synth-1cb097d7bc86/gt-n100000-q1000-k100.npz
    python benchmarks/coarse.py beir /work/shared/data/scifact --n-base 215 --force
    python benchmarks/coarse.py scaling --n-base 1024 4096 16384
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402
import numpy as np  # noqa: E402

from zenstore import Store, coarse  # noqa: E402
from zenstore import search as pipeline  # noqa: E402
from zenstore.codec import Codec  # noqa: E402
from zenstore.kernels.topk import top_mask  # noqa: E402
from zenstore.validation import for_metric  # noqa: E402

K = 10


def exact_probe(codec: Codec, q: np.ndarray, nprobe: int) -> np.ndarray:
    """Today's coarse step: the exact product against every base row, then top_mask."""
    qoff = codec.base_dots(q).astype(np.float32, copy=False)
    close = 2 * qoff - codec.base_sqnorm[None, :] if codec.config.metric == "l2" else qoff
    mask = np.empty(qoff.shape, dtype=np.bool_)
    top_mask(np.ascontiguousarray(close, dtype=np.float32), nprobe, mask)
    return mask


def coarse_times(codec: Codec, q: np.ndarray, nprobe: int, repeats: int, singles: int) -> dict:
    """Microseconds per query of both coarse steps: the whole batch (best of ``repeats``)
    and single queries (median of ``singles``). The two are timed alternately (batch by
    batch, query by query), so load from other processes falls on both alike."""
    steps = {"exact": lambda x: exact_probe(codec, x, nprobe), "projected": lambda x: codec.probe(x, nprobe)}
    batch = {name: [] for name in steps}
    single = {name: [] for name in steps}
    for fn in steps.values():
        fn(q[:4])  # JIT, derivation, page faults
        fn(q[:1])
    for _ in range(repeats):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn(q)
            batch[name].append(time.perf_counter() - t0)
    for i in range(min(singles, len(q))):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn(q[i : i + 1])
            single[name].append(time.perf_counter() - t0)
    out = {}
    for name in steps:
        out[f"{name} batch us"] = 1e6 * min(batch[name]) / len(q)
        out[f"{name} single us"] = 1e6 * float(np.median(single[name]))
    return out


def search_ids(store: Store, queries: np.ndarray, nprobe: int, shortlist: int, projected: bool) -> np.ndarray:
    """``search_batch``'s ids with the probe forced one way (the pipeline functions it runs)."""
    snap = store.snapshot()
    x = for_metric(np.ascontiguousarray(queries, dtype=np.float32), store.metric, "query")
    segments = pipeline.searchable(snap)
    out = np.full((len(x), K), -1, dtype=np.int64)
    for a in range(0, len(x), 256):
        prep = pipeline.prepare_queries(snap.codec, x[a : a + 256], nprobe, projected=projected)
        tags, _ = pipeline.search_prepared(segments, snap.codec, prep, K, shortlist, nprobe)
        found = tags >= 0
        ids = np.full(tags.shape, -1, dtype=np.int64)
        ids[found] = snap.tags_to_ids(tags[found])
        out[a : a + 256] = ids
    return out


def compare(store: Store, queries: np.ndarray, truth: np.ndarray, args) -> list[dict]:
    codec = store.snapshot().codec
    q = pipeline.prepare_queries(codec, for_metric(queries, store.metric, "query")).q
    t0 = time.perf_counter()
    proj = codec.projection()
    derive = time.perf_counter() - t0
    print(f"n_base {codec.n_base}, dim {q.shape[1]}, rank {proj.rank}; projection derived in {derive:.2f} s")
    rows = []
    for nprobe in args.nprobes:
        if nprobe >= codec.n_base:
            continue
        same = np.mean(np.all(exact_probe(codec, q, nprobe) == codec.probe(q, nprobe)[1], axis=1))
        row = {"nprobe": nprobe, "candidates": coarse.candidate_count(nprobe, codec.n_base),
               "auto": "projected" if coarse.worthwhile(codec.n_base, q.shape[1], nprobe) else "exact",
               "same probe": float(same)}
        for projected in (False, True):
            ids = search_ids(store, queries, nprobe, args.shortlist, projected)
            row["recall exact" if not projected else "recall projected"] = _common.recall_at(ids, truth, K)
        for threads in args.threads:
            _common.set_threads(threads)
            for key, v in coarse_times(codec, q, nprobe, args.repeats, args.singles).items():
                row[f"{key} t{threads}"] = v
        rows.append(row)
        print(row, flush=True)
    return rows


def default_vs_full(store: Store, queries: np.ndarray, truth: np.ndarray, rounds: int) -> dict:
    """The default ``search_batch`` (calibrated) against the full scan (``nprobe="all"``):
    recall@10 and QPS, the two timed alternately ``rounds`` times (median), so load on
    the machine hits both alike."""
    runs = {"default": lambda: store.search_batch(queries, k=K)[0],
            "full scan": lambda: store.search_batch(queries, k=K, nprobe="all")[0]}
    out = {"calibration": (lambda c: None if c is None else c.to_dict())(store.snapshot().codec.calibration)}
    times = {name: [] for name in runs}
    for name, fn in runs.items():
        out[f"recall {name}"] = _common.recall_at(fn(), truth, K)  # also the warm-up
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    for name in runs:
        out[f"QPS {name}"] = len(queries) / float(np.median(times[name]))
    print(out, flush=True)
    return out


def run_store(args) -> dict:
    queries = np.ascontiguousarray(np.load(args.queries), dtype=np.float32)[: args.nq]
    truth = np.load(args.gt)["ids"][: len(queries)]
    with Store.open(args.store, readonly=True) as store:
        if args.default_only:
            return {"store": args.store, "default": default_vs_full(store, queries, truth, args.rounds)}
        rows = compare(store, queries, truth, args)
    return {"store": args.store, "rows": rows}


def run_beir(args) -> dict:
    emb = os.path.join(args.collection, args.embeddings)
    docs = np.load(os.path.join(emb, "corpus.npy")).astype(np.float32)
    queries = np.load(os.path.join(emb, "queries.npy")).astype(np.float32)
    truth = np.argsort(-(queries @ docs.T), axis=1)[:, :K]  # exact float top-10 (rows = ids)
    if args.force:
        coarse.WORTHWHILE, coarse.MIN_EXACT_WORK = float("inf"), 0  # the projected probe at every nprobe
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        with Store.create(os.path.join(tmp, "s.zen"), dim=docs.shape[1], metric="cosine", n_base=args.n_base,
                          min_rows_per_base=max(1, min(24, len(docs) // args.n_base))) as store:
            store.add(np.arange(len(docs)), docs)  # trains, then calibrates (>= 2,000 rows)
            default = default_vs_full(store, queries, truth, args.rounds)
            rows = [] if args.default_only else compare(store, queries, truth, args)
    return {"collection": args.collection, "embeddings": args.embeddings, "docs": len(docs),
            "queries": len(queries), "default": default, "rows": rows}


def run_scaling(args) -> dict:
    from zenstore.format import StoreConfig
    from zenstore.rotation import Rotation
    from zenstore.synth import SyntheticEmbeddings

    gen = SyntheticEmbeddings(dim=args.dim)
    queries = gen.queries(args.nq)
    rows = []
    for n_base in args.n_base:
        base = gen.docs(0, n_base).astype(np.float16)
        cfg = StoreConfig(dim=args.dim, metric="cosine", n_base=n_base)
        codec = Codec(cfg, base, Rotation.random(args.dim, seed=0))
        t0 = time.perf_counter()
        codec.projection()
        derive = time.perf_counter() - t0
        row = {"n_base": n_base, "rank": codec.projection().rank, "derive s": derive}
        for nprobe in args.nprobes:
            same = np.mean(np.all(exact_probe(codec, queries, nprobe) == codec.probe(queries, nprobe)[1], axis=1))
            row[f"same probe @{nprobe}"] = float(same)
        for threads in args.threads:
            _common.set_threads(threads)
            for key, v in coarse_times(codec, queries, args.nprobes[0], args.repeats, args.singles).items():
                row[f"{key} t{threads}"] = v
        rows.append(row)
        print(row, flush=True)
    return {"dim": args.dim, "queries": args.nq, "timed nprobe": args.nprobes[0], "rows": rows}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("store")
    s.add_argument("store")
    s.add_argument("--queries", required=True)
    s.add_argument("--gt", required=True, help=".npz with 'ids' (nq, >=10), exact neighbours")
    b = sub.add_parser("beir")
    b.add_argument("collection")
    b.add_argument("--embeddings", default="emb-minilm-l6-v2")
    b.add_argument("--n-base", type=int, default=215)
    b.add_argument("--force", action="store_true", help="projected probe at every nprobe (ignore worthwhile)")
    b.add_argument("--work-dir", default=None)
    c = sub.add_parser("scaling")
    c.add_argument("--n-base", nargs="+", type=int, default=[1024, 4096, 16384])
    c.add_argument("--dim", type=int, default=7680)
    for sp in (s, b, c):
        sp.add_argument("--nprobes", nargs="+", type=int, default=[2, 4, 8, 16] if sp is not c else [8, 2, 16])
        sp.add_argument("--nq", type=int, default=1000)
        sp.add_argument("--shortlist", type=int, default=200)
        sp.add_argument("--threads", nargs="+", type=int, default=[1, 2])
        sp.add_argument("--repeats", type=int, default=3)
        sp.add_argument("--singles", type=int, default=100)
        sp.add_argument("--out", default=None)
        sp.add_argument("--rounds", type=int, default=5, help="alternating timed runs of default vs full scan")
        sp.add_argument("--default-only", action="store_true", help="only the default vs full-scan comparison")
    args = p.parse_args(argv)
    result = {"run_store": run_store, "run_beir": run_beir, "run_scaling": run_scaling}[f"run_{args.mode}"](args)
    result.update({"benchmark": f"coarse {args.mode}", "command": _common.rerun_command("benchmarks/coarse.py", argv),
                   "machine": _common.machine_info(), "unit": "microseconds per query"})
    print("rerun:", result["command"])
    if args.out:
        _common.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
