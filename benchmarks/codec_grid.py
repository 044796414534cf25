#!/usr/bin/env python
"""Codec grid: recall@10 (and NDCG@10 on a real collection) of real zenstore stores over a
grid of codec options, against exact float32 search.

Every point is a store built with the public API (``Store.create(..., n_base=,
scale_blocks=, scale_estimator=, rotation=, seed=)``, one ``add`` of the whole corpus, which
trains the base on it) and searched with ``search_batch`` at each ``--shortlists`` value
(``default`` = the store's own, ``max(200, 10 k)``; full scan, no nprobe). It replaces the
prototype codec study (docs/codec_study.md), which emulated the codec in numpy and cannot
be rerun. What this grid cannot vary: the aux term (the engine always stores it).

Data (first argument):

  synth   generated documents (``zenstore.synth`` through tools/gendata.py, cached under
          ``--data-dir``; the same files as benchmarks/search.py) and the exact top-100
          ground truth; reports recall@10
  PATH    a BEIR-format collection with precomputed embeddings (the layout benchmarks/beir.py
          reads, e.g. /work/shared/data/scifact); reports recall@10 against exact float search
          of the same queries and NDCG@10 (beir.py's definition) with its retention vs float

Grid (``--design``): ``axes`` (default) takes, for each ``--n-base``, the reference options
(the first value of each other list: the store defaults unless reordered) and then every
other value of one option at a time; ``full`` takes every combination. On a corpus too small
for the requested base rows, ``min_rows_per_base`` is lowered so they are really trained
(the effective count is reported). Seeds (``--seeds``) change the rotation and k-means;
several seeds report the mean and the range. The corpus is held in memory (n x dim x 4 B).

    python benchmarks/codec_grid.py synth --n 20000                    # 16 stores of 20k x 7680
    python benchmarks/codec_grid.py /work/shared/data/scifact --seeds 0 1 2 3 4
    python benchmarks/codec_grid.py synth --n 1500 --dim 128 --nq 20 --n-base 1 8 \\
        --data-dir /tmp/zg --work-dir /tmp/zg --out /tmp/zg/grid.json   # seconds

Writes docs/benchmarks/codec-grid-<data>.json (``--out`` to change).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import itertools  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import _common  # noqa: E402
import beir  # noqa: E402  (its BEIR readers and NDCG@10, so both scripts score alike)
from _common import gendata  # noqa: E402
from zenstore import Store, StoreConfig  # noqa: E402

K = 10
OPTION_NAMES = ("scale_blocks", "scale_estimator", "rotation")


@dataclasses.dataclass(frozen=True)
class CodecOptions:
    """One grid point: the codec options a store is created with."""

    n_base: int
    scale_blocks: int
    scale_estimator: str
    rotation: str

    def label(self) -> str:
        return (f"n_base={self.n_base} blocks={self.scale_blocks} {self.scale_estimator} "
                f"rotation={self.rotation}")


def grid(n_bases, scale_blocks, estimators, rotations, design: str = "axes") -> list[CodecOptions]:
    """The grid points, in report order (see the module docstring for the two designs)."""
    values = {"scale_blocks": list(scale_blocks), "scale_estimator": list(estimators), "rotation": list(rotations)}
    if design == "full":
        return [CodecOptions(nb, *combo) for nb in n_bases for combo in itertools.product(*values.values())]
    if design != "axes":
        raise ValueError(f"design must be 'axes' or 'full', got {design!r}")
    points = []
    for nb in n_bases:
        ref = CodecOptions(nb, *(v[0] for v in values.values()))
        points.append(ref)
        for name in OPTION_NAMES:
            points += [dataclasses.replace(ref, **{name: v}) for v in values[name][1:]]
    return points


# --- data ------------------------------------------------------------------------------------


def load_synth(args) -> dict:
    spec = gendata.make_spec(args.dim, args.data_seed)
    paths = gendata.prepare(spec, args.n, args.nq, k=100, data_dir=args.data_dir, formats=("npy",))
    truth, _ = gendata.load_ground_truth(paths["gt"])
    return {"name": f"synth-n{args.n}-d{args.dim}", "docs": np.load(paths["docs"]["npy"]).astype(np.float32),
            "queries": np.load(paths["queries"]).astype(np.float32), "truth": truth[:, :K],
            "source": {"generator": "zenstore.synth via tools/gendata.py", "spec": dataclasses.asdict(spec),
                       "docs": paths["docs"]["npy"]}}


def load_collection(args) -> dict:
    """A BEIR collection: the qrels' queries, their exact float top-10 and float NDCG@10."""
    embs = args.embeddings or sorted(d for d in os.listdir(args.data) if d.startswith("emb-"))
    if len(embs) != 1:
        raise SystemExit(f"{args.data}: pick one embedding directory with --embeddings (found {embs})")
    emb = beir.load_embeddings(args.data, embs[0])
    qrels = beir.load_qrels(os.path.join(args.data, args.qrels))
    qpos = {q: i for i, q in enumerate(emb["qids"])}
    use = [q for q in qrels if q in qpos]
    queries = np.ascontiguousarray(emb["Q"][[qpos[q] for q in use]])
    scores = queries @ emb["D"].T  # the embeddings are unit rows: cosine
    order = np.argsort(-scores, axis=1, kind="stable")
    data = {"name": f"{os.path.basename(os.path.normpath(args.data))}-{embs[0]}", "docs": emb["D"],
            "queries": queries, "truth": order[:, :K], "dids": emb["dids"], "qids": use, "qrels": qrels,
            "source": {"collection": os.path.abspath(args.data), "embeddings": embs[0], "qrels": args.qrels}}
    data["float_ndcg"] = ndcg(data, order[:, :K + 1], args.keep_identical_ids)
    return data


