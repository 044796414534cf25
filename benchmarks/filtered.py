#!/usr/bin/env python
"""Filtered search benchmark: recall@10 against exact filtered search, batch QPS (1 and 2
threads) and single-query p50 latency, at filter selectivities of 50 / 10 / 1 / 0.1 %.

Documents are ``zenstore.synth`` 7680-d vectors (tools/gendata.py) with generated payloads
whose filters have exact selectivities:

  keyword   {"cat": V}                        cat is "a" on 50% of the docs, "b" 10%, "c" 1%, "d" 0.1%
  int range {"rank": {"$lt": s * n}}           rank is a permutation of 0 .. n-1
  AND       {"grp": "a", "bucket": {"$lt": B}} grp "a" on 50%, bucket uniform 0..999, B = 2000 s
                                               (independent: about s; the exact count is reported)

Methods, side by side in one process:

  zenstore     per config (``--zen-configs``): unfiltered; filtered with payload indexes
               (keyword: cat, grp; int: rank, bucket); filtered without indexes (the same
               store after ``drop_payload_index``: payloads decoded per call)
  faiss        IndexIVFRaBitQ (nlist 1024, qb 4, ``--ivf-nprobes``) and IndexRaBitQ (flat,
               qb 4), unfiltered and with an ``IDSelectorBatch`` of the matching ids in the
               search parameters; building the selector is timed separately

Exact filtered ground truth: float32 inner products of the queries with every document
(unit rows: cosine), top 10 among the matching ones; cached next to the data.

    python benchmarks/filtered.py --n 100000                 # ~1 h on the 2-core VM
    python benchmarks/filtered.py --n 3000 --dim 256 --nq 20 --data-dir /tmp/zf --out /tmp/zf/f.json
    python benchmarks/filtered.py --real /work/shared/data/scifact/emb-minilm-l6-v2 --nq 300 \
        --n-base 64 --nlist 64 --zen-configs 100:all 50:4 --ivf-nprobes 4   # a real collection

With ``--real DIR`` the documents and queries are a real embedded collection (its
``corpus.npy`` / ``queries.npy``) and the payloads are generated as above, so the filters
are independent of the vectors; ground truth is computed from its vectors.

Writes docs/benchmarks/filtered-n<N>-d<D>.json and .png.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import gc  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402
from _common import gendata  # noqa: E402

K = 10
SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)
INDEXES = {"cat": "keyword", "grp": "keyword", "rank": "int", "bucket": "int"}
PAYLOAD_VERSION = 1  # bump when make_payloads changes (a cached store is rebuilt)
NOISY = 0.10


def log(msg: str) -> None:
    print(msg, flush=True)


# --- data -------------------------------------------------------------------------------------


def payload_columns(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed + 7919)
    cat = np.full(n, "z", dtype=object)
    perm = rng.permutation(n)
    start = 0
    for value, s in zip("abcd", SELECTIVITIES):
        take = max(1, round(s * n))
        cat[perm[start:start + take]] = value
        start += take
    grp = np.where(rng.permutation(n) < n // 2, "a", "b").astype(object)
    return {"cat": cat, "rank": rng.permutation(n), "grp": grp, "bucket": rng.integers(0, 1000, n)}


def payloads(cols: dict, lo: int, hi: int) -> list[dict]:
    return [{"cat": cols["cat"][i], "rank": int(cols["rank"][i]), "grp": cols["grp"][i],
             "bucket": int(cols["bucket"][i]), "title": f"document {i}"} for i in range(lo, hi)]


def make_filters(n: int, cols: dict) -> list[dict]:
    """name, kind, selectivity asked, filter, and the exact mask over the documents."""
    out = []
    for value, s in zip("abcd", SELECTIVITIES):
        out.append({"kind": "keyword", "selectivity": s, "filter": {"cat": value}, "mask": cols["cat"] == value})
        lim = max(1, round(s * n))
        out.append({"kind": "int range", "selectivity": s, "filter": {"rank": {"$lt": lim}},
                    "mask": cols["rank"] < lim})
        b = max(1, round(2000 * s))
        out.append({"kind": "AND", "selectivity": s, "filter": {"grp": "a", "bucket": {"$lt": b}},
                    "mask": (cols["grp"] == "a") & (cols["bucket"] < b)})
    for f in out:
        f["name"] = f"{f['kind']} {f['selectivity']:.1%}"
        f["matching"] = int(f["mask"].sum())
    return out


def filtered_truth(args, src: str, Q: np.ndarray, flts: list[dict], cache_dir: str) -> np.ndarray:
    """(n_filters, nq, K) exact filtered top-K ids (float32 inner product), cached."""
    path = os.path.join(cache_dir,
                        f"filtered-gt-v{PAYLOAD_VERSION}-n{args.n}-q{len(Q)}-k{K}-s{args.seed}.npy")
    if os.path.exists(path):
        return np.load(path)
    log(f"exact filtered ground truth: {len(Q)} queries x {args.n:,} docs")
    scores = np.empty((len(Q), args.n), dtype=np.float32)
    for first, block in gendata.iter_npy(src, args.chunk):
        scores[:, first:first + len(block)] = Q @ np.asarray(block, dtype=np.float32).T
    out = np.full((len(flts), len(Q), K), -1, dtype=np.int64)
    for fi, f in enumerate(flts):
        cols = np.flatnonzero(f["mask"])
        sub = scores[:, cols]
        kk = min(K, len(cols))
        top = np.argsort(-sub, axis=1, kind="stable")[:, :kk] if len(cols) <= 4 * K else None
        if top is None:
            part = np.argpartition(-sub, kk - 1, axis=1)[:, :kk]
            order = np.argsort(-np.take_along_axis(sub, part, axis=1), axis=1, kind="stable")
            top = np.take_along_axis(part, order, axis=1)
        out[fi, :, :kk] = cols[top]
    np.save(path + ".tmp.npy", out)
    os.replace(path + ".tmp.npy", path)
    return out


def real_collection(args):
    """(docs .npy path, queries, cache tag, cache dir) of ``--real DIR``; sets args.n / dim."""
    src = os.path.join(args.real, "corpus.npy")
    shape = np.load(src, mmap_mode="r").shape
    args.n, args.dim = int(shape[0]), int(shape[1])
    Q = np.ascontiguousarray(np.load(os.path.join(args.real, "queries.npy"))[: args.nq], dtype=np.float32)
    args.nq = len(Q)
    parts = os.path.abspath(args.real).rstrip("/").split("/")[-2:]
    tag = "real-" + "-".join(parts)
    cache_dir = os.path.join(args.data_dir, tag)
    os.makedirs(cache_dir, exist_ok=True)
    return src, Q, tag, cache_dir


def exact_top(src: str, Q: np.ndarray, chunk: int) -> np.ndarray:
    """(nq, K) exact unfiltered top-K ids by float32 inner product."""
    scores = np.concatenate([Q @ np.asarray(b, dtype=np.float32).T for _, b in gendata.iter_npy(src, chunk)], axis=1)
    part = np.argpartition(-scores, K - 1, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


# --- measuring ------------------------------------------------------------------------------------


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found[:K] ∩ truth| / |truth|, truth = the exact top-K ids
    (fewer when fewer than K documents match; a query with none is skipped)."""
    vals = []
    for f, t in zip(np.asarray(found)[:, :K], np.asarray(truth)[:, :K]):
        t = t[t >= 0]
        if len(t):
            vals.append(len(np.intersect1d(f[f >= 0], t)) / len(t))
    return float(np.mean(vals)) if vals else float("nan")



