"""Two checkouts of zenstore over one store: batch CPU-QPS, recall@10 and single-query p50
at four operating points, for the code under CHECKOUT (prints one JSON line).

Used to show a refactor moved nothing (issue 10): run it alternately for both checkouts
on the same store and compare medians, e.g.

    for i in 1 2 3 4; do
      python benchmarks/compare_checkouts.py /old/checkout STORE Q.npy GT.npy >> old.jsonl
      python benchmarks/compare_checkouts.py .            STORE Q.npy GT.npy >> new.jsonl
    done

STORE, Q.npy and GT.npy (exact top-10 ids) as benchmarks/search.py caches them under
its --data directory. CPU time, so a loaded machine changes the figures less than wall time.
"""
import json
import sys
import time

import numpy as np

sys.path.insert(0, sys.argv[1])
import zenstore  # noqa: E402
from zenstore import Store  # noqa: E402

store, qpath, gt = sys.argv[2], sys.argv[3], sys.argv[4]
q = np.load(qpath)[:1000].astype(np.float32)
truth = np.load(gt)[:1000, :10]
out = {"zenstore": zenstore.__file__}
with Store.open(store, readonly=True) as s:
    for nprobe, sl in [(2, 30), (8, 30), (16, 50), (None, 100)]:
        s.search_batch(q[:50], k=10, shortlist=sl, nprobe=nprobe)
        best = cpu = 1e9
        for _ in range(3):
            t = time.perf_counter(); c = time.process_time()
            ids, _ = s.search_batch(q, k=10, shortlist=sl, nprobe=nprobe)
            best = min(best, time.perf_counter() - t); cpu = min(cpu, time.process_time() - c)
        rec = np.mean([len(set(ids[i]) & set(truth[i])) / 10 for i in range(len(q))])
        lat, clat = [], []
        for i in range(200):
            t = time.perf_counter(); c = time.process_time()
            s.search(q[i], k=10, shortlist=sl, nprobe=nprobe, with_payload=False)
            lat.append(time.perf_counter() - t); clat.append(time.process_time() - c)
        out[f"{nprobe}:{sl}"] = {"qps": len(q) / best, "cpu_qps": len(q) / cpu, "recall": rec,
                                 "p50_ms": 1e3 * float(np.median(lat)), "cpu_ms_per_query": 1e3 * float(np.mean(clat))}
print(json.dumps(out))