def ndcg(data: dict, rows: np.ndarray, keep_identical: bool) -> float:
    ranked = [[data["dids"][j] for j in row if j >= 0] for row in rows]
    return beir.evaluate(ranked, data["qids"], data["qrels"], keep_identical)["ndcg@10"]


# --- one grid point --------------------------------------------------------------------------


def store_options(point: CodecOptions, n_docs: int, seed: int) -> dict:
    opts = dataclasses.asdict(point) | {"seed": seed}
    default_min = StoreConfig().min_rows_per_base
    if n_docs // point.n_base < default_min:  # a small corpus: train the requested rows anyway
        opts["min_rows_per_base"] = max(1, n_docs // point.n_base)
    return opts


def measure(point: CodecOptions, seed: int, data: dict, args) -> dict:
    docs, queries = data["docs"], data["queries"]
    work = tempfile.mkdtemp(prefix="codec-grid-", dir=args.work_dir)
    row = {**dataclasses.asdict(point), "seed": seed, "recall@10": {}, "ndcg@10": {}}
    try:
        t0 = time.perf_counter()
        with Store.create(os.path.join(work, "s.zen"), dim=docs.shape[1], metric="cosine",
                          **store_options(point, len(docs), seed)) as store:
            store.add(np.arange(len(docs)), docs)
            row["build_s"] = time.perf_counter() - t0
            st = store.stats()
            row |= {"n_base_effective": st["n_base"], "bytes_per_vector": st["bytes_per_vector"],
                    "base_bytes_per_doc": st["bytes_on_disk"]["base"] / st["count"]}
            extra = 0 if "qrels" not in data or args.keep_identical_ids else 1  # the query's own id
            for sl in args.shortlists:
                ids, _ = store.search_batch(queries, k=K + extra, shortlist=sl, nprobe="all")
                key = "default" if sl is None else str(sl)
                row["recall@10"][key] = _common.recall_at(ids, data["truth"], K)
                if "qrels" in data:
                    row["ndcg@10"][key] = ndcg(data, ids, args.keep_identical_ids)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return row


def summarize(rows: list[dict], points: list[CodecOptions], float_ndcg: float | None) -> list[dict]:
    """One line per grid point: mean and range over the seeds."""
    out = []
    for point in points:
        mine = [r for r in rows if CodecOptions(*(r[f] for f in ("n_base", *OPTION_NAMES))) == point]
        line = {**dataclasses.asdict(point), "seeds": len(mine), "n_base_effective": mine[0]["n_base_effective"],
                "bytes_per_vector": mine[0]["bytes_per_vector"], "base_bytes_per_doc": mine[0]["base_bytes_per_doc"],
                "build_s_mean": float(np.mean([r["build_s"] for r in mine]))}
        for metric in ("recall@10", "ndcg@10"):
            for key in mine[0][metric]:
                v = np.array([r[metric][key] for r in mine])
                line[f"{metric} {key}"] = float(v.mean())
                line[f"{metric} {key} range"] = [float(v.min()), float(v.max())]
                if metric == "ndcg@10" and float_ndcg:
                    line[f"retention {key}"] = float(v.mean() / float_ndcg)
                    line[f"retention {key} range"] = [float(v.min() / float_ndcg), float(v.max() / float_ndcg)]
        out.append(line)
    return out


# --- the benchmark ---------------------------------------------------------------------------


def report(res: dict) -> str:
    p = res["params"]
    lines = [f"codec grid: {res['data']} ({res['n_docs']:,} docs x {res['dim']}, {res['n_queries']} queries), "
             f"recall@10 vs exact float32, {p['design']} design, seeds {p['seeds']}",
             f"machine: {_common.machine_line(res['machine'])}"]
    if res.get("float_ndcg") is not None:
        lines.append(f"exact float32 NDCG@10: {res['float_ndcg']:.4f}")
    keys = ["default" if s is None else str(s) for s in p["shortlists"]]
    several = len(p["seeds"]) > 1

    def fmt(line, name, spec):
        v = line.get(name)
        if v is None:
            return None
        lo, hi = line[name + " range"]
        return format(v, spec) + (f" [{format(lo, spec)}-{format(hi, spec)}]" if several else "")

    cols = [("n_base", "n_base", "d"), ("n_base_effective", "rows trained", "d"), ("scale_blocks", "blocks", "d"),
            ("scale_estimator", "estimator", ""), ("rotation", "rotation", ""), ("bytes_per_vector", "B/vec", "d"),
            ("base_bytes_per_doc", "base file B/doc", ".1f")]
    for key in keys:
        cols.append((f"r {key}", f"recall@10 (shortlist {key})", ""))
        if res.get("float_ndcg") is not None:
            cols.append((f"t {key}", f"NDCG@10 retention (shortlist {key})", ""))
    shown = []
    for line in res["summary"]:
        s = dict(line)
        for key in keys:
            s[f"r {key}"] = fmt(line, f"recall@10 {key}", ".4f")
            s[f"t {key}"] = fmt(line, f"retention {key}", ".2%")
        shown.append(s)
    lines += ["", _common.table(shown, cols), "", f"rerun: {res['command']}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    ref = StoreConfig()
    p.add_argument("data", help="'synth' or a BEIR collection directory")
    p.add_argument("--n-base", nargs="+", type=int, default=[1, 64, 256, 1024], help="base rows requested")
    p.add_argument("--scale-blocks", nargs="+", type=int, default=[ref.scale_blocks, 2],
                   help="fp16 scale blocks per vector (first = reference)")
    p.add_argument("--scale-estimators", nargs="+", default=[ref.scale_estimator, "l2"],
                   help="first = reference")
    p.add_argument("--rotations", nargs="+", default=[ref.rotation, "none"], help="first = reference")
    p.add_argument("--design", choices=("axes", "full"), default="axes")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="store seeds (rotation, k-means)")
    p.add_argument("--shortlists", nargs="+", type=lambda s: None if s == "default" else int(s),
                   default=[None, 1000], help="search shortlists; 'default' = the store's own")
    g = p.add_argument_group("synth")
    g.add_argument("--n", type=int, default=20000, help="documents (default 20000)")
    g.add_argument("--dim", type=int, default=7680)
    g.add_argument("--nq", type=int, default=1000, help="queries (default 1000, as benchmarks/search.py)")
    g.add_argument("--data-seed", type=int, default=0, help="generator seed")
    g.add_argument("--data-dir", default=gendata.DEFAULT_DATA_DIR, help="data/cache directory (default ./data)")
    g = p.add_argument_group("BEIR collection")
    g.add_argument("--embeddings", nargs="+", default=None, help="embedding subdirectory (default: the only emb-*)")
    g.add_argument("--qrels", default="qrels/test.tsv", help="qrels file inside the collection")
    g.add_argument("--keep-identical-ids", action="store_true",
                   help="do not skip a retrieved doc whose id equals the query id (Cranfield)")
    p.add_argument("--work-dir", default=None, help="where temporary stores go (default: system temp)")
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/codec-grid-<data>.json)")
    return p