def measure(label: str, batch_fn, single_fn, Q, gt, threads, latency_n: int, args) -> dict:
    """recall@10 (all queries, first thread count), best-of batch QPS and single-query p50/p99
    per thread count."""
    out = {"recall@10": None, "threads": {}}
    for ti, t in enumerate(threads):
        _common.set_threads(t)
        batch_fn(Q[: min(8, len(Q))])  # warm-up
        times = []
        with _common.CpuWatch() as watch:
            while True:
                t0 = time.perf_counter()
                ids = batch_fn(Q)
                times.append(time.perf_counter() - t0)
                if out["recall@10"] is None:
                    out["recall@10"] = recall(ids, gt)
                    out["hits_per_query"] = float(np.mean((np.asarray(ids)[:, :K] >= 0).sum(axis=1)))
                    out["_ids"] = np.asarray(ids)[:, :K]
                if sum(times) >= args.min_time or len(times) >= args.max_runs:
                    break
        lat = []
        single_fn(Q[0])
        t_start = time.perf_counter()
        for i in range(min(latency_n, len(Q))):
            t0 = time.perf_counter()
            single_fn(Q[i])
            lat.append(time.perf_counter() - t0)
            if time.perf_counter() - t_start > args.latency_budget and len(lat) >= 3:
                break
        out["threads"][str(t)] = {"qps": len(Q) / min(times), "runs": len(times), "batch_seconds": times,
                                  "p50_ms": float(np.percentile(lat, 50) * 1e3),
                                  "p99_ms": float(np.percentile(lat, 99) * 1e3), "latency_queries": len(lat),
                                  "others_cpu_fraction": watch.others}
        r = out["threads"][str(t)]
        log(f"  {label:<58} {t}t recall@10 {out['recall@10']:.4f} hits {out['hits_per_query']:5.2f} "
            f"QPS {r['qps']:9.1f} p50 {r['p50_ms']:8.3f} ms"
            + (f"  [others used {watch.others:.0%} of the CPUs]" if (watch.others or 0) > NOISY else ""))
    return out


