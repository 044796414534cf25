#!/usr/bin/env python
"""Catalog overhead: what zenstore's LMDB wrapper adds to each transaction.

Side by side on the same environment, medians of ``--reps`` repetitions (microseconds):

  * a read transaction with one lookup: raw py-lmdb vs ``Catalog.read()`` (counted
    transactions, error mapping);
  * a write transaction with one put: raw py-lmdb vs ``Catalog.write()`` (adds
    ``reader_check``, the map-headroom check and the write log), both committed and
    fsynced -- the fsync dominates;
  * ``reader_check`` alone on a clean reader table, and the one call that frees 256 slots
    left by a SIGKILLed process.

    python benchmarks/catalog_overhead.py               # 2,000 repetitions
    python benchmarks/catalog_overhead.py --reps 200    # quick
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "passive"  # before numpy/numba load OpenMP

import argparse  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from zenstore import Store  # noqa: E402
from zenstore.catalog import Catalog  # noqa: E402
from zenstore.lmdb_env import MAX_READERS  # noqa: E402
from zenstore.records import SUB_DATABASES  # noqa: E402

HOLD = r"""
import sys
from zenstore.catalog import Catalog
from zenstore.records import SUB_DATABASES
cat = Catalog(sys.argv[1], SUB_DATABASES, readonly=True)
held = [cat.read() for _ in range(int(sys.argv[2]))]
for h in held:
    h.__enter__()
print("ready", flush=True)
sys.stdin.read()
"""


def _median_us(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=2000)
    args = parser.parse_args(argv)
    reps = args.reps
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.zen")
        Store.create(path, dim=64).close()
        cat = Catalog(path, SUB_DATABASES, readonly=False)
        env, db = cat.env, cat.dbs["meta"]
        key = b"config"
        out = {"reps": reps}

        def raw_read():
            with env.begin() as t:
                t.get(key, db=db)

        def cat_read():
            with cat.read() as t:
                t.get("meta", key)

        def raw_write():
            with env.begin(write=True) as t:
                t.put(b"bench", b"x" * 100, db=cat.dbs["jobs"])

        def cat_write():
            with cat.write() as t:
                t.put("jobs", b"bench", b"x" * 100)

        pairs = {"read": (raw_read, cat_read), "write": (raw_write, cat_write)}
        for name, (raw, wrapped) in pairs.items():
            n = reps if name == "read" else max(10, reps // 10)
            # interleaved rounds, so that a noisy neighbour hits both alike
            r, w = [], []
            for _ in range(5):
                r.append(_median_us(raw, n // 5 or 1))
                w.append(_median_us(wrapped, n // 5 or 1))
            out[f"{name}_raw_us"] = statistics.median(r)
            out[f"{name}_catalog_us"] = statistics.median(w)
        out["reader_check_clean_us"] = _median_us(env.reader_check, reps)

        proc = subprocess.Popen([sys.executable, "-c", HOLD, path, str(MAX_READERS)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        t0 = time.perf_counter()
        freed = env.reader_check()
        out["reader_check_256_stale_us"] = (time.perf_counter() - t0) * 1e6
        out["reader_check_freed"] = freed
        cat.close()

    print(f"catalog overhead (medians of {reps} reps; microseconds)")
    print(f"  read txn + 1 get    raw {out['read_raw_us']:8.2f}   Catalog.read  {out['read_catalog_us']:8.2f}"
          f"   ({out['read_catalog_us'] - out['read_raw_us']:+.2f})")
    print(f"  write txn + 1 put   raw {out['write_raw_us']:8.1f}   Catalog.write {out['write_catalog_us']:8.1f}"
          f"   ({out['write_catalog_us'] - out['write_raw_us']:+.1f}, fsync included)")
    print(f"  reader_check: clean table {out['reader_check_clean_us']:.2f}; freeing "
          f"{out['reader_check_freed']} stale slots {out['reader_check_256_stale_us']:.1f}")
    print(f"rerun: python benchmarks/catalog_overhead.py --reps {reps}")
    return out


if __name__ == "__main__":
    main()
