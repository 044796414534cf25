#!/usr/bin/env python
"""What the approximate coarse assignment costs in search quality: exact vs approximate.

``zenstore.assign.NearestRow`` ranks base rows on every 16th rotated coordinate and takes
the exact nearest of the best 16; ``train.train_base(coarse=True)`` runs k-means on the
same coordinate subset. Both change which base row a vector is encoded against. This
benchmark builds, on the same rows, one store with everything exact (``uses_coarse``
patched to False: the code path of zenstore before the change) and one as shipped, and
measures

* ``assign_differs``: the share of the stored rows whose approximate row (NearestRow on
  the shipped store's base) is not the exact nearest row of that base, and the mean
  relative excess squared distance of the rows that differ;
* recall@10 against exact float search (cosine) of both stores: full scan (the default
  ``search()``) and an ``nprobe`` sweep, per query, with the paired difference and its
  95% interval (1.96 standard errors of the per-query differences).

Two approximate stores per dataset: ``assign-only`` (exact k-means, approximate
assignment: what zenstore does) and ``assign+kmeans`` (also k-means on the subset, which
the writer did at 462a918 and no longer does: it lost recall, docs/benchmarks.md
"Ingest"), so the two effects are told apart. Where the code does not use the
approximation (fewer than 64 coordinates after the stride: the 384-d and 768-d real
collections) the ``forced`` stores apply it anyway (every 16th coordinate: 24 or 48 of
them) to show what it would do there.

    python benchmarks/assign_quality.py                    # two generated profiles + SciFact + Cranfield
    python benchmarks/assign_quality.py --n 20000 --only default,scifact
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402
from _common import gendata  # noqa: E402

DATA = "/work/shared/data"
PROFILES = {  # tools/gendata.py's profiles, at the seeds this study used
    "default": dict(dim=7680, seed=0, **gendata.PROFILES["default"]),
    "noisy": dict(dim=7680, seed=1, **gendata.PROFILES["noisy"]),
}
REAL = {
    "scifact-minilm": ("scifact", "emb-minilm-l6-v2"),
    "cranfield-mpnet": ("cranfield", "emb-mpnet-base-v2"),
}


def load_dataset(name: str, n: int, nq: int, dim: int | None = None):
    if name in PROFILES:
        from zenstore.synth import SynthSpec, SyntheticEmbeddings

        gen = SyntheticEmbeddings(SynthSpec(**{**PROFILES[name], **({"dim": dim} if dim else {})}))
        return gen.docs(0, n), gen.queries(nq), f"zenstore.synth {PROFILES[name]}"
    coll, emb = REAL[name]
    d = os.path.join(DATA, coll, emb)
    return (np.load(os.path.join(d, "corpus.npy")).astype(np.float32),
            np.load(os.path.join(d, "queries.npy")).astype(np.float32), d)


MODES = {
    # name: (k-means on the coordinate subset, NearestRow's ranking), each never / as the
    # code decides ("shipped") / "forced" whatever the dimension. The writer trains in all
    # dimensions; "assign+kmeans" makes it train with train_base(coarse=True), as it did at
    # commit 462a918 (the JSON of that run calls this mode "shipped" / "forced").
    "exact": ("never", "never"),
    "assign-only": ("never", "shipped"),
    "assign+kmeans": ("shipped", "shipped"),
    "forced-assign-only": ("never", "forced"),
    "forced-assign+kmeans": ("forced", "forced"),
}


@contextlib.contextmanager
def coarse_mode(mode: str):
    """Which of training and assignment use the coordinate subset (see MODES)."""
    from zenstore import assign, train, writer

    original, original_train = assign.uses_coarse, writer.train_base
    choices = {"never": lambda dim, n_base: False, "shipped": original,
               "forced": lambda dim, n_base: n_base >= assign.MIN_BASE_ROWS}
    in_train, in_assign = MODES[mode]
    train.uses_coarse, assign.uses_coarse = choices[in_train], choices[in_assign]
    if in_train != "never":
        writer.train_base = functools.partial(train.train_base, coarse=True)
    try:
        yield
    finally:
        assign.uses_coarse = train.uses_coarse = original
        writer.train_base = original_train


def build(path: str, docs: np.ndarray, mode: str, batch: int) -> dict:
    import zenstore
    from zenstore.ingest import default_train_sample

    t0 = time.perf_counter()
    with coarse_mode(mode), zenstore.Store.create(path, dim=docs.shape[1]) as store:
        # the sample `zenstore ingest` trains on: 24 rows per base row (ingest.default_train_sample)
        n_sample = min(len(docs), default_train_sample(store))
        pick = np.sort(np.random.default_rng(0).choice(len(docs), n_sample, replace=False))
        store.train(docs[pick])
        t_train = time.perf_counter() - t0
        for i in range(0, len(docs), batch):
            store.add(np.arange(i, min(i + batch, len(docs))), docs[i : i + batch])
    return {"train_seconds": round(t_train, 2), "build_seconds": round(time.perf_counter() - t0, 2)}


def assignment_agreement(path: str, docs: np.ndarray) -> dict:
    """Share of rows whose NearestRow (as the shipped/forced store ran it) is not the exact
    nearest base row, on that store's own base."""
    import zenstore
    from zenstore.assign import NearestRow
    from zenstore.validation import as_matrix

    with zenstore.Store.open(path, readonly=True) as store:
        codec = store.snapshot().codec
        nearest = codec.nearest
        differ = 0
        excess = []
        for i in range(0, len(docs), 8192):
            xr = codec.prepare(as_matrix(docs[i : i + 8192], store.dim))  # what Store.add encodes
            exact = nearest.exact(xr)
            approx = nearest(xr) if nearest.coarse else NearestRow(codec.base, codec.base_sqnorm, coarse=True)(xr)
            diff = np.flatnonzero(exact != approx)
            differ += len(diff)
            if len(diff):
                x = xr[diff].astype(np.float64)
                d_exact = ((x - codec.base[exact[diff]]) ** 2).sum(1)
                d_approx = ((x - codec.base[approx[diff]]) ** 2).sum(1)
                excess.extend((d_approx / d_exact - 1).tolist())
        return {"coarse_used": bool(nearest.coarse), "n_base": codec.n_base, "rows": len(docs),
                "assign_differs": differ / len(docs),
                "mean_excess_sqdist_of_differing": float(np.mean(excess)) if excess else 0.0}