# --- zenstore -------------------------------------------------------------------------------------


def zen_store(args, tag: str, src: str, cols: dict) -> tuple[str, dict]:
    import zenstore

    path = os.path.join(args.data_dir, f"filtered-{tag}-n{args.n}-b{args.n_base}-s{args.seed}.zen")
    marker = {"payload_version": PAYLOAD_VERSION, "n": args.n, "seed": args.seed}
    if os.path.exists(path) and not args.rebuild:
        try:
            with zenstore.Store.open(path, readonly=True) as s:
                if s.checkpoint("bench:filtered") == marker and len(s) == args.n:
                    log(f"zenstore: reusing {path}")
                    return path, {"reused": True}
        except zenstore.ZenstoreError:
            pass
    if os.path.exists(path):
        shutil.rmtree(path)
    log(f"zenstore: building {path}")
    t0 = time.perf_counter()
    x = np.load(src, mmap_mode="r")
    with zenstore.Store.create(path, dim=args.dim, n_base=args.n_base, seed=args.seed) as s:
        n_train = min(args.n, 24 * args.n_base)
        pick = np.unique(np.linspace(0, args.n - 1, n_train).astype(np.int64))
        s.train(np.asarray(x[pick], dtype=np.float32))
        for first, block in gendata.iter_npy(src, args.chunk):
            s.add(range(first, first + len(block)), block, payloads(cols, first, first + len(block)))
        s.set_checkpoint("bench:filtered", marker)
    return path, {"reused": False, "build_seconds": time.perf_counter() - t0}


def dequantized_truth(store, Q: np.ndarray, flts: list[dict]):
    """Exact top-K ids over the dequantized vectors (``store.get(i).vector``; cosine, so
    the normalised query's inner products), unfiltered and for each filter."""
    qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    n = len(flts[0]["mask"])
    scores = np.full((len(Q), n), -np.inf, dtype=np.float32)
    for ids, vecs, _ in store.iter_records(batch_size=4096, with_payload=False):
        scores[:, ids] = qn @ vecs.T

    def top(cols):
        sub = scores[:, cols]
        kk = min(K, len(cols))
        out = np.full((len(Q), K), -1, dtype=np.int64)
        if kk:
            part = np.argpartition(-sub, kk - 1, axis=1)[:, :kk]
            order = np.argsort(-np.take_along_axis(sub, part, axis=1), axis=1, kind="stable")
            out[:, :kk] = cols[np.take_along_axis(part, order, axis=1)]
        return out

    return top(np.arange(n)), [top(np.flatnonzero(f["mask"])) for f in flts]


