#!/usr/bin/env python
"""The rescoring stage two ways on the same shortlists, timed alternately in one process.

``tables``: the candidates' codes copied out of their segments, then scored against
per-query nibble tables (``kernels.rescore.rescore_by_query``; the rescoring before
``kernels.signs``). ``in place``: ``search.exact_scores`` as it is now (each segment's
rows scored where they are mapped, by a 32-lane select, the next rows prefetched).
Shortlists come from the store's own coarse pass for ``--configs`` NPROBE:SHORTLIST.
Reports microseconds per query (best and median of ``--repeats``) in CPU time of the
calling thread (``time.thread_time``, 1 thread: less disturbed by other processes on a
shared machine than wall time) and the largest relative difference of the values.

    python benchmarks/rescore.py data/search-1cb097d7bc86-n100000-b1024.zen \\
        --queries data/synth-1cb097d7bc86/queries-q1000.npy --nq 300 --configs 4:100 8:100
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402
import numba  # noqa: E402
import numpy as np  # noqa: E402

from zenstore import Store  # noqa: E402
from zenstore import search as pipeline  # noqa: E402
from zenstore.kernels import rescore_by_query  # noqa: E402
from zenstore.snapshot import split_tags  # noqa: E402
from zenstore.validation import for_metric  # noqa: E402


def tables(segments, prep, qidx, tags, ip_w, nq):
    """The former path: gather the candidates' codes, score them against nibble tables."""
    n = len(tags)
    ords, rows = split_tags(tags)
    seg0 = segments[int(ords[0])]
    codes = np.empty((n, seg0.codes.shape[1]), np.uint64)
    scales = np.empty((n, seg0.scales.shape[1]), np.float32)
    rowlam, rowterm, qoff = (np.empty(n, np.float32) for _ in range(3))
    for o in np.unique(ords).tolist():
        sel = np.flatnonzero(ords == o)
        seg, r = segments[o], rows[sel]
        codes[sel], scales[sel], rowlam[sel], rowterm[sel] = seg.codes[r], seg.scales[r], seg.rowlam[r], seg.rowterm[r]
        qoff[sel] = prep.qoff[qidx[sel], np.searchsorted(seg.group_offsets, r, side="right") - 1]
    out = np.empty(n, np.float32)
    qstart = np.searchsorted(qidx, np.arange(nq + 1))
    rescore_by_query(codes.view(np.uint8), scales, rowlam, rowterm, qoff, qstart, prep.q, prep.qsums, ip_w, out,
                     min(nq, 4 * numba.get_num_threads()))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store")
    p.add_argument("--queries", required=True)
    p.add_argument("--nq", type=int, default=300)
    p.add_argument("--configs", nargs="+", default=["4:100", "8:100"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        return _run(args)
    finally:
        numba.set_num_threads(threads)


def _run(args) -> dict:
    store = Store.open(args.store, readonly=True)
    Q = np.load(args.queries)[: args.nq]
    snap = store.snapshot()
    segments, codec, metric = pipeline.searchable(snap), snap.codec, store.metric
    ip_w = pipeline.ip_weight(metric)
    rows = []
    print(f"rescore: {args.store}, {len(store):,} docs, {len(segments)} segments, {len(Q)} queries, 1 thread, "
          f"CPU us per query (best / median of {args.repeats})")
    print("| config | tables | in place | ratio (best) | max rel diff |\n|---|---|---|---|---|")
    for cfg in args.configs:
        nprobe, sl = (int(v) for v in cfg.split(":"))
        prep = pipeline.prepare_queries(codec, for_metric(Q, metric, "query"), nprobe)
        shl = pipeline.coarse_pass(segments, prep, pipeline.probe_mask(prep, codec, nprobe), sl, metric)
        filled = np.arange(sl)[None, :] < shl.size[:, None]
        qidx = np.ascontiguousarray(np.nonzero(filled)[0], dtype=np.int64)
        tags = shl.tags[filled]
        a = tables(segments, prep, qidx, tags, ip_w, len(Q))
        b = pipeline.exact_scores(segments, prep, qidx, tags, metric)
        diff = float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))
        t = {"tables": [], "in place": []}
        for _ in range(args.repeats):
            c0 = time.thread_time()
            tables(segments, prep, qidx, tags, ip_w, len(Q))
            c1 = time.thread_time()
            pipeline.exact_scores(segments, prep, qidx, tags, metric)
            c2 = time.thread_time()
            t["tables"].append((c1 - c0) / len(Q) * 1e6)
            t["in place"].append((c2 - c1) / len(Q) * 1e6)
        row = {"nprobe": nprobe, "shortlist": sl, "pairs": int(len(tags)), "max_rel_diff": diff,
               **{f"{k}_us": {"best": min(v), "median": float(np.median(v)), "all": v} for k, v in t.items()}}
        rows.append(row)
        print(f"| nprobe {nprobe}, shortlist {sl} | {min(t['tables']):.0f} / {np.median(t['tables']):.0f} | "
              f"{min(t['in place']):.0f} / {np.median(t['in place']):.0f} | "
              f"{min(t['tables']) / min(t['in place']):.2f}x | {diff:.1e} |")
    cmd = "OMP_WAIT_POLICY=passive python benchmarks/rescore.py " + " ".join(
        [args.store, "--queries", args.queries, "--nq", str(args.nq), "--configs", *args.configs,
         "--repeats", str(args.repeats)] + (["--out", args.out] if args.out else []))
    print("rerun: " + cmd)
    result = {"command": cmd, "machine": _common.machine_info(), "rows": rows}
    store.close()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
    raise SystemExit(0)
