#!/usr/bin/env python
"""Where a bulk load spends its time: ``zenstore ingest`` with a per-stage profile.

Runs the CLI in-process (``zenstore.cli.main(["ingest", ...])``, the code path of the
``zenstore ingest`` command) with timers wrapped around the functions that do each stage,
and reports wall seconds per stage, *exclusive* of the stages nested in it (assignment is
inside encoding, which is inside a batch commit), so the stages add up to the load's wall
time ("other" is the rest: checks, Python glue). Stages run on a helper thread (the
read-ahead reader) are reported on their own rows: they overlap the main thread's work.

    python benchmarks/ingest_profile.py --n 200000                    # page-cached input
    python benchmarks/ingest_profile.py --n 200000 --cold             # input evicted from the page cache first
    python benchmarks/ingest_profile.py --n 200000 --vs-faiss 50000   # + Store.add vs IndexIVFRaBitQ.add

``--cold`` drops the input file's pages from the page cache (``posix_fadvise DONTNEED``,
this file only) and measures the disk's sequential read rate on it first (``dd`` of the
file to /dev/null, evicted again afterwards), so the load's rate can be compared with the
disk's in the same run. ``--vs-faiss N`` then times ``Store.add`` of N rows already in
memory into a trained store against faiss ``IndexIVFRaBitQ.add`` of the same rows (nlist =
the store's base rows, trained on the same sample), both with every thread.

The load runs in a child process so its peak RSS (``wait4``) is its own.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba/faiss load

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402

import _common  # noqa: E402
from _common import gendata  # noqa: E402

MIB = 2**20


# --- the profiler (child side) ---------------------------------------------------------------


class StageTimer:
    """Exclusive wall time per stage and thread: a stage's time minus that of the stages
    that ran nested inside it on the same thread; also the process's CPU time (all
    threads) over the same spans, which other processes on a shared machine disturb less."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.lock = threading.Lock()
        self.seconds: dict = defaultdict(float)  # (thread kind, stage) -> exclusive seconds
        self.cpu: dict = defaultdict(float)  # process CPU seconds (all threads) in the stage
        self.calls: dict = defaultdict(int)

    def _enter(self):
        stack = getattr(self.local, "stack", None)
        if stack is None:
            stack = self.local.stack = []
        stack.append([0.0, 0.0])  # wall and CPU time spent in nested stages
        return time.perf_counter(), time.process_time()

    def _leave(self, stage: str, start) -> None:
        wall, cpu = time.perf_counter() - start[0], time.process_time() - start[1]
        stack = self.local.stack
        nested = stack.pop()
        if stack:
            stack[-1][0] += wall
            stack[-1][1] += cpu
        kind = "main" if threading.current_thread() is threading.main_thread() else "helper"
        with self.lock:
            self.seconds[(kind, stage)] += wall - nested[0]
            self.cpu[(kind, stage)] += cpu - nested[1]
            self.calls[(kind, stage)] += 1

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            start = self._enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._leave(stage, start)

        timed.__wrapped__ = fn
        return timed

    def wrap_cm(self, stage: str, cm_factory):
        """Time the with-block of a context manager (minus nested stages)."""
        @contextlib.contextmanager
        def timed(*args, **kwargs):
            start = self._enter()
            try:
                with cm_factory(*args, **kwargs) as value:
                    yield value
            finally:
                self._leave(stage, start)

        return timed


def _patch(timer: StageTimer, owner, name: str, stage: str) -> None:
    if hasattr(owner, name):
        setattr(owner, name, timer.wrap(stage, getattr(owner, name)))


def install(timer: StageTimer) -> None:
    """Wrap the functions that carry out each stage (wherever the caller looks them up)."""
    from zenstore import catalog, codec, files, ingest, merge, readers, segment, train, writer

    _patch(timer, readers.MatrixReader, "_read", "read rows (file -> float32)")
    _patch(timer, readers.MatrixReader, "sample", "training sample (read)")
    _patch(timer, ingest, "_refused_rows", "validate rows + duplicate ids")
    _patch(timer, train, "train_base", "k-means")
    _patch(timer, writer, "train_base", "k-means")
    _patch(timer, codec.Codec, "prepare", "rotate (+ normalise)")
    _patch(timer, codec.Codec, "assign", "assign base rows")
    _patch(timer, codec, "encode_residuals", "encode residual signs")
    _patch(timer, codec.Codec, "encode", "encode (scales, aux, concat)")
    for mod in (writer, segment, merge):
        _patch(timer, mod, "order_rows", "sort rows by (group, id)")
    _patch(timer, writer, "write_segment", "segment write (excl. fsync)")
    _patch(timer, writer, "merge_segments", "merges (excl. fsync)")
    _patch(timer, writer, "load_segment", "map the new segment")
    _patch(timer, writer.records, "put_id_column", "id column + catalog puts")
    _patch(timer, writer.records, "put_checkpoint", "id column + catalog puts")
    _patch(timer, writer.records, "put_manifest", "id column + catalog puts")
    _patch(timer, writer.Writer, "_calibrate", "calibrate the default search")
    catalog.Catalog.write = timer.wrap_cm("catalog transaction + commit (LMDB sync)", catalog.Catalog.write)
    files.os.fsync = timer.wrap("fsync (data files, dirs)", files.os.fsync)
    # a zenstore that has them: the read-ahead thread and the batch pipeline
    for mod in (readers, ingest):
        for fname in ("_read_ahead_next",):
            _patch(timer, mod, fname, "read-ahead wait")