def ensure_indexes(store) -> dict:
    took = {}
    for field, kind in INDEXES.items():
        t0 = time.perf_counter()
        if store.create_payload_index(field, kind):
            took[field] = time.perf_counter() - t0
    return took


def bench_zenstore(args, path, Q, gt_plain, gt_f, flts, rows: list) -> dict:
    import zenstore

    info = {}
    with zenstore.Store.open(path) as store:
        info["index_build_seconds"] = ensure_indexes(store)
        st = store.stats()
        info["payload_indexes"] = st["payload_indexes"]
        info["bytes_per_vector_all_in"] = st["bytes_per_vector_all_in"]
        info["catalog_payload_index_bytes"] = st["bytes_on_disk"]["payload_indexes"]
        # what the estimator itself gives: the exact top-10 over the dequantized vectors
        # (what a full scan that rescored every matching row returns), on the first
        # --exhaustive-queries queries; a row's recall_vs_exhaustive@10 is what its
        # coarse pass, filtering and probing lose against that
        qe = Q[: args.exhaustive_queries]
        _common.set_threads(max(args.threads))
        t0 = time.perf_counter()
        plain_exhaustive, exhaustive = dequantized_truth(store, qe, flts)
        info["exhaustive_seconds"] = time.perf_counter() - t0

        def vs_exhaustive(m, ref):
            m["recall_vs_exhaustive@10"] = recall(m.pop("_ids")[: len(qe)], ref)
            return m

        for phase in ("index", "no index"):
            if phase == "no index":
                for field in INDEXES:
                    store.drop_payload_index(field)
            for cfg in args.zen_configs:
                sl, nprobe = cfg
                conf = f"shortlist={sl} nprobe={nprobe or 'all'}"
                if phase == "index":
                    m = measure(f"zenstore {conf} unfiltered",
                                lambda q: store.search_batch(q, k=K, shortlist=sl, nprobe=nprobe)[0],
                                lambda q: store.search(q, k=K, shortlist=sl, nprobe=nprobe, with_payload=False),
                                Q, gt_plain, args.threads, args.latency_queries, args)
                    rows.append({"method": "zenstore", "config": conf, "filter": None, "selectivity": 1.0,
                                 "index": None, **vs_exhaustive(m, plain_exhaustive)})
                for fi, f in enumerate(flts):
                    spec = f["filter"]
                    lat_n = args.latency_queries if phase == "index" else args.noindex_latency_queries
                    m = measure(f"zenstore {conf} {phase:<8} {f['name']}",
                                lambda q, spec=spec: store.search_batch(q, k=K, shortlist=sl, nprobe=nprobe,
                                                                        filter=spec)[0],
                                lambda q, spec=spec: store.search(q, k=K, shortlist=sl, nprobe=nprobe, filter=spec,
                                                                  with_payload=False),
                                Q, gt_f[fi], args.threads if phase == "index" else args.threads[:1], lat_n, args)
                    rows.append({"method": "zenstore", "config": conf, "filter": f["name"], "kind": f["kind"],
                                 "selectivity": f["selectivity"], "matching": f["matching"],
                                 "index": phase == "index", **vs_exhaustive(m, exhaustive[fi])})
        ensure_indexes(store)  # a rerun reuses the store as it was
    return info


# --- faiss ------------------------------------------------------------------------------------------


def build_faiss(args, src: str) -> dict:
    import faiss

    built = {"train_seconds": {}, "add_seconds": {}}
    pick = np.unique(np.linspace(0, args.n - 1, min(args.n, args.faiss_train_sample)).astype(np.int64))
    sample = np.ascontiguousarray(np.load(src, mmap_mode="r")[pick], dtype=np.float32)
    nlist = min(args.nlist, max(1, len(sample) // 39))
    built["nlist"] = nlist
    for name, factory in (("ivf", f"IVF{nlist},RaBitQ"), ("flat", "RaBitQ")):
        idx = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        idx.train(sample)
        built["train_seconds"][name] = time.perf_counter() - t0
        built[name] = idx
    del sample
    gc.collect()
    _common.set_threads(max(args.threads))
    for first, block in gendata.iter_npy(src, args.chunk):
        for name in ("ivf", "flat"):
            t0 = time.perf_counter()
            built[name].add(np.ascontiguousarray(block, dtype=np.float32))
            built["add_seconds"][name] = built["add_seconds"].get(name, 0.0) + time.perf_counter() - t0
    return built


def selector(ids: np.ndarray):
    import faiss

    return faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids))


