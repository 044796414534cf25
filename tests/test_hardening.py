"""Regressions of issue 9's store-level findings: verify during merges, bounded search memory."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np

from zenstore import Store, verify_store

WRITER = textwrap.dedent("""
    import sys, numpy as np
    from zenstore import Store
    path, stop_after = sys.argv[1], float(sys.argv[2])
    import time
    rng = np.random.default_rng(1)
    t0, n = time.monotonic(), 0
    with Store.open(path) as s:
        print("ready", flush=True)
        while time.monotonic() - t0 < stop_after:
            b = int(rng.integers(1, 12))
            s.add(list(range(n, n + b)), rng.standard_normal((b, 64)).astype(np.float32))
            n += b
            if n % 5 == 0:
                s.delete([n - 1])
    print(n, flush=True)
""")


def test_verify_during_a_merging_writer_reports_nothing(tmp_path):
    """verify_store beside a healthy writer that merges all the time (fanout 2): it used to
    report "file listed in the catalog is missing" when a merge removed a file it was
    about to check (8 of 228 runs)."""
    path = tmp_path / "s.zen"
    rng = np.random.default_rng(0)
    with Store.create(path, dim=64, n_base=4, min_rows_per_base=4, segment_fanout=2) as s:
        s.add(list(range(10**6, 10**6 + 64)), rng.standard_normal((64, 64)).astype(np.float32))
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "16"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        runs, problems = 0, []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and proc.poll() is None:
            found = verify_store(path)
            runs += 1
            if found:
                problems.append(found)
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert runs >= 20, runs
    assert problems == [], f"{len(problems)} of {runs} verify runs reported problems: {problems[:3]}"
    assert verify_store(path) == []


def test_search_memory_is_bounded_by_the_store_not_by_k(tmp_path):
    """A 100-row store, 40 queries, k=100,000: the working memory beyond the (nq, k)
    result arrays the caller asked for stays small (it was +1.1 GB)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100, 64)).astype(np.float32)
    q = rng.standard_normal((40, 64)).astype(np.float32)
    with Store.create(tmp_path / "s.zen", dim=64, n_base=2, min_rows_per_base=4) as s:
        s.add(list(range(100)), x)
        s.search_batch(q[:2], k=5)  # compile the kernels outside the measurement
        k = 100_000
        tracemalloc.start()
        ids, scores = s.search_batch(q, k=k)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result_bytes = ids.nbytes + scores.nbytes
        assert peak <= result_bytes * 2.2 + (16 << 20), (peak, result_bytes)
        assert (ids[:, :100] >= 0).all() and (ids[:, 100:] == -1).all()
        assert np.isnan(scores[:, 100:]).all()
        want, _ = s.search_batch(q, k=100)
        assert (ids[:, :100] == want).all()
