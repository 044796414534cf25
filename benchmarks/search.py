#!/usr/bin/env python
"""Search benchmark: recall@10 vs exact float search, batch QPS and single-query latency
of zenstore and its peers on generated 7680-d data (``zenstore.synth``).

Methods (``--methods``; all but the refine tiers by default):

  zenstore     built with ``zenstore ingest`` from the streamed .npy, n_base 1024; swept
               over ``--shortlists`` x ``--nprobes``
  flat         faiss IndexFlatIP, exact float32 (skipped above ``--flat-max-n``: at 1M it
               would hold 30 GB; the recall reference is then the cached exact ground truth
               from tools/gendata.py, computed by streaming)
  binary       faiss IndexBinaryFlat over sign bits: pure Hamming, and Hamming shortlist +
               float rerank against the original vectors (which it must keep: counted)
  rabitq       faiss IndexRaBitQ (1-bit codes, qb=4), flat; plain and centered query
  ivfrabitq    faiss IndexIVFRaBitQ, nlist 1024, qb=4, nprobe sweep
  usearch      usearch HNSW over 1-bit codes (Hamming), expansion_search sweep
  zenstore-refine, ivfrabitq-refine, hnsw
               the refine tiers (issue 12) beside faiss IVF-RaBitQ + IndexRefineFlat /
               Refine(SQ8) and IndexHNSWFlat: see benchmarks/_search_refine.py (opt-in)

Every method is built from the same streamed documents (chunked adds; nothing holds the
float corpus except ``flat`` and the in-memory rerank originals below ``--flat-max-n``).
Threads: for each ``--threads`` value, numba, faiss (OpenMP) and every loaded OpenBLAS are
set to that many threads (threadpoolctl; benchmarks/_common.py). OMP_WAIT_POLICY=passive is
set before anything loads OpenMP (benchmarks/_env.py).

    python benchmarks/search.py --n 100000                # ~30 min; 3 GB input + 3 GB in RAM
    python benchmarks/search.py --n 1000000               # ~1-2 h; 30 GB input, streamed
    python benchmarks/search.py --n 2000 --dim 256 --nq 20 --data-dir /tmp/zb --out /tmp/zb/s.json
    python benchmarks/search.py --n 100000 --methods zenstore flat ivfrabitq zenstore-refine ivfrabitq-refine \
        hnsw --shortlists 100 --nprobes none 32 --rabitq-nprobes 16 64 --refine-ks 100 \
        --out docs/benchmarks/search-refine-n100000-d7680.json           # the refine tiers (issue 12)

Writes docs/benchmarks/search-n<N>-d<D>.json and .png (recall vs QPS).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402
import _search_refine  # noqa: E402
from _common import gendata  # noqa: E402

ALL_METHODS = ("zenstore", "flat", "binary", "rabitq", "ivfrabitq", "usearch")
REFINE_METHODS = _search_refine.METHODS  # opt-in: --methods ... zenstore-refine ivfrabitq-refine hnsw
K = 10
NOISY = 0.10  # flag timings during which other processes used more than this share of the CPUs
_threads_now = [1]


def log(msg: str) -> None:
    print(msg, flush=True)


# --- measuring -------------------------------------------------------------------------------


def _pct(values, p):
    return float(np.percentile(np.asarray(values) * 1e3, p)) if len(values) else None


def measure(label: str, batch_fn, single_fn, Q: np.ndarray, gt: np.ndarray, args) -> dict:
    """recall@10 (first thread count, all queries), batch QPS and single-query latency per
    thread count. Slow configurations time a prefix of the queries on later thread counts
    (never for recall) and fewer single queries; the counts used are recorded."""
    nq = len(Q)
    out = {"recall@10": None, "threads": {}}
    for ti, t in enumerate(args.threads):
        _common.set_threads(t)
        _threads_now[0] = t
        w = min(8, nq)
        batch_fn(Q[:w])  # warm-up (JIT, page faults)
        t0 = time.perf_counter()
        batch_fn(Q[:w])
        est = (time.perf_counter() - t0) / w
        if ti == 0:
            n_time = nq
        else:
            n_time = nq if est * nq <= args.time_budget else max(min(50, nq), int(args.time_budget / max(est, 1e-9)))
        times = []
        with _common.CpuWatch() as watch:
            while True:
                t0 = time.perf_counter()
                ids = batch_fn(Q[:n_time])
                times.append(time.perf_counter() - t0)
                if ti == 0 and len(times) == 1:
                    out["recall@10"] = _common.recall_at(ids, gt, K)
                if sum(times) >= args.min_time or len(times) >= args.max_runs:
                    break
        lat = []
        n_lat = min(args.latency_queries, nq)
        single_fn(Q[0])
        tl = time.perf_counter()
        for i in range(n_lat):
            t0 = time.perf_counter()
            single_fn(Q[i])
            lat.append(time.perf_counter() - t0)
            if time.perf_counter() - tl > args.latency_budget and len(lat) >= 20:
                break
        best = min(times)
        out["threads"][str(t)] = {
            "qps": n_time / best, "queries_timed": n_time, "runs": len(times),
            "others_cpu_fraction": watch.others,  # CPU used by other processes while timing
            "batch_seconds": times, "p50_ms": _pct(lat, 50), "p99_ms": _pct(lat, 99),
            "mean_ms": float(np.mean(lat) * 1e3) if lat else None, "latency_queries": len(lat)}
        r = out["threads"][str(t)]
        log(f"  {label:<44} {t}t  recall@10 {out['recall@10']:.4f}  QPS {r['qps']:9.1f}"
            f"  p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms"
            + (f"  ({n_time} queries timed)" if n_time < nq else "")
            + (f"  [other processes used {watch.others:.0%} of the CPUs]" if (watch.others or 0) > NOISY else ""))
    return out


# --- zenstore --------------------------------------------------------------------------------


def zenstore_store(args, spec, src: str, refine: str | None = None) -> tuple[str, dict]:
    """The store of this data (with refine tier ``refine``), reused when it matches, else
    built by the ingest CLI."""
    import zenstore
    from zenstore.format import RefineTier

    tier = RefineTier.parse(refine)
    suffix = f"-{refine}" if refine else ""
    default = os.path.join(args.data_dir, f"search-{spec.fingerprint()}-n{args.n}-b{args.n_base}{suffix}.zen")
    path = (args.store if not refine else None) or default
    label = f"zenstore refine={refine}" if refine else "zenstore"
    if os.path.exists(path) and not args.rebuild:
        try:
            with zenstore.Store.open(path, readonly=True) as s:
                if (len(s) == args.n and s.config.n_base == args.n_base
                        and s.config.refine == (tier.to_dict() if tier else None)):
                    info_path = path + ".build.json"
                    info = json.load(open(info_path)) if os.path.exists(info_path) else {}
                    log(f"{label}: reusing {path} ({args.n:,} docs)")
                    return path, {**info, "reused": True}
        except zenstore.ZenstoreError:
            pass
    if os.path.exists(path):
        shutil.rmtree(path)
    cmd = [sys.executable, "-m", "zenstore", "ingest", path, src, "--dim", str(args.dim),
           "--n-base", str(args.n_base)] + (["--refine", refine] if refine else []) + ["--quiet", "--json"]
    log(f"{label}: " + " ".join(cmd))
    res = _common.run_measured(cmd)
    if res["returncode"] != 0:
        what = f"zenstore ingest --refine {refine}" if refine else "zenstore ingest"
        raise SystemExit(f"{what} failed (exit {res['returncode']}):\n{res['stderr']}")
    summary = json.loads(res["stdout"].strip().splitlines()[-1])
    info = {"command": " ".join(cmd), "build_seconds": summary["seconds"],
            "rows_per_second": summary["rows_per_second"], "wall_seconds": round(res["wall_s"], 2),
            "peak_rss_mib": round(res["peak_rss_bytes"] / 2**20, 1)}
    with open(path + ".build.json", "w") as f:
        json.dump(info, f)
    return path, {**info, "reused": False}


def calibrated(path: str, src: str) -> dict:
    """The store's calibration (the default ``search()`` setting); a store built before
    calibrations existed learns one here from 20,000 of its rows (ids = row numbers of
    ``src``, as ``zenstore ingest`` assigns them), timed."""
    import zenstore

    with zenstore.Store.open(path, readonly=True) as s:
        cal = s.snapshot().codec.calibration
    seconds = None
    if cal is None:
        docs = np.load(src, mmap_mode="r")
        rows = np.sort(np.random.default_rng(0).choice(len(docs), min(len(docs), 20_000), replace=False))
        with zenstore.Store.open(path) as s:
            t0 = time.perf_counter()
            cal = s.calibrate(rows, np.asarray(docs[rows]))
            seconds = time.perf_counter() - t0
    return {**cal.to_dict(), "calibrate_seconds": seconds}


def bench_zenstore(args, spec, src, Q, gt) -> list[dict]:
    import zenstore

    path, build = zenstore_store(args, spec, src)
    cal = calibrated(path, src)
    log(f"zenstore: calibration {cal}")
    rows = []
    with zenstore.Store.open(path, readonly=True) as store:
        st = store.stats()
        bpv, all_in = st["bytes_per_vector"], st["bytes_on_disk"]["total"] / st["count"]
        m = measure("zenstore default", lambda q: store.search_batch(q, k=K)[0],
                    lambda q: [h.id for h in store.search(q, k=K, with_payload=False)], Q, gt, args)
        rows.append({"method": "zenstore", "config": f"default (calibrated: shortlist={cal['shortlist']} "
                     f"nprobe={cal['nprobe'] or 'all'})", "shortlist": cal["shortlist"], "nprobe": cal["nprobe"],
                     "default": True, "calibration": cal, "bytes_per_vector": bpv, "bytes_all_in": all_in,
                     "n_base": st["n_base"], "build": build, **m})
        for nprobe in args.nprobes:
            for sl in args.shortlists:
                label = f"shortlist={sl} nprobe={nprobe or 'all'}"

                def batch_fn(q, sl=sl, nprobe=nprobe or "all"):
                    return store.search_batch(q, k=K, shortlist=sl, nprobe=nprobe)[0]

                def single_fn(q, sl=sl, nprobe=nprobe or "all"):
                    return [h.id for h in store.search(q, k=K, shortlist=sl, nprobe=nprobe, with_payload=False)]

                m = measure("zenstore " + label, batch_fn, single_fn, Q, gt, args)
                rows.append({"method": "zenstore", "config": label, "shortlist": sl, "nprobe": nprobe,
                             "bytes_per_vector": bpv, "bytes_all_in": all_in,
                             "bytes_note": "vector data (codes+scale+aux); all-in = whole store directory / docs",
                             "n_base": st["n_base"], "build": build, **m})
    return rows


# --- peers -----------------------------------------------------------------------------------


def pack_signs(x: np.ndarray) -> np.ndarray:
    return np.packbits(x > 0, axis=1)


def faiss_bytes(index, n: int) -> float:
    import faiss

    return len(faiss.serialize_index(index)) / n


def sample_rows(src: str, n_total: int, n_sample: int) -> np.ndarray:
    rows = np.unique(np.linspace(0, n_total - 1, num=min(n_sample, n_total)).astype(np.int64))
    x = np.load(src, mmap_mode="r")
    out = np.ascontiguousarray(x[rows], dtype=np.float32)
    del x
    return out


def build_peers(args, src: str) -> dict:
    """One streaming pass over the documents feeds every requested peer index."""
    import faiss

    want = set(args.methods)
    d, n = args.dim, args.n
    built: dict = {"add_seconds": {}, "train_seconds": {}}
    keep_float = ("flat" in want or "binary" in want) and n <= args.flat_max_n
    copy_float = keep_float and "flat" not in want  # with IndexFlatIP, the originals are its storage
    if copy_float:
        built["X"] = np.empty((n, d), dtype=np.float32)
    elif "binary" in want and not keep_float:
        built["X"] = np.load(src, mmap_mode="r")  # rerank originals stay on disk
    built["X_in_memory"] = keep_float
    if "flat" in want and keep_float:
        built["flat"] = faiss.IndexFlatIP(d)
    if "binary" in want:
        built["binary"] = faiss.IndexBinaryFlat(d)
    sample = None
    if "rabitq" in want or "ivfrabitq" in want:
        t0 = time.perf_counter()
        sample = sample_rows(src, n, args.faiss_train_sample)
        built["sample_seconds"] = time.perf_counter() - t0
    if "rabitq" in want:
        idx = faiss.index_factory(d, "RaBitQ", faiss.METRIC_INNER_PRODUCT)
        t0 = time.perf_counter()
        idx.train(sample)
        built["train_seconds"]["rabitq"] = time.perf_counter() - t0
        built["rabitq"] = idx
    if "ivfrabitq" in want:
        nlist = min(args.nlist, max(1, len(sample) // 39))
        built["nlist"] = nlist
        idx = faiss.index_factory(d, f"IVF{nlist},RaBitQ", faiss.METRIC_INNER_PRODUCT)
        log(f"faiss IVF{nlist},RaBitQ: training on {len(sample):,} rows")
        t0 = time.perf_counter()
        idx.train(sample)
        built["train_seconds"]["ivfrabitq"] = time.perf_counter() - t0
        built["ivfrabitq"] = idx
    del sample
    gc.collect()
    if "usearch" in want:
        try:
            from usearch.index import Index

            built["usearch"] = Index(ndim=d, metric="hamming", dtype="b1", connectivity=args.hnsw_m,
                                     expansion_add=args.hnsw_ef_add)
        except ImportError as exc:
            built["usearch_error"] = f"usearch not installed: {exc}"
    names = [m for m in ("flat", "binary", "rabitq", "ivfrabitq", "usearch") if m in built]
    if not names and not keep_float:
        return built
    log(f"peers: streaming {n:,} docs into {', '.join(names)}")
    _common.set_threads(max(args.threads))
    for first, block in gendata.iter_npy(src, args.chunk):
        if copy_float:
            built["X"][first:first + len(block)] = block
        bits = pack_signs(block) if ("binary" in built or "usearch" in built) else None
        for name in names:
            t0 = time.perf_counter()
            if name == "binary":
                built[name].add(bits)
            elif name == "usearch":
                built[name].add(np.arange(first, first + len(block)), bits, threads=max(args.threads))
            else:
                built[name].add(block)
            built["add_seconds"][name] = built["add_seconds"].get(name, 0.0) + time.perf_counter() - t0
    if keep_float and not copy_float:  # a view of IndexFlatIP's own float32 storage (no second copy)
        built["X"] = faiss.rev_swig_ptr(built["flat"].get_xb(), n * d).reshape(n, d)
    return built


def bench_peers(args, built, Q, gt, rows: list) -> list[dict]:
    """Measure every built peer; rows are appended to ``rows`` as they complete."""
    import faiss

    n, d = args.n, args.dim

    def build_info(name):
        return {"train_seconds": built["train_seconds"].get(name), "add_seconds": built["add_seconds"].get(name)}

    if "flat" in args.methods:
        if "flat" in built:
            idx = built["flat"]
            m = measure("faiss IndexFlatIP", lambda q: idx.search(q, K)[1],
                        lambda q: idx.search(q[None], K)[1][0], Q, gt, args)
            rows.append({"method": "faiss IndexFlatIP", "config": "exact float32", "bytes_per_vector": 4 * d,
                         "bytes_all_in": 4 * d, "build": build_info("flat"), **m})
        else:
            rows.append({"method": "faiss IndexFlatIP", "config": "exact float32", "bytes_per_vector": 4 * d,
                         "bytes_all_in": 4 * d, "recall@10": 1.0, "threads": {},
                         "skipped": f"not run at {n:,} docs (> --flat-max-n {args.flat_max_n:,}: it would hold "
                                    f"{n * d * 4 / 1e9:.0f} GB); recall reference = exact ground truth streamed by "
                                    "tools/gendata.py"})
            log(f"  faiss IndexFlatIP: skipped ({rows[-1]['skipped']})")
    if "binary" in built:
        idx, X = built["binary"], built["X"]
        code = d // 8
        m = measure("faiss IndexBinaryFlat (Hamming)", lambda q: idx.search(pack_signs(q), K)[1],
                    lambda q: idx.search(pack_signs(q[None]), K)[1][0], Q, gt, args)
        rows.append({"method": "faiss IndexBinaryFlat", "config": "sign bits, Hamming only",
                     "bytes_per_vector": code, "bytes_all_in": faiss_bytes_binary(idx, n),
                     "build": build_info("binary"), **m})
        where = "in RAM" if built["X_in_memory"] else "memory-mapped from the .npy on disk"
        for r in args.rerank_shortlists:
            def rerank(q, r=r):
                cand = idx.search(pack_signs(q), r)[1]
                return float_rerank(X, q, cand)

            m = measure(f"faiss IndexBinaryFlat + float rerank {r}", rerank,
                        lambda q, rerank=rerank: rerank(q[None])[0], Q, gt, args)
            rows.append({"method": "faiss IndexBinaryFlat + float rerank", "config": f"Hamming top {r}, rerank float32",
                         "rerank": r, "bytes_per_vector": code + 4 * d, "bytes_all_in": code + 4 * d,
                         "bytes_note": f"sign bits + float32 originals ({where})", "build": build_info("binary"), **m})
    if "rabitq" in built:
        idx = built["rabitq"]
        for centered in (False, True):
            p = faiss.RaBitQSearchParameters()
            p.qb = args.qb
            p.centered = centered
            label = f"qb={args.qb}" + (" centered" if centered else "")
            m = measure(f"faiss IndexRaBitQ {label}", lambda q, p=p: idx.search(q, K, params=p)[1],
                        lambda q, p=p: idx.search(q[None], K, params=p)[1][0], Q, gt, args)
            rows.append({"method": "faiss IndexRaBitQ", "config": label, "bytes_per_vector": idx.code_size,
                         "bytes_all_in": faiss_bytes(idx, n), "build": build_info("rabitq"), **m})
    if "ivfrabitq" in built:
        idx = built["ivfrabitq"]
        nlist = built["nlist"]
        all_in = faiss_bytes(idx, n)
        for nprobe in args.rabitq_nprobes:
            if nprobe > nlist:
                continue
            p = faiss.IVFRaBitQSearchParameters()
            p.nprobe = nprobe
            p.qb = args.qb
            label = f"nlist={nlist} qb={args.qb} nprobe={nprobe}"
            m = measure(f"faiss IndexIVFRaBitQ {label}", lambda q, p=p: idx.search(q, K, params=p)[1],
                        lambda q, p=p: idx.search(q[None], K, params=p)[1][0], Q, gt, args)
            rows.append({"method": "faiss IndexIVFRaBitQ", "config": label, "nprobe": nprobe,
                         "bytes_per_vector": idx.code_size, "bytes_all_in": all_in,
                         "bytes_note": "all-in adds the 8-byte list ids and the centroids",
                         "build": build_info("ivfrabitq"), **m})
    if "usearch" in built:
        idx = built["usearch"]
        all_in = idx.serialized_length / n
        for ef in args.hnsw_ef_search:
            def batch(q, ef=ef):
                idx.expansion_search = ef
                return idx.search(pack_signs(q), K, threads=_threads_now[0]).keys

            def single(q, ef=ef):
                idx.expansion_search = ef
                return idx.search(pack_signs(q[None]), K, threads=1).keys[0]

            label = f"M={args.hnsw_m} ef_add={args.hnsw_ef_add} ef_search={ef}"
            m = measure(f"usearch HNSW 1-bit {label}", batch, single, Q, gt, args)
            rows.append({"method": "usearch HNSW (1-bit)", "config": label, "bytes_per_vector": d // 8,
                         "bytes_all_in": all_in, "bytes_note": "all-in = serialized index (codes + graph) / docs",
                         "build": build_info("usearch"), **m})
    elif "usearch" in args.methods:
        rows.append({"method": "usearch HNSW (1-bit)", "config": "-", "threads": {}, "recall@10": None,
                     "skipped": built.get("usearch_error", "usearch unavailable")})
    return rows


def faiss_bytes_binary(index, n: int) -> float:
    import faiss

    return len(faiss.serialize_index_binary(index)) / n


def float_rerank(X, Q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Top-K of each query's candidates by exact float32 inner product with the originals
    (gathered per query; queries split over the current thread count: numpy's gather and
    BLAS release the GIL)."""
    nq = len(cand)
    out = np.full((nq, K), -1, dtype=np.int64)

    def work(lo, hi):
        for i in range(lo, hi):
            c = cand[i][cand[i] >= 0]
            if len(c) == 0:
                continue
            rows = np.sort(c)  # file order: cheaper when the originals are memory-mapped
            s = np.asarray(X[rows], dtype=np.float32) @ Q[i]
            top = np.argsort(-s, kind="stable")[:K]
            out[i, :len(top)] = rows[top]

    t = _threads_now[0]
    if t <= 1 or nq < 2:
        work(0, nq)
    else:
        from concurrent.futures import ThreadPoolExecutor

        bounds = np.linspace(0, nq, t + 1).astype(int)
        _common.set_blas_threads(1)  # t Python threads, each with single-threaded BLAS
        try:
            with ThreadPoolExecutor(t) as ex:
                list(ex.map(lambda b: work(*b), zip(bounds[:-1], bounds[1:])))
        finally:
            _common.set_blas_threads(t)
    return out