def bench_faiss(args, built, Q, gt_plain, gt_f, flts, rows: list) -> None:
    import faiss

    def params(name, nprobe, sel):
        if name == "ivf":
            p = faiss.IVFRaBitQSearchParameters()
            p.nprobe = nprobe
        else:
            p = faiss.RaBitQSearchParameters()
        p.qb = args.qb
        if sel is not None:
            p.sel = sel
        return p

    configs = [("ivf", n) for n in args.ivf_nprobes] + [("flat", None)]
    for name, nprobe in configs:
        idx = built[name]
        method = "faiss IndexIVFRaBitQ" if name == "ivf" else "faiss IndexRaBitQ"
        conf = (f"nlist={built['nlist']} qb={args.qb} nprobe={nprobe}" if name == "ivf" else f"qb={args.qb}")
        p = params(name, nprobe, None)
        m = measure(f"{method} {conf} unfiltered", lambda q, p=p: idx.search(q, K, params=p)[1],
                    lambda q, p=p: idx.search(q[None], K, params=p)[1][0], Q, gt_plain, args.threads,
                    args.latency_queries, args)
        m.pop("_ids")
        rows.append({"method": method, "config": conf, "filter": None, "selectivity": 1.0, "index": None, **m})
        for fi, f in enumerate(flts):
            ids = np.flatnonzero(f["mask"]).astype(np.int64)
            build_times = []
            for _ in range(5):
                t0 = time.perf_counter()
                sel = selector(ids)
                build_times.append(time.perf_counter() - t0)
            p = params(name, nprobe, sel)
            m = measure(f"{method} {conf} IDSelectorBatch {f['name']}",
                        lambda q, p=p: idx.search(q, K, params=p)[1],
                        lambda q, p=p: idx.search(q[None], K, params=p)[1][0], Q, gt_f[fi], args.threads,
                        args.latency_queries, args)
            m.pop("_ids")
            rows.append({"method": method, "config": conf, "filter": f["name"], "kind": f["kind"],
                         "selectivity": f["selectivity"], "matching": f["matching"], "index": "IDSelectorBatch",
                         "selector_build_ms": statistics.median(build_times) * 1e3, **m})
            del sel


# --- summary ----------------------------------------------------------------------------------------


def targets(res: dict) -> list[dict]:
    """Per zenstore config and filter (with index): recall within 0.01 of the unfiltered
    recall; QPS (2 threads, or the last count) at least the unfiltered QPS when s <= 10%."""
    t = str(res["params"]["threads"][-1])
    plain = {r["config"]: r for r in res["rows"] if r["method"] == "zenstore" and r["filter"] is None}
    out = []
    for r in res["rows"]:
        if r["method"] != "zenstore" or not r.get("index"):
            continue
        base = plain[r["config"]]
        d_recall = r["recall@10"] - base["recall@10"]
        qps_ratio = r["threads"][t]["qps"] / base["threads"][t]["qps"]
        out.append({"config": r["config"], "filter": r["filter"], "recall": r["recall@10"],
                    "unfiltered_recall": base["recall@10"], "recall_delta": d_recall,
                    "recall_met": d_recall >= -0.01, "qps_ratio": qps_ratio,
                    "qps_met": None if r["selectivity"] > 0.1 else qps_ratio >= 1.0})
    return out