def child_main(argv: list[str]) -> int:
    """Child: run ``zenstore ingest`` in-process under the profiler; print a JSON line."""
    timer = StageTimer()
    install(timer)
    from zenstore import cli

    out_fd = os.dup(1)
    t0 = time.perf_counter()
    time.process_time()
    with tempfile.TemporaryFile("w+") as captured:
        os.dup2(captured.fileno(), 1)
        try:
            rc = cli.main(["ingest", *argv])
        finally:
            sys.stdout.flush()
            os.dup2(out_fd, 1)
        wall = time.perf_counter() - t0
        captured.seek(0)
        summary = captured.read().strip().splitlines()
    stages = [{"thread": k, "stage": s, "seconds": v, "cpu_seconds": timer.cpu[(k, s)], "calls": timer.calls[(k, s)]}
              for (k, s), v in timer.seconds.items()]
    print(json.dumps({"returncode": rc, "wall": wall, "cpu": time.process_time(), "stages": stages,
                      "summary": json.loads(summary[-1]) if summary else None}))
    return 0


# --- the page cache and the disk -------------------------------------------------------------


def evict(path: str) -> None:
    """Drop ``path``'s pages from the page cache (this file only)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def cached_fraction(path: str) -> float | None:
    """Share of ``path``'s pages in the page cache (util-linux ``fincore``), None if unknown."""
    try:
        proc = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES,SIZE", path],
                              capture_output=True, text=True, check=True)
        res, size = (int(v) for v in proc.stdout.split()[:2])
    except (OSError, ValueError, subprocess.CalledProcessError):
        return None
    return res / size if size else None


def dd_rate(path: str) -> dict:
    """Sequential read rate of ``path`` from disk: evict it, ``dd`` it to /dev/null."""
    evict(path)
    t0 = time.perf_counter()
    proc = subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=8M"], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    evict(path)
    size = os.path.getsize(path)
    m = re.search(r"copied, ([\d.]+) s, ([\d.,]+ \w+/s)", proc.stderr)
    return {"bytes": size, "seconds": round(seconds, 2), "mb_per_s": round(size / seconds / 1e6, 1),
            "dd_says": m.group(2) if m else proc.stderr.strip().splitlines()[-1:]}


# --- Store.add vs faiss IndexIVFRaBitQ.add ---------------------------------------------------


def vs_faiss(src: str, n_rows: int, n_base: int, batch: int) -> dict:
    """Seconds to add the same in-memory rows to a trained store and to a trained faiss
    IndexIVFRaBitQ (nlist = n_base, the store's base rows as its centroids)."""
    import faiss
    import numpy as np

    import zenstore

    n_total = gendata.npy_shape(src)[0]
    x = np.load(src, mmap_mode="r")
    rows = np.ascontiguousarray(x[:n_rows], dtype=np.float32)
    pick = np.unique(np.linspace(0, n_total - 1, num=min(n_total, n_base * 24)).astype(np.int64))
    sample = np.ascontiguousarray(x[pick], dtype=np.float32)
    del x
    out: dict = {"rows": len(rows), "batch": batch, "nlist": n_base}
    with tempfile.TemporaryDirectory(prefix="zvsf-", dir=os.path.dirname(os.path.abspath(src))) as tmp:
        with zenstore.Store.create(os.path.join(tmp, "s.zen"), dim=rows.shape[1], n_base=n_base) as store:
            store.train(sample)
            store.add(np.arange(n_total, n_total + 1000), rows[:1000])  # compile / warm caches
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(rows), batch):
                store.add(np.arange(i, min(i + batch, len(rows))), rows[i : i + batch])
            out["zenstore_add_seconds"] = time.perf_counter() - t0
            out["zenstore_add_cpu_seconds"] = time.process_time() - c0
            base = store.base()
    # faiss gets the store's base rows (back in the input space) as its coarse centroids, so
    # it skips a second k-means; only its add is compared
    centroids = np.ascontiguousarray(base.rotation.invert(base.matrix.astype(np.float32)))
    quantizer = faiss.IndexFlatIP(rows.shape[1])
    quantizer.add(centroids)
    idx = faiss.IndexIVFRaBitQ(quantizer, rows.shape[1], len(centroids), faiss.METRIC_INNER_PRODUCT)
    t0 = time.perf_counter()
    idx.train(sample)
    out["faiss_train_seconds"] = time.perf_counter() - t0
    idx.add(rows[:1000])
    idx.reset()
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(rows), batch):
        idx.add(rows[i : i + batch])
    out["faiss_add_seconds"] = time.perf_counter() - t0
    out["faiss_add_cpu_seconds"] = time.process_time() - c0
    out["zenstore_rows_per_s"] = len(rows) / out["zenstore_add_seconds"]
    out["faiss_rows_per_s"] = len(rows) / out["faiss_add_seconds"]
    out["ratio"] = out["faiss_add_seconds"] / out["zenstore_add_seconds"]
    out["cpu_ratio"] = out["faiss_add_cpu_seconds"] / out["zenstore_add_cpu_seconds"]
    return out