# --- targets ---------------------------------------------------------------------------------


def _frontier(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Pareto frontier of (recall, qps): ascending recall, descending qps."""
    pts = sorted(points, key=lambda p: (-p[0], -p[1]))
    front, best_qps = [], -1.0
    for r, q in pts:
        if q > best_qps:
            front.append((r, q))
            best_qps = q
    return sorted(front)


def qps_at_recall(points: list[tuple[float, float]], target: float):
    """zenstore's QPS at recall >= target: interpolated on its frontier in (recall, log QPS)
    between the two frontier points around the target; the fastest point when every point
    exceeds it (no extrapolation); None when no point reaches it."""
    front = _frontier(points)
    if not front or front[-1][0] < target:
        return None, "does not reach this recall"
    if front[0][0] >= target:
        return front[0][1], f"fastest config (recall {front[0][0]:.4f} >= target)"
    for (r0, q0), (r1, q1) in zip(front, front[1:]):
        if r0 <= target <= r1:
            if r1 == r0:
                return q1, "exact"
            f = (target - r0) / (r1 - r0)
            return math.exp(math.log(q0) + f * (math.log(q1) - math.log(q0))), \
                f"interpolated between recall {r0:.4f} and {r1:.4f}"
    return None, "no bracket"


def targets(rows: list[dict], threads: list[int]) -> dict:
    zs = [r for r in rows if r["method"] == "zenstore" and r.get("recall@10") is not None]
    rq = [r for r in rows if r["method"] in ("faiss IndexRaBitQ", "faiss IndexIVFRaBitQ") and r.get("recall@10") is not None]
    out: dict = {}
    if not zs or not rq:
        return {"note": "needs zenstore and faiss RaBitQ rows"}
    zbest = max(zs, key=lambda r: r["recall@10"])
    fbest = max(rq, key=lambda r: r["recall@10"])
    out["recall_at_equal_bytes"] = {
        "zenstore_best": {"config": zbest["config"], "recall@10": zbest["recall@10"],
                          "bytes_per_vector": zbest["bytes_per_vector"], "bytes_all_in": zbest["bytes_all_in"]},
        "faiss_rabitq_best": {"method": fbest["method"], "config": fbest["config"], "recall@10": fbest["recall@10"],
                              "bytes_per_vector": fbest["bytes_per_vector"], "bytes_all_in": fbest["bytes_all_in"]},
        "zenstore_bytes_ok": zbest["bytes_per_vector"] <= 964 or None,
        "met": zbest["recall@10"] >= fbest["recall@10"],
    }
    qps = {}
    for t in threads:
        pts = [(r["recall@10"], r["threads"][str(t)]["qps"]) for r in zs if str(t) in r["threads"]]
        pairs = []
        for r in rq:
            if str(t) not in r["threads"]:
                continue
            fq = r["threads"][str(t)]["qps"]
            zq, how = qps_at_recall(pts, r["recall@10"])
            pairs.append({"faiss": f"{r['method']} {r['config']}", "recall@10": r["recall@10"], "faiss_qps": fq,
                          "zenstore_qps": zq, "ratio": (zq / fq) if zq else 0.0, "how": how})
        ivf = [p for p in pairs if "IVF" in p["faiss"]]
        qps[str(t)] = {"pairs": pairs, "min_ratio_ivf": min((p["ratio"] for p in ivf), default=None),
                       "met": all(p["ratio"] >= 1.0 for p in pairs) if pairs else None}
    out["qps_at_equal_recall"] = qps
    return out


# --- output ----------------------------------------------------------------------------------


def table_rows(rows, threads):
    out = []
    for r in rows:
        row = {"method": r["method"], "config": r["config"], "bytes": r.get("bytes_per_vector"),
               "all_in": r.get("bytes_all_in"), "recall": r.get("recall@10")}
        for t in threads:
            tr = r.get("threads", {}).get(str(t))
            noisy = tr is not None and (tr.get("others_cpu_fraction") or 0) > NOISY
            row[f"qps{t}"] = (f"{tr['qps']:,.1f}" + (" *" if noisy else "")) if tr else None
            row[f"p50_{t}"] = tr["p50_ms"] if tr else None
            row[f"p99_{t}"] = tr["p99_ms"] if tr else None
        if r.get("skipped"):
            row["config"] += " (skipped)"
        out.append(row)
    return out


def report(res: dict) -> str:
    th = res["params"]["threads"]
    cols = [("method", "method", ""), ("config", "config", ""), ("bytes", "B/vec", ",.0f"),
            ("all_in", "all-in B/vec", ",.0f"), ("recall", "recall@10", ".4f")]
    for t in th:
        cols += [(f"qps{t}", f"QPS {t}t", ",.1f")]
    for t in th:
        cols += [(f"p50_{t}", f"p50 ms {t}t", ".3f"), (f"p99_{t}", f"p99 ms {t}t", ".3f")]
    p = res["params"]
    lines = [f"search: {p['n']:,} docs x {p['dim']}, {p['nq']} queries, recall@10 vs exact float32 "
             f"(ground truth streamed by tools/gendata.py)",
             f"machine: {_common.machine_line(res['machine'])}", "",
             _common.table(table_rows(res["rows"], th), cols), ""]
    if any((tr.get("others_cpu_fraction") or 0) > NOISY for r in res["rows"] for tr in r.get("threads", {}).values()):
        lines.append(f"* other processes used more than {NOISY:.0%} of the CPUs while this was timed "
                     "(shared machine): treat it as a lower bound")
    for r in res["rows"]:
        if r.get("skipped"):
            lines.append(f"note: {r['method']}: {r['skipped']}")
    tg = res["targets"]
    if "recall_at_equal_bytes" in tg:
        rb = tg["recall_at_equal_bytes"]
        lines.append(f"target: zenstore recall@10 at <= 964 B/vector >= faiss RaBitQ's at the same bytes: "
                     f"zenstore {rb['zenstore_best']['recall@10']:.4f} ({rb['zenstore_best']['config']}, "
                     f"{rb['zenstore_best']['bytes_per_vector']} B) vs {rb['faiss_rabitq_best']['method']} "
                     f"{rb['faiss_rabitq_best']['recall@10']:.4f} ({rb['faiss_rabitq_best']['config']}, "
                     f"{rb['faiss_rabitq_best']['bytes_per_vector']} B) -> {'MET' if rb['met'] else 'MISSED'}")
        for t, q in tg["qps_at_equal_recall"].items():
            lines.append(f"target: zenstore QPS at equal recall >= faiss's ({t} thread{'s' if t != '1' else ''}): "
                         f"{'MET' if q['met'] else 'MISSED'}")
            for pr in q["pairs"]:
                z = f"{pr['zenstore_qps']:,.1f}" if pr["zenstore_qps"] else "-"
                lines.append(f"    {pr['faiss']:<48} recall {pr['recall@10']:.4f}: faiss {pr['faiss_qps']:,.1f} QPS, "
                             f"zenstore {z} QPS -> ratio {pr['ratio']:.2f} ({pr['how']})")
    lines += _search_refine.report_lines(res)
    lines += ["", f"rerun: {res['command']}"]
    return "\n".join(lines)


def plot(res: dict, path: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    th = res["params"]["threads"]
    style = {"zenstore": ("o", "tab:red"), "faiss IndexFlatIP": ("s", "black"),
             "faiss IndexBinaryFlat": ("v", "tab:gray"), "faiss IndexBinaryFlat + float rerank": ("^", "tab:brown"),
             "faiss IndexRaBitQ": ("D", "tab:purple"), "faiss IndexIVFRaBitQ": ("P", "tab:blue"),
             "usearch HNSW (1-bit)": ("X", "tab:green")}
    fig, axes = plt.subplots(1, len(th), figsize=(6.5 * len(th), 6.2), squeeze=False)
    for ax, t in zip(axes[0], th):
        groups: dict = {}
        for i, r in enumerate(res["rows"]):
            tr = r.get("threads", {}).get(str(t))
            if tr and r.get("recall@10") is not None:
                groups.setdefault(r["method"], []).append((tr["qps"], r["recall@10"], i, r))
        for method, pts in groups.items():
            marker, color = style.get(method, ("o", None))
            bpv = pts[0][3]["bytes_per_vector"]
            label = f"{method} ({bpv:,.0f} B/vec)"
            if method == "zenstore":  # every config as a point, the Pareto frontier as the line
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, alpha=0.35, s=22)
                front = _frontier([(p[1], p[0]) for p in pts])
                ax.plot([q for _, q in front], [r for r, _ in front], marker=marker, color=color, label=label + ", frontier")
            else:  # a parameter sweep, joined in sweep order
                pts.sort(key=lambda p: p[2])
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, color=color, label=label)
        ax.set_xscale("log")
        ax.set_xlabel(f"batch QPS, {t} thread{'s' if t > 1 else ''} (log)")
        ax.set_ylabel("recall@10 vs exact float32")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"{res['params']['n']:,} x {res['params']['dim']}, {res['params']['nq']} queries, {t} thread(s)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- main ------------------------------------------------------------------------------------


def _opt_int(text: str):
    return None if text.lower() in ("none", "all", "0") else int(text)


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="documents (default 100000)")
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--profile", choices=sorted(gendata.PROFILES), default="default",
                   help="generator profile (tools/gendata.py PROFILES; default: the benchmarks' own)")
    p.add_argument("--nq", type=int, default=1000, help="queries (default 1000)")
    p.add_argument("--methods", nargs="+", choices=ALL_METHODS + REFINE_METHODS, default=list(ALL_METHODS),
                   help="default: all but the refine-tier methods (zenstore-refine, ivfrabitq-refine, hnsw)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--shortlists", nargs="+", type=int, default=[100, 200, 1000], help="zenstore shortlists")
    p.add_argument("--nprobes", nargs="+", type=_opt_int, default=[None, 64, 32, 16, 8, 4, 2],
                   help="zenstore nprobe values ('none' = all base rows)")
    p.add_argument("--n-base", type=int, default=1024, help="zenstore base rows (default 1024)")
    p.add_argument("--rerank-shortlists", nargs="+", type=int, default=[100, 1000],
                   help="IndexBinaryFlat Hamming shortlist sizes for the float rerank")
    p.add_argument("--nlist", type=int, default=1024, help="IndexIVFRaBitQ lists (capped at train rows/39)")
    p.add_argument("--rabitq-nprobes", nargs="+", type=int, default=[2, 4, 8, 16, 32, 64])
    p.add_argument("--qb", type=int, default=4, help="RaBitQ query bits (default 4)")
    p.add_argument("--faiss-train-sample", type=int, default=40960,
                   help="rows (evenly spaced) that train faiss RaBitQ/IVF (default 40960 = 40 x nlist)")
    p.add_argument("--hnsw-m", type=int, default=16, help="usearch connectivity")
    p.add_argument("--hnsw-ef-add", type=int, default=128)
    p.add_argument("--hnsw-ef-search", nargs="+", type=int, default=[64, 256])
    p.add_argument("--flat-max-n", type=int, default=200_000,
                   help="run IndexFlatIP / keep rerank originals in RAM up to this many docs (default 200000)")
    p.add_argument("--latency-queries", type=int, default=200, help="single queries timed per config")
    p.add_argument("--latency-budget", type=float, default=20.0, help="seconds of single queries per config")
    p.add_argument("--time-budget", type=float, default=60.0,
                   help="seconds per batch timing on thread counts after the first (slow configs time a prefix)")
    p.add_argument("--min-time", type=float, default=5.0,
                   help="repeat a timed batch until this many seconds in total (best run kept)")
    p.add_argument("--max-runs", type=int, default=3, help="at most this many timed batches (best is kept)")
    p.add_argument("--data-dir", default=gendata.DEFAULT_DATA_DIR, help="data/cache directory (default ./data)")
    p.add_argument("--store", default=None, help="zenstore store path (default DATA/search-<spec>-n<N>-b<B>.zen)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the zenstore store even if cached")
    p.add_argument("--chunk", type=int, default=gendata.DEFAULT_CHUNK)
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/search-n<N>-d<D>.json; "
                                                "the plot goes next to it as .png)")
    p.add_argument("--no-plot", action="store_true")
    _search_refine.add_arguments(p)
    return p


def main(argv=None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser().parse_args(argv)
    machine = _common.machine_info()
    spec = gendata.make_spec(args.dim, args.seed, args.profile)
    t0 = time.perf_counter()
    paths = gendata.prepare(spec, args.n, args.nq, k=100, data_dir=args.data_dir, formats=("npy",),
                            chunk=args.chunk, log=log)
    log(f"data ready in {time.perf_counter() - t0:.1f} s (cached files are reused)")
    src = paths["docs"]["npy"]
    Q = np.load(paths["queries"])
    gt, _ = gendata.load_ground_truth(paths["gt"])
    out = args.out or os.path.join(_common.OUT_DIR, f"search-n{args.n}-d{args.dim}.json")
    res = {
        "benchmark": "search",
        "command": _common.rerun_command("benchmarks/search.py", argv),
        "machine": machine,
        "params": {**{k: v for k, v in vars(args).items() if k not in ("store",)},
                   "k": K, "synth_fingerprint": spec.fingerprint(), "ground_truth": paths["gt"],
                   "recall": "recall@10 = |top-10 found ∩ exact top-10| / 10, mean over queries",
                   "qps": "best of up to max_runs timed search_batch calls over all queries (later thread counts: "
                          "a prefix of the queries when a full pass would exceed time_budget)",
                   "latency": "one query per call, sequential; p50/p99 of per-call wall time"},
        "rows": [],
        "json": out,
    }
    rows = res["rows"]
    try:
        if "zenstore" in args.methods:
            rows += bench_zenstore(args, spec, src, Q, gt)
            gc.collect()
            _common.write_json(out, {**res, "partial": True})
        if "zenstore-refine" in args.methods:
            rows += _search_refine.bench_zenstore_refine(args, spec, src, Q, gt, measure, zenstore_store)
            gc.collect()
            _common.write_json(out, {**res, "partial": True})
        peers = [m for m in args.methods if m not in ("zenstore", "zenstore-refine")]
        if peers:
            built = build_peers(args, src)
            bench_peers(args, built, Q, gt, rows)
            if "ivfrabitq-refine" in args.methods:
                refined = _search_refine.build_refine_peers(args, src, built, sample_rows)
                _search_refine.bench_refine_peers(args, refined, Q, gt, measure, rows)
                del refined
            del built
            gc.collect()
            if "hnsw" in args.methods:  # after the others are freed: a second float copy
                _search_refine.bench_hnsw(args, src, Q, gt, measure, rows)
    except BaseException as exc:  # keep what was measured (a long run should not lose it all)
        _common.write_json(out, {**res, "partial": True, "error": repr(exc)})
        log(f"stopped by {exc!r}; the rows measured so far are in {out}")
        raise
    res["targets"] = targets(rows, args.threads)
    res["refine_targets"] = _search_refine.refine_targets(rows, args.threads, qps_at_recall)
    if not args.no_plot:
        res["plot"] = plot(res, os.path.splitext(out)[0] + ".png") if rows else None
    _common.write_json(out, res)
    log("")
    log(report(res))
    log(f"json: {out}" + (f"   plot: {res.get('plot')}" if res.get("plot") else ""))
    return res


if __name__ == "__main__":
    main()