def report(res: dict) -> str:
    th = [str(t) for t in res["params"]["threads"]]
    lines = [f"filtered search, {res['params']['n']:,} x {res['params']['dim']}, {res['params']['nq']} queries, "
             f"k={K}; machine: {_common.machine_line(res['machine'])}", ""]
    cols = [("method", "method", ""), ("config", "config", ""), ("filter", "filter", ""), ("index", "index", ""),
            ("matching", "matching", ","), ("recall@10", "recall@10", ".4f"),
            ("recall_vs_exhaustive@10", "vs exhaustive", ".4f"), ("hits_per_query", "hits", ".2f")]
    table = []
    for r in res["rows"]:
        row = {**r, "filter": r["filter"] or "none", "index": {True: "yes", False: "no", None: "-"}.get(
            r["index"], r["index"])}
        for t in th:
            tr = r["threads"].get(t)
            row[f"qps{t}"] = tr["qps"] if tr else None
            row[f"p50_{t}"] = tr["p50_ms"] if tr else None
        if "selector_build_ms" in r:
            row["selector"] = r["selector_build_ms"]
        table.append(row)
    cols += [(f"qps{t}", f"QPS {t}t", ",.1f") for t in th] + [(f"p50_{t}", f"p50 ms {t}t", ".3f") for t in th]
    cols += [("selector", "selector ms", ".2f")]
    lines.append(_common.table(table, cols))
    lines += ["", "targets (zenstore with index): recall within 0.01 of unfiltered; QPS >= unfiltered at s <= 10%"]
    for tg in res["targets"]:
        qps = "-" if tg["qps_met"] is None else ("MET" if tg["qps_met"] else "MISSED")
        lines.append(f"  {tg['config']:<26} {tg['filter']:<18} recall {tg['recall']:.4f} "
                     f"(unfiltered {tg['unfiltered_recall']:.4f}, {tg['recall_delta']:+.4f}: "
                     f"{'MET' if tg['recall_met'] else 'MISSED'}); QPS ratio {tg['qps_ratio']:.2f} ({qps})")
    lines += ["", f"rerun: {res['command']}"]
    return "\n".join(lines)


