"""Ctrl-C during numba's first compilation or cache load must not break numba.

numba loads its registries lazily inside the first compilation; a KeyboardInterrupt in
the middle of that left a half-imported module, and every later search of the process
failed with "duplicate registration for UnicodeType" (kernels/_kernel.py). The child
(tests/_jit_interrupt_child.py) sends itself SIGINT exactly there, in a fresh process.
"""

import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import zenstore
from zenstore.kernels import signals_deferred

CHILD = os.path.join(os.path.dirname(__file__), "_jit_interrupt_child.py")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("jit") / "s.zen")
    x = np.random.default_rng(0).standard_normal((400, 64)).astype(np.float32)
    with zenstore.Store.create(path, dim=64, n_base=4) as store:
        store.add(np.arange(400), x)
    return path


def _run(path: str, mode: str) -> dict:
    proc = subprocess.run([sys.executable, CHILD, path, mode], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_interrupt_inside_numba_setup_leaves_search_working(small_store):
    out = _run(small_store, "fixed")
    assert out["tripped"], "the interrupt was never sent: numba no longer imports the unicode model lazily?"
    assert out["first"] == "interrupted"  # delivered, after the setup finished
    assert out["second"] == "ok"


def test_the_same_interrupt_unprotected_breaks_numba(small_store):
    """The control: without the deferral the trip really breaks the process."""
    out = _run(small_store, "unprotected")
    assert out["tripped"] and out["first"] == "interrupted"
    assert "duplicate registration" in out["second"], (
        f"without the deferral the search still works ({out['second']}): the trip no longer "
        f"lands where numba breaks (a numba that tolerates it?); move it or drop the guard")


def test_signals_deferred_delivers_after_the_block():
    seen = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler would run at any of these bytecodes
                seen.append(1)
            seen.append("end of block")
    assert seen[-1] == "end of block"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_signals_deferred_is_a_no_op_off_the_main_thread():
    done = []

    def work():
        with signals_deferred():
            done.append(signal.getsignal(signal.SIGINT))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert done == [signal.default_int_handler]
