#!/usr/bin/env python
"""Storage benchmark: bytes on disk per document, peak memory and speed of a bulk load.

Generates N documents (``tools/gendata.py``, streamed to ``data/synth-*/docs-n<N>.npy``;
not timed), then loads them through the real ingest path,

    zenstore ingest STORE docs-n<N>.npy --dim D --quiet --json [--n-base K ...]

in a child process, so the peak RSS (``wait4`` of that child) and the rows/s are the
CLI's own. Then splits the store's bytes (``Store.stats()["bytes_on_disk"]``) per
document and checks the targets:

  * <= 964 bytes of vector data per document (codes + scales + aux);
  * <= 940 MiB for the whole store per million documents (int64 ids, no payloads).

    python benchmarks/storage.py                         # 1,000,000 x 7680 (30 GB input, ~1 GB store)
    python benchmarks/storage.py --n 20000               # quick
    python benchmarks/storage.py --n 2000 --dim 256 --data-dir /tmp/zb --out /tmp/zb/storage.json

``--via api`` loads with the Python API instead (``store.train(sample)`` then
``store.add(ids, batch)`` per batch, also in a child process), for comparison.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402
from _common import gendata  # noqa: E402

from zenstore.merge import simulate  # noqa: E402

MIB = 2**20
TARGET_VECTOR_BYTES = 964
TARGET_MIB_PER_MILLION = 940


# --- the two load paths (each run in a child process) ------------------------------------------


def cli_command(store: str, inputs: list[str], args) -> list[str]:
    cmd = [sys.executable, "-m", "zenstore", "ingest", store, *inputs, "--dim", str(args.dim),
           "--metric", args.metric, "--batch-size", str(args.batch_size), "--quiet", "--json"]
    if args.n_base is not None:
        cmd += ["--n-base", str(args.n_base)]
    if args.train_sample is not None:
        cmd += ["--train-sample", str(args.train_sample)]
    return cmd


def api_command(store: str, inputs: list[str], args) -> list[str]:
    cmd = [sys.executable, os.path.abspath(__file__), "_api_ingest", store, *inputs,
           "--dim", str(args.dim), "--metric", args.metric, "--batch-size", str(args.batch_size)]
    if args.n_base is not None:
        cmd += ["--n-base", str(args.n_base)]
    if args.train_sample is not None:
        cmd += ["--train-sample", str(args.train_sample)]
    return cmd


def _api_ingest(argv: list[str]) -> int:
    """Child: the same load through the Python API (train on an evenly spaced sample, then
    add batches with row-number ids). Prints a JSON line like ``zenstore ingest --json``."""
    import numpy as np

    import zenstore

    p = argparse.ArgumentParser(prog="storage.py _api_ingest")
    p.add_argument("store")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--metric", default="cosine")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--n-base", type=int, default=None)
    p.add_argument("--train-sample", type=int, default=None)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    opts = {} if a.n_base is None else {"n_base": a.n_base}
    added = 0
    with zenstore.Store.create(a.store, dim=a.dim, metric=a.metric, **opts) as store:
        cfg = store.config
        n_sample = a.train_sample or min(cfg.train_sample, cfg.n_base * cfg.min_rows_per_base)
        n0 = gendata.npy_shape(a.inputs[0])[0]
        rows = np.unique(np.linspace(0, n0 - 1, num=min(n_sample, n0)).astype(np.int64))
        x0 = np.load(a.inputs[0], mmap_mode="r")
        store.train(np.ascontiguousarray(x0[rows], dtype=np.float32))
        del x0
        for path in a.inputs:
            for first, block in gendata.iter_npy(path, a.batch_size):
                store.add(np.arange(added, added + len(block)), block)
                added += len(block)
        stats = store.stats()
    seconds = time.perf_counter() - t0
    print(json.dumps({"rows_added": added, "seconds": round(seconds, 2),
                      "rows_per_second": round(added / seconds, 1), "store_count": stats["count"],
                      "bytes_per_vector": stats["bytes_per_vector"]}))
    return 0


# --- the benchmark -----------------------------------------------------------------------------


def dir_bytes(path: str) -> dict:
    files = {}
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, path)] = os.path.getsize(full)
    return files


def breakdown(stats: dict) -> dict:
    """Bytes per part (whole store); the parts add up to bytes_on_disk['total']."""
    d = stats["bytes_on_disk"]
    in_catalog = d["ids"] + d["payloads"] + d["tombstones"]
    return {
        "codes": d["codes"],
        "scales+aux": d["scales"] + d["aux"],
        "segment headers": d["segment_headers"],
        "base matrix": d["base"],
        "id index (catalog ids db)": d["ids"],
        "payloads (catalog)": d["payloads"],
        "tombstones (catalog)": d["tombstones"],
        "catalog (rest of catalog.mdb)": d["catalog_file"] - in_catalog,
        "total": d["total"],
    }


def run(args, argv=None) -> dict:
    machine = _common.machine_info()
    spec = gendata.make_spec(args.dim, args.seed)
    t0 = time.perf_counter()
    paths = gendata.prepare(spec, args.n, 0, data_dir=args.data_dir, formats=("npy",), chunk=args.chunk)
    gen_seconds = time.perf_counter() - t0
    src = paths["docs"]["npy"]
    store = args.store or os.path.join(args.data_dir, f"storage-{spec.fingerprint()}-n{args.n}.zen")
    if os.path.exists(store):
        shutil.rmtree(store)
    for leftover in (store + ".rejected.jsonl",):
        if os.path.exists(leftover):
            os.unlink(leftover)
    cmd = (cli_command if args.via == "cli" else api_command)(store, [src], args)
    print("loading: " + " ".join(cmd), flush=True)
    res = _common.run_measured(cmd)
    if res["returncode"] != 0:
        raise SystemExit(f"ingest failed (exit {res['returncode']}):\n{res['stderr']}")
    summary = json.loads(res["stdout"].strip().splitlines()[-1])

    import zenstore

    with zenstore.Store.open(store, readonly=True) as s:
        stats = s.stats()
        problems = s.verify() if args.verify else None
    files = dir_bytes(store)
    n = stats["count"]
    parts = breakdown(stats)
    per_doc = {k: v / n for k, v in parts.items()}
    vector_bytes = (stats["bytes_on_disk"]["codes"] + stats["bytes_on_disk"]["scales"]
                    + stats["bytes_on_disk"]["aux"]) / n
    total = parts["total"]
    mib_per_million = total / n * 1e6 / MIB
    base = parts["base matrix"]
    # the base matrix is a fixed cost: at 1M docs it has the requested rows (n_base rows are
    # capped by training rows / 24 on small inputs), so scale it to that row count
    n_base_1m = min(args.n_base or 1024, 1_000_000 // 24)
    base_1m = base * n_base_1m / max(stats["n_base"], 1)
    fixed = parts["catalog (rest of catalog.mdb)"]  # LMDB meta/branch pages: not per document
    projected = ((total - base - fixed) / n * 1e6 + base_1m + fixed) / MIB
    measured_at_million = n == 1_000_000
    applies = args.dim == 7680
    amp_rows = args.amplification_rows or args.n
    fanout = stats["config"]["segment_fanout"]
    amplification = {}
    for label, batch in (("default batches", args.batch_size), ("one-row adds", 1)):
        t = time.perf_counter()
        a = simulate((min(batch, amp_rows - i) for i in range(0, amp_rows, batch)), fanout)
        amplification[label] = {"batch": batch, **dataclasses.asdict(a),
                                "simulated_seconds": round(time.perf_counter() - t, 1)}
    result = {
        "benchmark": "storage",
        "command": _common.rerun_command("benchmarks/storage.py", argv),
        "machine": machine,
        "params": {"n": args.n, "dim": args.dim, "metric": args.metric, "seed": args.seed,
                   "n_base_requested": args.n_base, "batch_size": args.batch_size,
                   "train_sample": args.train_sample, "via": args.via, "id_type": stats["id_type"],
                   "payloads": False, "synth_fingerprint": spec.fingerprint()},
        "load_command": " ".join(cmd),
        "input_file": src,
        "input_bytes": os.path.getsize(src),
        "generate_seconds_not_timed": round(gen_seconds, 1),
        "ingest": {
            "rows": summary["rows_added"],
            "seconds_cli": summary["seconds"],
            "rows_per_second_cli": summary["rows_per_second"],
            "wall_seconds_process": round(res["wall_s"], 2),
            "rows_per_second_wall": round(summary["rows_added"] / res["wall_s"], 1),
            "peak_rss_bytes": res["peak_rss_bytes"],
            "peak_rss_mib": round(res["peak_rss_bytes"] / MIB, 1),
            "cpu_user_s": round(res["user_s"], 1),
            "cpu_sys_s": round(res["sys_s"], 1),
        },
        "merge_amplification": {"fanout": fanout, "how": "zenstore.merge.simulate: the writer's own "
                                "policy function (plan_merge) run over add-only batches, every row a "
                                "merge writes counted", **amplification},
        "store": {"path": store, "count": n, "segments": stats["segments"], "n_base": stats["n_base"],
                  "bytes_per_vector_stats": stats["bytes_per_vector"],
                  "compression_ratio_vector": stats["compression_ratio"],
                  "compression_ratio_all_in": args.dim * 4 / (total / n),
                  "bytes": parts, "bytes_per_doc": per_doc,
                  "files_total_bytes": sum(files.values()), "files": files,
                  "verify_problems": problems},
        "targets": {
            "applies": applies,
            "vector_bytes_per_doc": {"value": vector_bytes, "target": TARGET_VECTOR_BYTES,
                                     "met": vector_bytes <= TARGET_VECTOR_BYTES if applies else None},
            "mib_per_million_docs": {
                "value": mib_per_million if measured_at_million else projected,
                "measured_at_n": mib_per_million,
                "how": "measured at 1,000,000 docs" if measured_at_million else
                       f"projected from {n:,} docs (approximate): codes, scales, aux, segment headers and "
                       f"ids scaled per doc to 1M, the base scaled from {stats['n_base']} to {n_base_1m} rows, "
                       f"the rest of the catalog kept; run with --n 1000000 to measure",
                "target": TARGET_MIB_PER_MILLION,
                "met": ((mib_per_million if measured_at_million else projected) <= TARGET_MIB_PER_MILLION)
                       if applies else None,
                "projected": not measured_at_million},
        },
    }
    return result


def _verdict(met) -> str:
    return "n/a" if met is None else ("MET" if met else "MISSED")


def report(r: dict) -> str:
    st, ing, t = r["store"], r["ingest"], r["targets"]
    n = st["count"]
    rows = [{"part": k, "bytes": v, "per_doc": v / n, "mib_per_million": v / n * 1e6 / MIB}
            for k, v in st["bytes"].items()]
    lines = [
        f"zenstore storage: {n:,} docs x {r['params']['dim']} ({r['params']['metric']}, "
        f"{st['n_base']} base rows, {st['segments']} segments, int64 ids, no payloads)",
        f"machine: {_common.machine_line(r['machine'])}",
        "",
        _common.table(rows, [("part", "part", ""), ("bytes", "bytes", ",d"),
                             ("per_doc", "bytes/doc", ",.2f"), ("mib_per_million", "MiB per 1M docs", ",.1f")]),
        "",
        f"files in the store directory: {st['files_total_bytes']:,} bytes (incl. lock files)",
        f"compression vs float32: {st['compression_ratio_vector']:.2f}x (vector data), "
        f"{st['compression_ratio_all_in']:.2f}x (whole store)",
        f"ingest ({r['params']['via']}): {ing['rows']:,} rows in {ing['seconds_cli']:.1f} s = "
        f"{ing['rows_per_second_cli']:,.0f} rows/s (incl. training; process wall {ing['wall_seconds_process']:.1f} s "
        f"= {ing['rows_per_second_wall']:,.0f} rows/s); peak RSS {ing['peak_rss_mib']:,.0f} MiB "
        f"(input {r['input_bytes'] / MIB:,.0f} MiB)",
        "",
        f"targets (for 7680-d documents{'' if t['applies'] else '; NOT APPLICABLE at this dim'}):",
        f"target: vector data <= {t['vector_bytes_per_doc']['target']} B/doc: "
        f"{t['vector_bytes_per_doc']['value']:.2f} -> {_verdict(t['vector_bytes_per_doc']['met'])}",
        f"target: whole store <= {t['mib_per_million_docs']['target']} MiB per 1M docs: "
        f"{t['mib_per_million_docs']['value']:.1f}"
        f"{' (PROJECTED: ' + t['mib_per_million_docs']['how'] + ')' if t['mib_per_million_docs']['projected'] else ''}"
        f" -> {_verdict(t['mib_per_million_docs']['met'])}",
    ]
    amp = r["merge_amplification"]
    lines += ["", f"merge write amplification (size-tiered policy, fanout {amp['fanout']}, add-only):"]
    for label in ("default batches", "one-row adds"):
        a = amp[label]
        lines.append(f"  {a['rows']:,} rows in {label} of {a['batch']:,}: rewrites per row max "
                     f"{a['max_rewrites']} (bound {a['bound']}), mean {a['mean_rewrites']:.2f}; at most "
                     f"{a['most_segments']} segments, {a['final_segments']} at the end")
    if st["verify_problems"]:
        lines.append(f"verify found problems: {st['verify_problems']}")
    lines += ["", f"rerun: {r['command']}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="documents (default 1000000)")
    p.add_argument("--dim", type=int, default=7680, help="dimension (default 7680)")
    p.add_argument("--metric", choices=("cosine", "ip", "l2"), default="cosine")
    p.add_argument("--seed", type=int, default=0, help="generator seed")
    p.add_argument("--n-base", type=int, default=None, help="base rows (default: zenstore's, 1024)")
    p.add_argument("--train-sample", type=int, default=None, help="training rows (default: zenstore's)")
    p.add_argument("--batch-size", type=int, default=8192, help="ingest batch size (default 8192)")
    p.add_argument("--via", choices=("cli", "api"), default="cli",
                   help="cli: `zenstore ingest` (default); api: Store.train + Store.add batches")
    p.add_argument("--data-dir", default=gendata.DEFAULT_DATA_DIR, help="data/cache directory (default ./data)")
    p.add_argument("--store", default=None, help="store path (default DATA/storage-<spec>-n<N>.zen; replaced)")
    p.add_argument("--keep", action="store_true", help="keep the store afterwards (default: delete it)")
    p.add_argument("--verify", action="store_true", help="also run Store.verify() on the result")
    p.add_argument("--amplification-rows", type=int, default=None,
                   help="rows of the merge write-amplification simulation (default: --n)")
    p.add_argument("--chunk", type=int, default=gendata.DEFAULT_CHUNK, help="generation chunk rows")
    p.add_argument("--out", default=None,
                   help="JSON result path (default docs/benchmarks/storage-n<N>-d<D>.json)")
    return p


def main(argv=None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_api_ingest":
        raise SystemExit(_api_ingest(argv[1:]))
    args = build_parser().parse_args(argv)
    result = run(args, argv)
    out = args.out or os.path.join(_common.OUT_DIR, f"storage-n{args.n}-d{args.dim}.json")
    _common.publish(result, out, report)
    if not args.keep:
        shutil.rmtree(result["store"]["path"], ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
