#!/usr/bin/env python
"""Generate benchmark data with ``zenstore.synth``: documents, queries, exact ground truth.

Everything is streamed: documents are produced in chunks (``--chunk`` rows) and written
to a ``.npy`` (through ``np.lib.format.open_memmap``, one mapped window per chunk, so the
process never holds more than one chunk) and/or an ``.fvecs`` file, while an exact top-k
accumulator (``zenstore.synth.exact_topk``, float32 inner product = cosine on the unit
rows) sees the same chunks. 1M x 7680 docs (30 GB) never exist in memory at once.

Files go to ``DATA/synth-<fingerprint>/`` (fingerprint = hash of the generator spec,
which includes dim and seed), named by their sizes, and are reused when present:

    docs-n<N>.npy / docs-n<N>.fvecs      float32 (N, dim), unit rows
    queries-q<NQ>.npy                    float32 (NQ, dim)
    gt-n<N>-q<NQ>-k<K>.npz               ids (NQ, K) int64, scores (NQ, K) float32, best first
    spec.json                            the generator spec

Files are written under a ``.tmp`` name and renamed when complete, so an interrupted run
never leaves a file that looks finished. ``./data/`` is gitignored.

    python tools/gendata.py --n 100000 --queries 1000 --k 100            # npy + queries + gt
    python tools/gendata.py --n 1000000 --format npy fvecs               # also an .fvecs copy
    python tools/gendata.py --n 2000 --dim 256 --data-dir /tmp/zd        # tiny
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "passive"  # before numpy/faiss load OpenMP (see docs/benchmarks.md)
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # idle BLAS threads sleep (zenstore/kernels/_threads.py)

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict  # noqa: E402

import numpy as np  # noqa: E402

from zenstore.synth import SynthSpec, SyntheticEmbeddings, exact_topk  # noqa: E402

DEFAULT_DATA_DIR = "data"
DEFAULT_CHUNK = 8192


# Generator profiles beside the default: a result measured on one generator's data is not a
# result (the margins shrank on held-out data). "noisy": more topics, a flatter spectrum, more
# noise -- more near-ties between base rows (also benchmarks/assign_quality.py's, with seed 1).
PROFILES = {
    "default": {},
    "noisy": dict(n_topics=1024, spectrum_decay=0.5, topic_weight=0.45, noise_weight=0.8),
}


def make_spec(dim: int = 7680, seed: int = 0, profile: str = "default") -> SynthSpec:
    return SynthSpec(dim=dim, seed=seed, **PROFILES[profile])


def spec_dir(spec: SynthSpec, data_dir: str = DEFAULT_DATA_DIR) -> str:
    d = os.path.join(data_dir, f"synth-{spec.fingerprint()}")
    os.makedirs(d, exist_ok=True)
    meta = os.path.join(d, "spec.json")
    if not os.path.exists(meta):
        with open(meta + ".tmp", "w") as f:
            json.dump({**asdict(spec), "fingerprint": spec.fingerprint()}, f, indent=2)
        os.replace(meta + ".tmp", meta)
    return d


def docs_path(spec: SynthSpec, n: int, data_dir: str = DEFAULT_DATA_DIR, fmt: str = "npy") -> str:
    return os.path.join(spec_dir(spec, data_dir), f"docs-n{n}.{fmt}")


def queries_path(spec: SynthSpec, nq: int, data_dir: str = DEFAULT_DATA_DIR) -> str:
    return os.path.join(spec_dir(spec, data_dir), f"queries-q{nq}.npy")


def gt_path(spec: SynthSpec, n: int, nq: int, k: int, data_dir: str = DEFAULT_DATA_DIR) -> str:
    return os.path.join(spec_dir(spec, data_dir), f"gt-n{n}-q{nq}-k{k}.npz")


# --- streamed readers/writers -------------------------------------------------------------


class NpyWriter:
    """Write an (n, dim) float32 .npy chunk by chunk through open_memmap windows."""

    def __init__(self, path: str, n: int, dim: int) -> None:
        self.path, self.tmp, self.n, self.dim = path, path + ".tmp", n, dim
        mm = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32, shape=(n, dim))
        self.offset = mm.offset  # header length
        del mm  # the file now has its header and full size; windows below fill it

    def write(self, first: int, block: np.ndarray) -> None:
        if len(block) == 0:
            return
        win = np.memmap(self.tmp, dtype=np.float32, mode="r+",
                        offset=self.offset + first * self.dim * 4, shape=block.shape)
        win[:] = block
        win.flush()
        del win  # unmap: written pages leave this process (RSS stays ~one chunk)

    def close(self) -> None:
        os.replace(self.tmp, self.path)


class FvecsWriter:
    """.fvecs: per row an int32 dimension followed by dim float32 values."""

    def __init__(self, path: str, n: int, dim: int) -> None:
        self.path, self.tmp, self.dim = path, path + ".tmp", dim
        self.f = open(self.tmp, "wb")

    def write(self, first: int, block: np.ndarray) -> None:
        rec = np.empty((len(block), self.dim + 1), dtype=np.float32)
        rec[:, 0] = np.array([self.dim], dtype=np.int32).view(np.float32)[0]
        rec[:, 1:] = block
        self.f.write(rec.tobytes())

    def close(self) -> None:
        self.f.close()
        os.replace(self.tmp, self.path)


def _npy_header(f):
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read(f)


def iter_npy(path: str, chunk: int = DEFAULT_CHUNK, start: int = 0, stop: int | None = None):
    """Yield ``(first_row, block)`` from a 2-d float32 .npy with plain file reads (no
    memory map, so a 30 GB file does not end up resident in this process)."""
    with open(path, "rb") as f:
        shape, _fortran, dtype = _npy_header(f)
        offset = f.tell()
        n, d = shape
        stop = n if stop is None else min(stop, n)
        pos = start
        while pos < stop:
            take = min(chunk, stop - pos)
            f.seek(offset + pos * d * dtype.itemsize)
            block = np.fromfile(f, dtype=dtype, count=take * d).reshape(take, d)
            yield pos, block.astype(np.float32, copy=False)
            pos += take


def npy_shape(path: str) -> tuple[int, ...]:
    with open(path, "rb") as f:
        return _npy_header(f)[0]


# --- the main jobs ------------------------------------------------------------------------


def ensure_queries(spec: SynthSpec, nq: int, data_dir: str = DEFAULT_DATA_DIR) -> str:
    path = queries_path(spec, nq, data_dir)
    if not os.path.exists(path):
        q = SyntheticEmbeddings(spec).queries(nq)
        np.save(path + ".tmp.npy", q)
        os.replace(path + ".tmp.npy", path)
    return path


def load_ground_truth(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as z:
        return z["ids"], z["scores"]


def prepare(spec: SynthSpec, n: int, nq: int = 0, k: int = 100, data_dir: str = DEFAULT_DATA_DIR,
            formats=("npy",), chunk: int = DEFAULT_CHUNK, log=print) -> dict:
    """Make sure docs (in ``formats``), queries and ground truth exist; one streaming pass.

    Returns a dict of paths: ``docs`` (format -> path), ``queries``, ``gt`` (None when
    nq == 0). Documents come from the generator, or from an existing docs file when only
    the ground truth is missing.
    """
    t0 = time.perf_counter()
    gen = SyntheticEmbeddings(spec)
    out = {"dir": spec_dir(spec, data_dir), "docs": {}, "queries": None, "gt": None}
    writers = []
    for fmt in formats:
        path = docs_path(spec, n, data_dir, fmt)
        out["docs"][fmt] = path
        if not os.path.exists(path):
            writers.append((NpyWriter if fmt == "npy" else FvecsWriter)(path, n, spec.dim))
    need_gt = nq > 0 and not os.path.exists(gt_path(spec, n, nq, k, data_dir))
    if nq > 0:
        out["queries"] = ensure_queries(spec, nq, data_dir)
        out["gt"] = gt_path(spec, n, nq, k, data_dir)
    if not writers and not need_gt:
        return out
    existing_npy = docs_path(spec, n, data_dir, "npy")
    if os.path.exists(existing_npy):
        source, what = iter_npy(existing_npy, chunk), f"reading {existing_npy}"
    else:
        source, what = gen.iter_docs(n, batch=chunk), "generating"
    todo = [os.path.basename(w.path) for w in writers] + (["ground truth"] if need_gt else [])
    log(f"gendata: {what} {n:,} x {spec.dim} docs -> {', '.join(todo)}")
    last = [time.perf_counter()]

    def stream():
        for first, block in source:
            for w in writers:
                w.write(first, block)
            now = time.perf_counter()
            if now - last[0] > 30:
                last[0] = now
                log(f"gendata: {first + len(block):,}/{n:,} rows, {now - t0:.0f} s")
            yield first, block

    if need_gt:
        q = np.load(out["queries"])
        ids, scores = exact_topk(q, stream(), min(k, n), metric="ip")
        tmp = out["gt"] + ".tmp.npz"
        np.savez(tmp, ids=ids, scores=scores)
        os.replace(tmp, out["gt"])
    else:
        for _ in stream():
            pass
    for w in writers:
        w.close()
    log(f"gendata: done in {time.perf_counter() - t0:.1f} s")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Write generated embeddings (zenstore.synth), queries and exact top-k ground truth.",
        epilog=__doc__.split("never leaves a file that looks finished. ./data/ is gitignored.")[-1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000, help="documents (default 100000)")
    p.add_argument("--dim", type=int, default=7680, help="dimension (default 7680)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--queries", type=int, default=1000, help="queries (default 1000; 0: none, no ground truth)")
    p.add_argument("--k", type=int, default=100, help="ground-truth depth (default 100)")
    p.add_argument("--format", nargs="+", choices=("npy", "fvecs"), default=["npy"],
                   help="document file format(s) (default npy)")
    p.add_argument("--no-docs", action="store_true",
                   help="write only queries + ground truth (docs are generated, not stored)")
    p.add_argument("--data-dir", "--cache", default=DEFAULT_DATA_DIR, help="output/cache directory (default ./data)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help="rows per streamed chunk (default 8192)")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    spec = make_spec(args.dim, args.seed)
    formats = () if args.no_docs else tuple(args.format)
    out = prepare(spec, args.n, args.queries, args.k, args.data_dir, formats, args.chunk)
    for fmt, path in out["docs"].items():
        print(f"docs ({fmt}):{' ' * (7 - len(fmt))}{path}")
    if out["queries"]:
        print(f"queries:      {out['queries']}")
        print(f"ground truth: {out['gt']}")
    print("rerun: python tools/gendata.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    return out


if __name__ == "__main__":
    main()
