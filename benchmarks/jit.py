#!/usr/bin/env python
"""JIT cost of a fresh process: time to the first search with a cold and a warm numba cache,
and how many kernel specialisations the process compiled (or loaded).

Each phase runs in its own child process with ``NUMBA_CACHE_DIR`` pointed at a directory
of this run: empty for the cold run, the one the cold run filled for the warm run. Phases:

- ``reader``: open an existing store (``readonly=True``, memory-mapped segments) and time
  ``import zenstore``, the open, the first ``search``, the first ``search_batch`` (40
  queries, every base row) and the first with ``nprobe=2``; then the same calls again.
- ``writer``: create a store, add rows (training, encoding), then the same searches.

Cold minus warm is the compile time a user pays once per machine (per numba cache). Each
time is given as wall and CPU seconds of the child.

``--store PATH`` (repeatable) also times an existing store in fresh processes with the
machine's own (warm) numba cache: ``Store.open`` then the first ``search`` and
``search_batch`` of the default options, once as opened and once opened with ``warm=True``
(the start-up target: the first query <= 100 ms after ``Store.open``).

    python benchmarks/jit.py --repeats 3
    python benchmarks/jit.py --repeats 3 --store data/search-...-n1000000-b1024.zen
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

N, DIM, N_BASE = 3000, 256, 8


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    return x, x[:40] + 0.05 * rng.standard_normal((40, DIM)).astype(np.float32)


def _timed(out: dict, name: str, fn):
    """Wall and CPU seconds of fn() (CPU time: less disturbed by other load on the machine;
    compilation runs on one thread)."""
    t, c = time.perf_counter(), time.process_time()
    result = fn()
    out[name] = time.perf_counter() - t
    out[f"{name} (cpu)"] = time.process_time() - c
    return result


def _dispatchers():
    """Every numba dispatcher of zenstore.kernels (with the serial twins a kernel built)."""
    from numba.core.registry import CPUDispatcher

    import zenstore.kernels as kernels

    found = {}
    for info in pkgutil.iter_modules(kernels.__path__):
        mod = importlib.import_module(f"zenstore.kernels.{info.name}")
        for name, obj in vars(mod).items():
            has_builds = hasattr(obj, "dispatchers") and not isinstance(obj, type)
            candidates = obj.dispatchers() if has_builds else [obj]
            for d in candidates:
                if isinstance(d, CPUDispatcher) and d.py_func.__module__ == mod.__name__:
                    found[f"{info.name}.{d.py_func.__qualname__}"] = d
    return found


def _searches(store, queries, out: dict, prefix: str) -> None:
    _timed(out, f"{prefix}search", lambda: store.search(queries[0], k=10))
    _timed(out, f"{prefix}search_batch", lambda: store.search_batch(queries, k=10))
    _timed(out, f"{prefix}search_batch_nprobe2", lambda: store.search_batch(queries, k=10, nprobe=2))


def store_child(phase: str, path: str) -> dict:
    """An existing store in this fresh process: open (``warm=True`` for phase 'store-warm'),
    then the first default ``search`` and ``search_batch`` (16 queries), then again."""
    import numpy as np

    out: dict = {}
    t = time.perf_counter()
    from zenstore import Store

    out["import"] = time.perf_counter() - t
    store = _timed(out, "open", lambda: Store.open(path, readonly=True, warm=phase == "store-warm"))
    q = np.random.default_rng(1).standard_normal((16, store.dim)).astype(np.float32)
    for prefix in ("first ", "again "):
        _timed(out, f"{prefix}search", lambda: store.search(q[0], k=10))
        _timed(out, f"{prefix}search_batch", lambda: store.search_batch(q, k=10))
    store.close()
    return out


def child(phase: str, path: str) -> dict:
    if phase.startswith("store"):
        return store_child(phase, path)
    out: dict = {}
    t = time.perf_counter()
    from zenstore import Store

    out["import"] = time.perf_counter() - t
    x, queries = _data()
    if phase == "build":
        with Store.create(path, dim=DIM, n_base=N_BASE) as store:
            store.add(list(range(N)), x)
        return out
    if phase == "reader":
        store = _timed(out, "open", lambda: Store.open(path, readonly=True))
    else:
        def create_and_add():
            created = Store.create(path, dim=DIM, n_base=N_BASE)
            created.add(list(range(N)), x)
            return created

        store = _timed(out, "create+add", create_and_add)
    _searches(store, queries, out, "first ")
    _searches(store, queries, out, "again ")
    store.close()
    specs = {name: len(d.signatures) for name, d in _dispatchers().items() if d.signatures}
    out["specialisations"] = sum(specs.values())
    out["duplicated"] = {name: n for name, n in specs.items() if n > 1}
    return out


def run_child(phase: str, path: str, cache: str | None) -> dict:
    env = dict(os.environ) if cache is None else dict(os.environ, NUMBA_CACHE_DIR=cache)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", phase, path],
                          capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{phase} child failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=1, help="cold/warm pairs per phase (medians reported)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--store", action="append", default=[], help="also time this existing store (warm cache)")
    ap.add_argument("--child", nargs=2, metavar=("PHASE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child)))
        return {}
    stores = {}
    for path in args.store:
        runs_of = {"as opened": [], "warm=True": []}
        for _ in range(args.repeats):
            runs_of["as opened"].append(run_child("store", path, None))
            runs_of["warm=True"].append(run_child("store-warm", path, None))
        stores[path] = {kind: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for kind, rs in runs_of.items()}
    runs: dict = {"reader": {"cold": [], "warm": []}, "writer": {"cold": [], "warm": []}}
    with tempfile.TemporaryDirectory(prefix="zenstore-jit-") as tmp:
        built = os.path.join(tmp, "built.zen")
        run_child("build", built, os.path.join(tmp, "cache-build"))
        for r in range(args.repeats):
            for phase in ("reader", "writer"):
                cache = os.path.join(tmp, f"cache-{phase}-{r}")
                for kind in ("cold", "warm"):
                    path = built if phase == "reader" else os.path.join(tmp, f"w-{r}-{kind}.zen")
                    runs[phase][kind].append(run_child(phase, path, cache))
                shutil.rmtree(cache, ignore_errors=True)
    result = {"benchmark": "jit", "n": N, "dim": DIM, "repeats": args.repeats,
              "command": "python benchmarks/jit.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "phases": {}, "stores": stores}
    for phase, kinds in runs.items():
        keys = [k for k in kinds["cold"][0] if isinstance(kinds["cold"][0][k], float)]
        table = {k: {kind: statistics.median(run[k] for run in kinds[kind]) for kind in ("cold", "warm")}
                 for k in keys}
        for total, is_cpu in (("first searches total", False), ("first searches total (cpu)", True)):
            first = [k for k in keys if k.startswith("first ") and k.endswith(" (cpu)") == is_cpu]
            table[total] = {kind: sum(table[k][kind] for k in first) for kind in ("cold", "warm")}
        result["phases"][phase] = {"seconds": table,
                                   "specialisations": kinds["cold"][0]["specialisations"],
                                   "duplicated": kinds["cold"][0]["duplicated"]}
    for phase, res in result["phases"].items():
        print(f"\n{phase}: seconds, median of {args.repeats} (cold cache / warm cache)")
        for k, v in res["seconds"].items():
            print(f"  {k:<34} {v['cold']:8.3f} {v['warm']:8.3f}")
        print(f"  specialisations compiled: {res['specialisations']}; more than one: {res['duplicated'] or 'none'}")
    for path, kinds in stores.items():
        print(f"\n{path}: seconds, median of {args.repeats} fresh processes, warm numba cache")
        for kind, row in kinds.items():
            print(f"  {kind:<10} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items() if "(cpu)" not in k))
    print(f"\nrerun: {result['command']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