def plot(res: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    t = str(res["params"]["threads"][-1])
    kinds = ["keyword", "int range", "AND"]
    fig, axes = plt.subplots(2, len(kinds), figsize=(6 * len(kinds), 9), squeeze=False)
    series: dict = {}
    for r in res["rows"]:
        if r["filter"] is None:
            continue
        label = f"{r['method']} {r['config']}" + {True: " (index)", False: " (no index)"}.get(r["index"], "")
        series.setdefault((r["kind"], label), []).append(r)
    plain = {f"{r['method']} {r['config']}": r for r in res["rows"] if r["filter"] is None}
    for col, kind in enumerate(kinds):
        for (k, label), pts in sorted(series.items()):
            if k != kind:
                continue
            pts.sort(key=lambda r: r["selectivity"])
            xs = [r["selectivity"] * 100 for r in pts]
            style = "-" if "zenstore" in label else "--"
            axes[0][col].plot(xs, [r["recall@10"] for r in pts], style, marker="o", label=label)
            tr = [r["threads"].get(t) for r in pts]
            if all(tr):
                axes[1][col].plot(xs, [x["qps"] for x in tr], style, marker="o", label=label)
        for base_label, r in plain.items():
            if "zenstore" in base_label:
                axes[0][col].axhline(r["recall@10"], color="gray", lw=0.8, ls=":")
                axes[1][col].axhline(r["threads"][t]["qps"], color="gray", lw=0.8, ls=":")
        for row, ylabel in ((0, "recall@10 vs exact filtered"), (1, f"batch QPS, {t} thread(s) (log)")):
            ax = axes[row][col]
            ax.set_xscale("log")
            ax.set_xlabel("selectivity, % of docs (log)")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{kind} filter")
        axes[1][col].set_yscale("log")
    handles, labels = axes[1][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    fig.suptitle(f"{res['params']['n']:,} x {res['params']['dim']}; dotted: zenstore unfiltered")
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- main -------------------------------------------------------------------------------------------


def _zen_config(text: str) -> tuple:
    sl, _, nprobe = text.partition(":")
    return int(sl), (None if nprobe in ("", "all") else int(nprobe))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--zen-configs", type=_zen_config, nargs="+", default=[(100, None), (50, 16)],
                   metavar="SHORTLIST:NPROBE", help="zenstore configs (default 100:all 50:16)")
    p.add_argument("--methods", nargs="+", choices=("zenstore", "faiss"), default=["zenstore", "faiss"])
    p.add_argument("--n-base", type=int, default=1024)
    p.add_argument("--nlist", type=int, default=1024)
    p.add_argument("--ivf-nprobes", type=int, nargs="+", default=[16])
    p.add_argument("--qb", type=int, default=4)
    p.add_argument("--faiss-train-sample", type=int, default=40960)
    p.add_argument("--latency-queries", type=int, default=100)
    p.add_argument("--noindex-latency-queries", type=int, default=5,
                   help="single queries timed without an index (each decodes every payload)")
    p.add_argument("--exhaustive-queries", type=int, default=200,
                   help="queries of the exhaustive zenstore reference (every matching row rescored)")
    p.add_argument("--latency-budget", type=float, default=15.0)
    p.add_argument("--min-time", type=float, default=3.0)
    p.add_argument("--max-runs", type=int, default=3)
    p.add_argument("--data-dir", default="data")
    p.add_argument("--chunk", type=int, default=8192)
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--out", default=None)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--real", default=None, metavar="DIR",
                   help="a real embedded collection instead of generated docs: DIR/corpus.npy and "
                        "DIR/queries.npy (float32, unit rows; the first --nq queries); --n and --dim "
                        "come from it, payloads are generated as for synthetic docs")
    args = p.parse_args(argv)
    if args.real:
        src, Q, tag, cache_dir = real_collection(args)
        gt_plain = exact_top(src, Q, args.chunk)
    else:
        spec = gendata.make_spec(args.dim, args.seed)
        files = gendata.prepare(spec, args.n, args.nq, 100, args.data_dir, ("npy",), log=log)
        src, tag, cache_dir = files["docs"]["npy"], spec.fingerprint(), gendata.spec_dir(spec, args.data_dir)
        Q = np.load(files["queries"]).astype(np.float32)
        gt_plain = gendata.load_ground_truth(files["gt"])[0][:, :K]
    cols = payload_columns(args.n, args.seed)
    flts = make_filters(args.n, cols)
    gt_f = filtered_truth(args, src, Q, flts, cache_dir)
    rows: list = []
    info: dict = {}
    if "zenstore" in args.methods:
        path, info["zenstore_build"] = zen_store(args, tag, src, cols)
        info["zenstore"] = bench_zenstore(args, path, Q, gt_plain, gt_f, flts, rows)
    if "faiss" in args.methods:
        built = build_faiss(args, src)
        info["faiss_build"] = {k: built[k] for k in ("train_seconds", "add_seconds", "nlist")}
        bench_faiss(args, built, Q, gt_plain, gt_f, flts, rows)
        del built
    params = {k: v for k, v in vars(args).items()}
    params["zen_configs"] = [f"{sl}:{npb or 'all'}" for sl, npb in args.zen_configs]
    params["filters"] = [{k: f[k] for k in ("name", "kind", "selectivity", "filter", "matching")} for f in flts]
    params["recall"] = "recall@10 = |top-10 found ∩ exact filtered top-10 (float32)| / 10, mean over queries"
    res = {"benchmark": "filtered", "command": _common.rerun_command("benchmarks/filtered.py", argv),
           "machine": _common.machine_info(), "params": params, "info": info, "rows": rows}
    if "zenstore" in args.methods:
        res["targets"] = targets(res)
    else:
        res["targets"] = []
    name = f"filtered-{os.path.basename(os.path.dirname(os.path.abspath(args.real)))}-" if args.real else "filtered-"
    out = args.out or os.path.join(_common.OUT_DIR, f"{name}n{args.n}-d{args.dim}.json")
    res["plot"] = None if args.no_plot else plot(res, out[:-5] + ".png")
    return _common.publish(res, out, report)


if __name__ == "__main__":
    main()
