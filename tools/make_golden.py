"""Write the golden stores of the current format version into tests/golden/ (run once per
format version; later versions must keep reading them — tests/test_golden.py).

    python tools/make_golden.py                  # the stores and all their expectation files
    python tools/make_golden.py --expectations   # add missing .expected-<kind>.json files

``--expectations`` never touches a store or an existing file: it reads a copy of every
golden store and writes only the expectation files it lacks (``nprobe``: searches that
scan some base rows, batch and single query; ``rerank``: exact scores of given ids), so
a new kind of check can be added to old stores without rewriting what they pinned.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

import numpy as np

import zenstore

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "golden")
N_ROWS = 120
# The v1 stores have 2 effective base rows (54 and 64 live rows). nprobe searches: a
# shortlist covering every row, so the probed base row alone decides which rows come back
# (k exceeds a base row's rows: the rest is padding), and a short one, where the proxy
# decides within the probed rows
NPROBE_SEARCHES = [{"k": 70, "shortlist": 120, "nprobe": 1}, {"k": 5, "shortlist": 10, "nprobe": 1}]
RERANK_ROWS = (0, 1, 2, 4, 5, 7, 50, 79, 80, 100, 119, 5)  # both batches, the upserted row, a repeat
RERANK_TOP_N = 8


def golden_ids(str_ids: bool) -> list:
    return [f"doc-{i}" for i in range(N_ROWS)] if str_ids else [i * 1000 - 7 for i in range(N_ROWS)]


def golden_path(name: str, refine: str | None) -> str:
    # named by the version the store is written with (1 for a dim that is a multiple of 64,
    # 3 with a refine tier)
    return os.path.join(OUT, f"v{zenstore.StoreConfig(dim=192, refine=refine).format_version}-{name}.zen")


def build(name: str, metric: str, str_ids: bool, refine: str | None = None) -> None:
    rng = np.random.default_rng(20261126)
    dim = 192  # three 64-bit words per code
    centers = rng.standard_normal((4, dim))
    x = (centers[rng.integers(0, 4, N_ROWS)] + 0.7 * rng.standard_normal((N_ROWS, dim))).astype(np.float32)
    ids = golden_ids(str_ids)
    path = golden_path(name, refine)
    shutil.rmtree(path, ignore_errors=True)
    for kind in EXPECTATIONS:  # they describe the store being replaced
        if os.path.exists(f"{path}.expected-{kind}.json"):
            os.remove(f"{path}.expected-{kind}.json")
    with zenstore.Store.create(path, dim=dim, metric=metric, n_base=4, segment_fanout=4, refine=refine) as store:
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


def _hits(hits) -> dict:
    return {"ids": [h.id for h in hits], "scores": [h.score for h in hits], "payloads": [h.payload for h in hits]}


def expect_nprobe(store, queries: np.ndarray) -> dict:
    """Each search as a batch (search_batch) and query by query (search): different scans."""
    runs = []
    for opts in NPROBE_SEARCHES:
        ids, scores = store.search_batch(queries, **opts)
        single = [_hits(store.search(q, **opts)) for q in queries]
        runs.append({**opts, "batch_ids": ids.tolist(), "batch_scores": scores.tolist(), "single": single})
    return {"queries": queries.tolist(), "searches": runs}


def expect_rerank(store, queries: np.ndarray) -> dict:
    ids = [golden_ids(store.stats()["id_type"] == "str")[i] for i in RERANK_ROWS]
    return {"queries": queries.tolist(), "ids": ids, "top_n": RERANK_TOP_N,
            "hits": [_hits(store.rerank(q, ids, top_n=RERANK_TOP_N)) for q in queries]}


EXPECTATIONS = {"nprobe": expect_nprobe, "rerank": expect_rerank}
# (name, metric, str ids, refine tier): v1 stores (format version 1), v3 (a refine tier)
STORES = [("cosine-str", "cosine", True, None), ("l2-int", "l2", False, None),
          ("int8-cosine-str", "cosine", True, "int8"), ("magnitude4-l2-int", "l2", False, "magnitude4")]


def add_expectations() -> list[str]:
    """Write every missing ``<store>.expected-<kind>.json``; return the paths written."""
    written = []
    for name in sorted(os.listdir(OUT)):
        golden = os.path.join(OUT, name)
        if not (name.endswith(".zen") and os.path.isdir(golden)):
            continue
        missing = {kind: f"{golden}.expected-{kind}.json" for kind in EXPECTATIONS
                   if not os.path.exists(f"{golden}.expected-{kind}.json")}
        for kind in sorted(set(EXPECTATIONS) - set(missing)):
            print(f"kept {golden}.expected-{kind}.json (exists; never rewritten)")
        if not missing:
            continue
        with open(golden + ".expected.json") as f:
            queries = np.array(json.load(f)["queries"], np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, name)
            shutil.copytree(golden, copy)  # opening the golden store itself would add lock files
            with zenstore.Store.open(copy, readonly=True) as store:
                for kind, path in missing.items():
                    doc = EXPECTATIONS[kind](store, queries)
                    with open(path, "x") as f:  # "x": fails rather than overwrite
                        json.dump(doc, f)
                    written.append(path)
                    print("wrote", path)
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--expectations", action="store_true",
                   help="only add missing .expected-<kind>.json files for the existing golden stores")
    p.add_argument("--force", action="store_true", help="rewrite the golden stores (never do this for a "
                                                       "released format version); without it only missing stores are written")
    args = p.parse_args(argv)
    if args.expectations:
        add_expectations()
        return
    todo = [s for s in STORES if args.force or not os.path.exists(golden_path(s[0], s[3]))]
    if not todo:
        sys.exit("golden files exist; they are written once per format version (use --force)")
    for spec in todo:  # only the missing ones: an existing golden store is never rewritten
        build(*spec)
    add_expectations()


if __name__ == "__main__":
    main()