def recalls(path: str, queries: np.ndarray, truth: np.ndarray, nprobes: list) -> dict:
    import zenstore

    out = {}
    with zenstore.Store.open(path, readonly=True) as store:
        n_base = store.stats()["n_base"]
        for nprobe in nprobes:
            if nprobe is not None and nprobe >= n_base:
                continue
            ids, _ = store.search_batch(queries, k=10, nprobe=nprobe)
            per_query = np.array([len(np.intersect1d(f[f >= 0], t)) / 10 for f, t in zip(ids, truth)])
            out["all" if nprobe is None else str(nprobe)] = per_query
    return out


def paired(a: np.ndarray, b: np.ndarray) -> dict:
    d = b - a
    se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    return {"exact": round(float(a.mean()), 4), "approx": round(float(b.mean()), 4),
            "diff": round(float(d.mean()), 4), "ci95": [round(float(d.mean() - 1.96 * se), 4),
                                                       round(float(d.mean() + 1.96 * se), 4)],
            "queries_changed": int((d != 0).sum())}


def run_one(name: str, args, tmp: str) -> dict:
    docs, queries, source = load_dataset(name, args.n, args.queries, args.dim)
    docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
    qn = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    truth = np.argsort(-(qn @ docs.T), axis=1, kind="stable")[:, :10]
    print(f"{name}: {len(docs):,} x {docs.shape[1]} docs, {len(queries):,} queries ({source})", flush=True)
    res = {"dataset": name, "source": source, "n": len(docs), "dim": docs.shape[1], "queries": len(queries)}
    from zenstore.assign import COARSE_STRIDE, MIN_COARSE_DIMS

    shipped_uses = docs.shape[1] // COARSE_STRIDE >= MIN_COARSE_DIMS
    approx = (["assign-only", "assign+kmeans"] if shipped_uses
              else ["forced-assign-only", "forced-assign+kmeans"])
    found = {}
    res["stores"] = {}
    for mode in ["exact", *approx]:
        path = os.path.join(tmp, f"{name}-{mode}.zen")
        entry = res["stores"][mode] = build(path, docs, mode, args.batch)
        found[mode] = recalls(path, queries, truth, [None, *args.nprobe])
        if mode != "exact":
            with coarse_mode(mode):
                entry["assignment"] = assignment_agreement(path, docs)
            entry["recall_at_10"] = {p: paired(found["exact"][p], found[mode][p]) for p in found["exact"]}
        else:
            entry["recall_at_10"] = {p: round(float(v.mean()), 4) for p, v in found[mode].items()}
        shutil.rmtree(path)
        print(f"  {mode}: built in {entry['build_seconds']} s", flush=True)
    res["shipped_uses_approximation"] = shipped_uses
    return res


