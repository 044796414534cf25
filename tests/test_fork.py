"""A process forked after searching can search (and write) with the same results.

GNU OpenMP cannot run in a child forked after the parent used it: numba's omp layer
terminates such a child ("fork() called from a process already using GNU OpenMP"), and a
``multiprocessing.Pool`` with the fork start method then waits forever for the lost task.
These tests fork after the parent has run every kind of parallel kernel.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time
import warnings

import numpy as np
import pytest

from zenstore import Store

from .conftest import clustered

DIM = 128
N = 3000
CHILD_TIMEOUT = 120  # seconds; generous: a cold numba cache compiles the serial kernels

_STORE: Store | None = None  # the parent's open store, inherited by forked Pool workers
_QUERIES: np.ndarray | None = None


def _searches(store: Store, queries: np.ndarray) -> dict:
    """One of each search path: batch over all groups and with nprobe, single queries."""
    ids_all, scores_all = store.search_batch(queries, k=10)
    ids_probe, scores_probe = store.search_batch(queries, k=10, nprobe=2)
    single = [[(h.id, h.score) for h in store.search(q, k=10)] for q in queries[:3]]
    return {"ids_all": ids_all, "scores_all": scores_all, "ids_probe": ids_probe,
            "scores_probe": scores_probe, "single": single}


def _assert_same(a: dict, b: dict) -> None:
    for key in ("ids_all", "scores_all", "ids_probe", "scores_probe"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a["single"] == b["single"]


def _fork_quietly() -> int:
    sys.stdout.flush()  # or the child's copy of unwritten output is written twice
    sys.stderr.flush()
    # Python >= 3.12 warns about forking a process that has threads (numba's workers);
    # that is the situation under test, not a failure
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def _run_in_forked_child(fn):
    """fn() in a forked child; its return value (pickled through a pipe), or a failure
    naming how the child ended (killed after CHILD_TIMEOUT: a hang fails, not blocks)."""
    r, w = os.pipe()
    pid = _fork_quietly()
    if pid == 0:  # child
        os.close(r)
        code = 0
        try:
            data = pickle.dumps(("ok", fn()))
        except BaseException as exc:  # report anything to the parent
            data = pickle.dumps(("error", repr(exc)))
            code = 1
        with os.fdopen(w, "wb") as f:
            f.write(data)
        os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + CHILD_TIMEOUT
    with os.fdopen(r, "rb") as f:
        while True:
            ready, _, _ = select.select([f], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"forked child did not finish in {CHILD_TIMEOUT} s (killed)")
            chunk = os.read(f.fileno(), 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    if not data:
        pytest.fail(f"forked child died without a result (wait status {status})")
    kind, value = pickle.loads(data)
    if kind != "ok":
        pytest.fail(f"forked child raised {value}")
    return value


@pytest.fixture(scope="module")
def searched_store(tmp_path_factory):
    """A store the parent has searched, so numba's threading layer is running."""
    path = str(tmp_path_factory.mktemp("fork") / "s.zen")
    rng = np.random.default_rng(7)
    x = clustered(rng, N, DIM)
    with Store.create(path, dim=DIM, n_base=8) as store:
        store.add(list(range(N)), x)
    store = Store.open(path, readonly=True)
    queries = x[:40] + 0.05 * rng.standard_normal((40, DIM)).astype(np.float32)
    expected = _searches(store, queries)
    yield store, queries, expected
    store.close()


def test_forked_child_searches_like_parent(searched_store):
    store, queries, expected = searched_store
    got = _run_in_forked_child(lambda: _searches(store, queries))
    _assert_same(got, expected)
    _assert_same(_searches(store, queries), expected)  # the parent is unaffected


def test_forked_child_threads_search_like_parent(searched_store):
    store, queries, expected = searched_store

    def threaded():
        results = [None] * 4

        def run(i):
            results[i] = _searches(store, queries)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    for got in _run_in_forked_child(threaded):
        _assert_same(got, expected)


def test_forked_child_writes_a_new_store(searched_store, tmp_path):
    """Training, encoding and merging (the write-side parallel kernels) in a child."""
    path = str(tmp_path / "child.zen")
    x = clustered(np.random.default_rng(3), 500, DIM)

    def write_and_search():
        with Store.create(path, dim=DIM, n_base=4) as s:
            s.add(list(range(500)), x)
            return s.search_batch(x[:20], k=5)

    child_ids, child_scores = _run_in_forked_child(write_and_search)
    with Store.open(path, readonly=True) as s:
        ids, scores = s.search_batch(x[:20], k=5)
    np.testing.assert_array_equal(child_ids, ids)
    np.testing.assert_array_equal(child_scores, scores)
    assert (ids[:, 0] == np.arange(20)).all()


def _pool_search(i: int):
    q = _QUERIES[4 * i: 4 * i + 4]
    return _STORE.search_batch(q, k=10) + _STORE.search_batch(q, k=10, nprobe=2)


def test_pool_with_fork_maps_searches(searched_store):
    global _STORE, _QUERIES
    store, queries, _ = searched_store
    _STORE, _QUERIES = store, queries
    try:
        expected = [_pool_search(i) for i in range(10)]  # same batches (a batch's size picks its path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pool = mp.get_context("fork").Pool(2)
        try:
            # a worker killed by OpenMP loses its task and map() would wait forever
            parts = pool.map_async(_pool_search, range(10)).get(timeout=CHILD_TIMEOUT)
        except mp.TimeoutError:
            pytest.fail(f"Pool(fork).map of searches did not finish in {CHILD_TIMEOUT} s")
        finally:
            pool.terminate()
            pool.join()
    finally:
        _STORE = _QUERIES = None
    for got, want in zip(parts, expected):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_parent_threads_search_concurrently(searched_store):
    """The parallel kernels stay safe for concurrent calls from many threads."""
    store, queries, expected = searched_store
    results = [None] * 6

    def run(i):
        results[i] = _searches(store, queries)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results:
        _assert_same(got, expected)


# A parent that launches a parallel kernel, then a forked child that runs the same kernel;
# exit status 0 when the child ran its serial twin and got the parent's result.
_TWIN_SCRIPT = textwrap.dedent("""
    import os, sys, warnings
    import numpy as np
    from zenstore.kernels import pack_signs
    from zenstore.kernels._kernel import serial_only
    from zenstore.kernels.bits import _pack_signs_parallel
    x = np.random.default_rng(0).standard_normal((500, 128)).astype(np.float32)
    want = pack_signs(x)  # >= PARALLEL_ROWS rows: the parallel kernel
    assert not serial_only()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        ok = serial_only() and np.array_equal(pack_signs(x), want)
        ok = ok and len(_pack_signs_parallel.dispatchers()) == 2
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


def test_serial_twin_survives_a_warm_numba_cache(tmp_path):
    """numba's cache does not key entries by the ``parallel`` flag: a twin sharing the
    parallel build's name would load its cached parallel code, and the child would be
    killed. Run twice on one fresh cache dir: compiled, then both builds loaded."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    for run in ("cold cache", "warm cache"):
        proc = subprocess.run([sys.executable, "-c", _TWIN_SCRIPT], env=env, capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT)
        assert proc.returncode == 0, f"{run}: exit {proc.returncode}\n{proc.stderr[-2000:]}"


def test_child_forked_before_any_parallel_launch_keeps_parallel_kernels():
    script = textwrap.dedent("""
        import os, sys
        from zenstore.kernels._kernel import serial_only
        pid = os.fork()
        if pid == 0:
            os._exit(3 if serial_only() else 0)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
