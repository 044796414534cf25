"""Write the golden stores of the current format version into tests/golden/ (run once per
format version; later versions must keep reading them — tests/test_golden.py).

    python tools/make_golden.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

import zenstore

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden")


def build(name: str, metric: str, str_ids: bool) -> None:
    rng = np.random.default_rng(20261126)
    dim = 192  # three 64-bit words per code
    centers = rng.standard_normal((4, dim))
    x = (centers[rng.integers(0, 4, 120)] + 0.7 * rng.standard_normal((120, dim))).astype(np.float32)
    ids = [f"doc-{i}" for i in range(120)] if str_ids else [i * 1000 - 7 for i in range(120)]
    path = os.path.join(OUT, f"v{zenstore.FORMAT_VERSION}-{name}.zen")
    shutil.rmtree(path, ignore_errors=True)
    with zenstore.Store.create(path, dim=dim, metric=metric, n_base=4, segment_fanout=4) as store:
        store.add(ids[:80], x[:80], payloads=[{"i": i, "tag": "ä"} for i in range(80)])
        store.add(ids[80:], x[80:])
        store.delete([ids[3], ids[90]])
        store.upsert([ids[5]], x[6:7], payloads=[{"upserted": True}])
        queries = (x[:6] + 0.1 * rng.standard_normal((6, dim))).astype(np.float32)
        found, scores = store.search_batch(queries, k=5, shortlist=50)
        records = {str(ids[i]): store.get(ids[i]).vector.tolist() for i in (0, 5, 100)}
        expected = {
            "queries": queries.tolist(),
            "ids": found.tolist(),
            "scores": scores.tolist(),
            "len": len(store),
            "payload_5": store.get(ids[5]).payload,
            "vectors": records,
        }
    os.remove(os.path.join(path, "writer.lock"))
    lock = os.path.join(path, "catalog.mdb-lock")
    if os.path.exists(lock):
        os.remove(lock)
    with open(path + ".expected.json", "w") as f:
        json.dump(expected, f)
    print("wrote", path)


if __name__ == "__main__":
    if os.listdir(OUT) and "--force" not in sys.argv:
        sys.exit("golden files exist; they are written once per format version (use --force)")
    build("cosine-str", "cosine", True)
    build("l2-int", "l2", False)