def report(r: dict) -> str:
    lines = ["Exact vs approximate coarse assignment (and k-means on the coordinate subset):",
             f"machine: {_common.machine_line(r['machine'])}", ""]
    rows = []
    for d in r["datasets"]:
        for mode, st in d["stores"].items():
            if mode == "exact":
                continue
            a = st["assignment"]
            for p, v in st["recall_at_10"].items():
                rows.append({"dataset": f"{d['dataset']} ({d['n']:,}x{d['dim']})", "mode": mode,
                             "n_base": a["n_base"], "differs": 100 * a["assign_differs"], "nprobe": p,
                             "exact": v["exact"], "approx": v["approx"], "diff": v["diff"],
                             "ci": f"[{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}]", "changed": v["queries_changed"]})
    lines.append(_common.table(rows, [("dataset", "dataset", ""), ("mode", "approx store", ""),
                                      ("n_base", "base rows", "d"), ("differs", "rows assigned differently %", ".2f"),
                                      ("nprobe", "nprobe", ""), ("exact", "recall@10 exact", ".4f"),
                                      ("approx", "recall@10 approx", ".4f"), ("diff", "diff", "+.4f"),
                                      ("ci", "95% CI of diff", ""), ("changed", "queries changed", "d")]))
    lines += ["", f"rerun: {r['command']}"]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=40_000, help="generated documents per profile")
    p.add_argument("--queries", type=int, default=1000, help="generated queries per profile")
    p.add_argument("--dim", type=int, default=None, help="generated profiles at this dimension (default theirs)")
    p.add_argument("--batch", type=int, default=8192)
    p.add_argument("--nprobe", type=int, nargs="*", default=[4, 16, 64])
    p.add_argument("--only", default=None, help="comma-separated subset of " + ",".join([*PROFILES, *REAL]))
    p.add_argument("--tmp", default=None, help="where the stores are built (default: a temp dir)")
    p.add_argument("--out", default=os.path.join(_common.OUT_DIR, "assign-quality.json"))
    args = p.parse_args(argv)
    names = args.only.split(",") if args.only else [*PROFILES, *REAL]
    res = {"benchmark": "assign_quality", "command": _common.rerun_command("benchmarks/assign_quality.py", argv),
           "machine": _common.machine_info(), "params": {k: v for k, v in vars(args).items() if k != "out"},
           "datasets": []}
    with tempfile.TemporaryDirectory(prefix="zassign-", dir=args.tmp) as tmp:
        for name in names:
            res["datasets"].append(run_one(name, args, tmp))
            _common.write_json(args.out, res)
    return _common.publish(res, args.out, report)


if __name__ == "__main__":
    main()