# --- the benchmark -----------------------------------------------------------------------------


def warm_up(src: str, args) -> None:
    """Load 3,000 rows of the input once in a child, so the profiled load finds numba's
    kernel cache warm (a cold cache costs ~a minute of compiling: benchmarks/jit.py)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="zwarm-") as tmp:
        part = os.path.join(tmp, "part.npy")
        np.save(part, np.load(src, mmap_mode="r")[:3000])
        proc = subprocess.run([sys.executable, "-m", "zenstore", "ingest", os.path.join(tmp, "w.zen"), part,
                               "--dim", str(args.dim), "--quiet"], env=_env.apply(dict(os.environ)),
                              capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"warm-up ingest failed:\n{proc.stderr}")


def run(args, argv) -> dict:
    spec = gendata.make_spec(args.dim, args.seed)
    paths = gendata.prepare(spec, args.n, 0, data_dir=args.data_dir, formats=("npy",), chunk=args.chunk)
    src = paths["docs"]["npy"]
    store = args.store or os.path.join(args.data_dir, f"profile-{spec.fingerprint()}-n{args.n}.zen")
    if os.path.exists(store):
        shutil.rmtree(store)
    disk = None
    if args.cold:
        disk = dd_rate(src)
        print(f"disk: dd read {disk['bytes'] / 1e9:.1f} GB in {disk['seconds']} s = {disk['mb_per_s']} MB/s", flush=True)
        evict(src)
    else:
        subprocess.run(["cat", src], stdout=subprocess.DEVNULL, check=True)  # into the page cache
    cached = cached_fraction(src)
    load_args = [store, src, "--dim", str(args.dim), "--batch-size", str(args.batch_size), "--quiet", "--json"]
    if args.n_base is not None:
        load_args += ["--n-base", str(args.n_base)]
    warm_up(src, args)
    cmd = [sys.executable, os.path.abspath(__file__), "_child", *load_args]
    print("loading: " + " ".join(cmd), flush=True)
    res = _common.run_measured(cmd)
    if res["returncode"] != 0:
        raise SystemExit(f"profiled ingest failed (exit {res['returncode']}):\n{res['stderr']}")
    child = json.loads(res["stdout"].strip().splitlines()[-1])
    import zenstore

    with zenstore.Store.open(store, readonly=True) as s:
        stats = s.stats()
    wall = child["wall"]
    main_total = sum(st["seconds"] for st in child["stages"] if st["thread"] == "main")
    cpu_total = sum(st["cpu_seconds"] for st in child["stages"] if st["thread"] == "main")
    stages = sorted(child["stages"], key=lambda st: (st["thread"] != "main", -st["seconds"]))
    stages.append({"thread": "main", "stage": "other (checks, glue)", "seconds": wall - main_total,
                   "cpu_seconds": child["cpu"] - cpu_total, "calls": None})
    for st in stages:
        st["share"] = st["seconds"] / wall
        st["cpu_share"] = st["cpu_seconds"] / child["cpu"]
    rows = child["summary"]["rows_added"]
    result = {
        "benchmark": "ingest_profile",
        "command": _common.rerun_command("benchmarks/ingest_profile.py", argv),
        "machine": _common.machine_info(),
        "params": {"n": args.n, "dim": args.dim, "batch_size": args.batch_size, "n_base": args.n_base,
                   "cold": args.cold, "seed": args.seed},
        "zenstore_code": os.path.dirname(zenstore.__file__),  # which checkout ran (PYTHONPATH)
        "input_file": src,
        "input_bytes": os.path.getsize(src),
        "input_cached_fraction_at_start": cached,
        "disk": disk,
        "ingest": {"rows": rows, "wall_seconds": round(wall, 2), "rows_per_second": round(rows / wall, 1),
                   "cli_rows_per_second": child["summary"]["rows_per_second"],
                   "peak_rss_mib": round(res["peak_rss_bytes"] / MIB, 1),
                   "cpu_user_s": round(res["user_s"], 1), "cpu_sys_s": round(res["sys_s"], 1),
                   "input_mb_per_s": round(os.path.getsize(src) / wall / 1e6, 1)},
        "store": {"segments": stats["segments"], "n_base": stats["n_base"], "count": stats["count"]},
        "stages": stages,
    }
    if disk:
        result["ingest"]["share_of_disk_rate"] = round(result["ingest"]["input_mb_per_s"] / disk["mb_per_s"], 3)
    if not args.keep:
        shutil.rmtree(store, ignore_errors=True)
    if args.vs_faiss:
        print(f"Store.add vs IndexIVFRaBitQ.add: {args.vs_faiss:,} rows", flush=True)
        result["vs_faiss"] = vs_faiss(src, args.vs_faiss, stats["n_base"], args.batch_size)
    return result


def report(r: dict) -> str:
    ing = r["ingest"]
    lines = [f"zenstore ingest profile: {ing['rows']:,} rows x {r['params']['dim']} "
             f"({'input evicted from the page cache' if r['params']['cold'] else 'page-cached input'}, "
             f"batch {r['params']['batch_size']:,}; {r['store']['n_base']} base rows, {r['store']['segments']} segments)",
             f"machine: {_common.machine_line(r['machine'])}",
             f"{ing['wall_seconds']:.1f} s = {ing['rows_per_second']:,.0f} rows/s "
             f"({ing['input_mb_per_s']:,.0f} MB/s of input), peak RSS {ing['peak_rss_mib']:,.0f} MiB, "
             f"CPU {ing['cpu_user_s']:.0f} s user + {ing['cpu_sys_s']:.0f} s sys "
             f"({(ing['cpu_user_s'] + ing['cpu_sys_s']) / ing['rows'] * 1e6:,.0f} CPU us/row)", ""]
    if r["disk"]:
        lines.insert(3, f"disk sequential read (dd, same file, evicted first): {r['disk']['mb_per_s']:,.0f} MB/s; "
                        f"the load read at {ing['share_of_disk_rate']:.0%} of it")
    lines.append(_common.table(
        [{**st, "stage": st["stage"] + (" [helper thread, overlapped]" if st["thread"] != "main" else ""),
          "pct": 100 * st["share"], "cpu_pct": 100 * st["cpu_share"]} for st in r["stages"]],
        [("stage", "stage", ""), ("seconds", "wall s", ".2f"), ("pct", "share of wall %", ".1f"),
         ("cpu_seconds", "CPU s", ".2f"), ("cpu_pct", "share of CPU %", ".1f"), ("calls", "calls", "d")]))
    vf = r.get("vs_faiss")
    if vf:
        lines += ["", f"Store.add after training vs faiss IndexIVFRaBitQ.add (nlist {vf['nlist']}), "
                      f"{vf['rows']:,} in-memory rows in batches of {vf['batch']:,}:",
                  f"  zenstore {vf['zenstore_add_seconds']:.1f} s = {vf['zenstore_rows_per_s']:,.0f} rows/s; "
                  f"faiss {vf['faiss_add_seconds']:.1f} s = {vf['faiss_rows_per_s']:,.0f} rows/s; "
                  f"zenstore is {vf['ratio']:.2f}x faiss by wall time"
                  + (f", {vf['cpu_ratio']:.2f}x by CPU time (zenstore {vf['zenstore_add_cpu_seconds']:.1f} s, "
                     f"faiss {vf['faiss_add_cpu_seconds']:.1f} s)" if "cpu_ratio" in vf else "")]
    lines += ["", f"rerun: {r['command']}"]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000, help="documents (default 200000)")
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-base", type=int, default=None, help="base rows (default: zenstore's)")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--cold", action="store_true", help="evict the input first; measure the disk with dd")
    p.add_argument("--vs-faiss", type=int, default=0, metavar="N",
                   help="also time Store.add vs IndexIVFRaBitQ.add of N in-memory rows")
    p.add_argument("--data-dir", default=gendata.DEFAULT_DATA_DIR)
    p.add_argument("--store", default=None)
    p.add_argument("--keep", action="store_true")
    p.add_argument("--chunk", type=int, default=gendata.DEFAULT_CHUNK)
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/ingest-profile-n<N>-d<D>[-cold].json)")
    return p


def main(argv=None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "_child":
        raise SystemExit(child_main(argv[1:]))
    args = build_parser().parse_args(argv)
    result = run(args, argv)
    out = args.out or os.path.join(_common.OUT_DIR, f"ingest-profile-n{args.n}-d{args.dim}"
                                                    f"{'-cold' if args.cold else ''}.json")
    return _common.publish(result, out, report)


if __name__ == "__main__":
    main()
