#!/usr/bin/env python
"""Where a search batch spends its time: microseconds per query in each pipeline stage.

Runs ``Store.search_batch``'s pipeline one stage at a time on a batch of queries (input
checks, query preparation -- of which the coarse step's ``q . c`` is timed on its own --,
probe selection, coarse scan, rescoring) and the whole call, at each thread count, best
of ``--repeats``. Beside them, the coarse step both ways on the same queries: ``exact
coarse`` (the exact ``q . c`` against every base row, then the top ``nprobe``) and
``projected coarse`` (``coarse.py``, used by ``prepare`` where it is cheaper; NaN where
it is not used). It instruments internals (``zenstore.search`` functions and
the store's current snapshot), so the stage results are exactly what the public call
computes. Use it to see which fixed cost caps batch QPS at small nprobe
(docs/benchmarks.md, Findings).

    python benchmarks/stages.py data/search-1cb097d7bc86-n1000000-b1024.zen \\
        --queries data/synth-1cb097d7bc86/queries-q1000.npy --configs 2:30 8:30
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402
import numpy as np  # noqa: E402

from zenstore import Store  # noqa: E402
from zenstore import search as pipeline  # noqa: E402
from zenstore.validation import for_metric  # noqa: E402

STAGES = ("input checks", "prepare", "of which q.c", "probe", "scan", "rescore", "whole call")
COARSE = ("exact coarse", "projected coarse")  # the coarse step both ways (projected: NaN where unused)


def parse_config(text: str) -> tuple[int | None, int]:
    """'NPROBE:SHORTLIST', NPROBE 'all' for a full scan."""
    try:
        nprobe, shortlist = text.split(":")
        return (None if nprobe == "all" else int(nprobe)), int(shortlist)
    except ValueError:
        raise argparse.ArgumentTypeError(f"config must be NPROBE:SHORTLIST, got {text!r}") from None


def time_stages(store: Store, queries: np.ndarray, nprobe: int | None, shortlist: int) -> dict:
    """One pass through the stages; seconds per stage for the whole batch."""
    snap = store.snapshot()
    segments = pipeline.searchable(snap)
    codec, metric = snap.codec, store.metric
    t = {}
    t0 = time.perf_counter()
    x = for_metric(queries, metric, "query")
    t1 = time.perf_counter()
    prep = pipeline.prepare_queries(codec, x, nprobe)  # the coarse step runs here when projected
    t2 = time.perf_counter()
    probe = pipeline.probe_mask(prep, codec, nprobe)
    t3 = time.perf_counter()
    sl = pipeline.coarse_pass(segments, prep, probe, shortlist, metric)
    t4 = time.perf_counter()
    filled = np.arange(shortlist)[None, :] < sl.size[:, None]
    pipeline.exact_scores(segments, prep, np.nonzero(filled)[0], sl.tags[filled], metric)
    t5 = time.perf_counter()
    store.search_batch(queries, k=10, shortlist=shortlist, nprobe="all" if nprobe is None else nprobe)
    t6 = time.perf_counter()
    if prep.probe is not None:
        codec.probe(prep.q, nprobe)
    t7 = time.perf_counter()
    # today's coarse step beside it: the exact q.c against every base row, then top_mask
    exact = pipeline.PreparedQueries(prep.q, prep.qcodes, prep.alpha, codec.base_dots(prep.q), prep.qsq, prep.qsums)
    if nprobe is not None:
        pipeline.probe_mask(exact, codec, nprobe)
    t8 = time.perf_counter()
    t.update({"input checks": t1 - t0, "prepare": t2 - t1, "probe": t3 - t2, "scan": t4 - t3,
              "rescore": t5 - t4, "whole call": t6 - t5,
              "of which q.c": (t7 - t6) if prep.probe is not None else (t8 - t7),
              "exact coarse": t8 - t7, "projected coarse": (t7 - t6) if prep.probe is not None else np.nan})
    return t


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("store", help="an existing store (e.g. one benchmarks/search.py built)")
    p.add_argument("--queries", required=True, help=".npy of float32 queries (n, dim)")
    p.add_argument("--configs", nargs="+", type=parse_config, default=[(2, 30), (8, 30)],
                   help="NPROBE:SHORTLIST pairs (NPROBE 'all' = full scan); default 2:30 8:30")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--repeats", type=int, default=3, help="passes per setting; the best is kept")
    p.add_argument("--out", default=None, help="JSON path (default: print only)")
    args = p.parse_args(argv)

    queries = np.ascontiguousarray(np.load(args.queries), dtype=np.float32)
    rows = []
    with Store.open(args.store, readonly=True) as store:
        n = len(queries)
        print(f"stages: {args.store}, {len(store):,} docs x {store.dim}, {n} queries; "
              f"microseconds per query, best of {args.repeats}")
        for nprobe, shortlist in args.configs:
            for threads in args.threads:
                _common.set_threads(threads)
                time_stages(store, queries[: min(n, 16)], nprobe, shortlist)  # JIT, page faults
                best = {}
                for _ in range(args.repeats):
                    for name, sec in time_stages(store, queries, nprobe, shortlist).items():
                        best[name] = min(best.get(name, sec), sec)
                row = {"config": f"nprobe={'all' if nprobe is None else nprobe} shortlist={shortlist}",
                       "threads": threads, **{s: 1e6 * best[s] / n for s in STAGES + COARSE}}
                rows.append(row)
    print(_common.table(rows, [("config", "config", ""), ("threads", "threads", "d")]
                        + [(s, s, ".1f") for s in STAGES + COARSE]))
    print("rerun:", _common.rerun_command("benchmarks/stages.py", argv))
    result = {"benchmark": "stages", "command": _common.rerun_command("benchmarks/stages.py", argv),
              "machine": _common.machine_info(), "unit": "microseconds per query", "rows": rows}
    if args.out:
        _common.write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
