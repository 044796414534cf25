"""``zenstore demo``: build a small store from the built-in synthetic generator and report.

The same path a user takes: create a store, bulk-add in batches, reopen read-only, search,
and compare against exact float32 search on the same data.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from .store import Store
from .synth import SyntheticEmbeddings, exact_topk


@dataclass(frozen=True)
class DemoReport:
    path: str
    dim: int
    docs: int
    queries: int
    build_seconds: float
    bytes_per_vector: int
    compression_ratio: float
    bytes_on_disk: int
    recall_at_10: dict
    ms_per_query: float
    identical_after_reopen: bool


def run_demo(path: str | None = None, dim: int = 7680, docs: int = 5000, queries: int = 100,
             n_base: int = 64, progress=print) -> DemoReport:
    gen = SyntheticEmbeddings(dim=dim, seed=42)
    tmp = None
    if path is None:
        tmp = tempfile.mkdtemp(prefix="zenstore-demo-")
        path = os.path.join(tmp, "demo.zen")
    progress(f"generating {docs} synthetic {dim}-dim embeddings and {queries} queries")
    x = gen.docs(0, docs)
    q = gen.queries(queries)
    truth, _ = exact_topk(q, [(0, x)], 10)
    progress(f"building {path}")
    t0 = time.perf_counter()
    with Store.create(path, dim=dim, metric="cosine", n_base=n_base) as store:
        store.train(x)
        for start in range(0, docs, 1000):
            stop = min(start + 1000, docs)
            store.add(np.arange(start, stop), x[start:stop],
                      payloads=[{"doc": i} for i in range(start, stop)])
        build = time.perf_counter() - t0
        first, _ = store.search_batch(q, k=10)
    with Store.open(path, readonly=True) as store:
        stats = store.stats()
        recalls = {}
        for shortlist in (100, 1000):
            found, _ = store.search_batch(q, k=10, shortlist=shortlist)
            recalls[shortlist] = float(np.mean(
                [len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
        again, _ = store.search_batch(q, k=10)
        store.search(q[0], k=10)
        t0 = time.perf_counter()
        for row in q:
            store.search(row, k=10)
        ms = (time.perf_counter() - t0) / len(q) * 1e3
    return DemoReport(path, dim, docs, queries, build, stats["bytes_per_vector"],
                      stats["compression_ratio"], stats["bytes_on_disk"]["total"], recalls, ms,
                      bool(np.array_equal(first, again)))


def format_report(r: DemoReport) -> str:
    lines = [
        f"store:               {r.path}",
        f"documents:           {r.docs} x {r.dim} dims (float32: {r.docs * r.dim * 4 / 1e6:.1f} MB)",
        f"built in:            {r.build_seconds:.1f} s (train base + add in batches of 1000)",
        f"vector data:         {r.bytes_per_vector} bytes/vector ({r.compression_ratio:.2f}x vs float32)",
        f"store on disk:       {r.bytes_on_disk / 1e6:.2f} MB all in",
    ]
    for shortlist, rec in r.recall_at_10.items():
        lines.append(f"recall@10 vs exact:  {rec:.3f} (shortlist {shortlist})")
    lines.append(f"single query:        {r.ms_per_query:.2f} ms (mean of {r.queries})")
    lines.append(f"reopened, identical: {r.identical_after_reopen}")
    return "\n".join(lines)