def main(argv=None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser().parse_args(argv)
    threads = _common.set_threads(os.cpu_count() or 1)
    machine = _common.machine_info()
    data = load_synth(args) if args.data == "synth" else load_collection(args)
    points = grid(args.n_base, args.scale_blocks, args.scale_estimators, args.rotations, args.design)
    n_docs, dim = data["docs"].shape
    print(f"codec grid: {len(points)} option sets x {len(args.seeds)} seed(s) on {data['name']} "
          f"({n_docs:,} x {dim})", flush=True)
    rows = []
    for point in points:
        for seed in args.seeds:
            rows.append(measure(point, seed, data, args))
            print(f"  {point.label()} seed={seed}: built in {rows[-1]['build_s']:.1f} s, recall@10 "
                  + ", ".join(f"{k} {v:.4f}" for k, v in rows[-1]["recall@10"].items()), flush=True)
    res = {"benchmark": "codec_grid", "data": data["name"], "source": data["source"], "n_docs": n_docs, "dim": dim,
           "n_queries": len(data["queries"]), "float_ndcg": data.get("float_ndcg"),
           "command": _common.rerun_command("benchmarks/codec_grid.py", argv), "machine": machine,
           "threads": threads, "params": {k: v for k, v in vars(args).items() if k not in ("work_dir", "out")},
           "rows": rows, "summary": summarize(rows, points, data.get("float_ndcg"))}
    out = args.out or os.path.join(_common.OUT_DIR, f"codec-grid-{data['name']}.json")
    _common.publish(res, out, report)
    return res


if __name__ == "__main__":
    main()
