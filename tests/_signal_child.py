"""Writer process for the signal tests (tests/test_signals.py).

Run as ``python tests/_signal_child.py STORE ACKFILE SEED N_OPS START MODE`` with the plan
of tests/_crash_child.py. Unlike the SIGKILL harness, SIGINT and SIGTERM run Python code:
Ctrl-C raises KeyboardInterrupt wherever the writer is, and a service's SIGTERM handler
typically raises SystemExit. ``MODE``:

- ``die``: the interrupt ends the process (exit 1 for SIGINT's KeyboardInterrupt, 143 for
  SIGTERM; the handler ``sys.exit(143)`` is installed);
- ``keep``: the writer catches the interrupt and carries on with the *same* ``Store``
  object, as a notebook user or a service that swallows SIGTERM would: the interrupted
  call is retried in an idempotent form (add -> upsert, delete -> missing_ok, train only
  if the store is still untrained) until it returns.

After each call returns, ``"<op index>\\n"`` is appended to ACKFILE.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
import tempfile

from _crash_child import STORE_OPTIONS, apply, make_plan, op_payloads, op_vectors


_calm = False  # set while an ack is written and the plan steps on: signals wait
_waiting: list[int] = []


def _interrupt(signum, frame):
    """SIGINT -> KeyboardInterrupt, SIGTERM -> SystemExit(143), as Python's default and a
    service's handler do. Set for both with ``signal.signal``: blocking the signals with
    ``pthread_sigmask`` holds only the main thread, and once numba's threads exist the
    kernel hands the signal to one of them and Python still runs the handler here."""
    if _calm:
        _waiting.append(signum)
        return
    _raise(signum)


def _raise(signum):
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    sys.exit(143)


def apply_idempotent(store, op: dict) -> None:
    kind = op["kind"]
    if kind in ("add", "upsert"):
        store.upsert(op["ids"], op_vectors(op), payloads=op_payloads(op))
    elif kind == "delete":
        store.delete(op["ids"], missing_ok=True)
    elif kind == "train":
        if store.stats()["n_base"] == 0:
            store.train(op_vectors(op))
    else:
        store.compact()


def warm_up(root: str) -> None:
    """Compile (or load from cache) every kernel the plan will use, on a scratch store.

    An interrupt inside numba's first compilation of a kernel breaks numba for the rest of
    the process (a half-imported registry module: "duplicate registration" KeyErrors) --
    a separate finding with its own test (tests/test_signals.py); here the writer's own
    interrupt handling is under test.
    """
    import numpy as np

    from zenstore import Store

    x = np.random.default_rng(0).standard_normal((64, STORE_OPTIONS["dim"])).astype(np.float32)
    with Store.create(os.path.join(root, "warm.zen"), **STORE_OPTIONS) as s:
        s.add(list(range(48)), x[:48], payloads=[{"i": 1}] * 48)
        s.upsert(list(range(40, 64)), x[40:])
        s.delete([1, 2])
        s.search(x[0], k=5)
        s.search_batch(x[:3], k=5, nprobe=2)
        s.rerank(x[0], [3, 4])
        s.get(5)
        s.compact()


def main(argv: list[str]) -> int:
    path, ack_path, seed, n_ops, start, mode = (argv[0], argv[1], int(argv[2]), int(argv[3]),
                                                int(argv[4]), argv[5])
    global _calm
    # a writer that hangs prints every thread's stack (to the stderr the test reports) and
    # exits, before the parent's 180 s wait gives up on it
    faulthandler.dump_traceback_later(150, exit=True)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    fault_spec = os.environ.pop("ZENSTORE_FAULT", "")  # armed after the warm-up
    from zenstore import Store, faults

    plan = make_plan(seed, n_ops)
    if mode == "keep":
        warm_up(tempfile.mkdtemp(prefix="warm-", dir=os.path.dirname(ack_path)))
    faults.arm(fault_spec)
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = Store.open(path) if os.path.exists(path) else Store.create(path, **STORE_OPTIONS)
    os.write(fd, b"start\n")
    interrupts = 0
    i, retry = start, False
    while i < len(plan):
        try:
            if mode == "die" or not retry:
                apply(store, plan[i])
            else:
                apply_idempotent(store, plan[i])
            # the ack and the step to the next op happen together: a signal waits here
            _calm = True
            os.write(fd, f"{plan[i]['i']}\n".encode())
            i, retry = i + 1, False
            _calm = False
            if _waiting:
                _raise(_waiting.pop())
        except (KeyboardInterrupt, SystemExit):
            _waiting.clear()
            if mode == "die":
                raise
            interrupts += 1
            retry = True
    # the parent may still be signalling: ignored from here, in every thread and through
    # interpreter shutdown (which puts Python-set handlers back to SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    store.close()
    os.write(fd, f"done {interrupts}\n".encode())
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
