"""Writer processes forked from one warmed-up process, for the SIGKILL harnesses.

tests/test_crash.py and tests/test_crash_indexes.py start a fresh writer process for every
kill (about a hundred in a normal run). A fresh ``python`` spends ~1.6 CPU seconds before
its first write -- importing numpy, numba and zenstore (0.7 s) and loading numba's typing
and lowering registries (0.9 s, :func:`zenstore.kernels._kernel.numba_ready`) -- none of
which touches the store. Here one server process (``multiprocessing``'s ``forkserver``,
itself a fresh interpreter, started on first use) does that once, and every writer is a
fork of it: a new process with its own pid that opens the store, applies its operations
and is SIGKILLed exactly as before. What the harnesses check happens after the kill, in
the store, and a SIGKILLed process runs no Python code, so a forked writer and an exec'd
one leave the same store behind. The server process never runs a kernel, so GNU OpenMP is
not started and the forked writers run the parallel builds (``serial_only()`` is False).

Not covered this way: a kill that lands while a writer process is still importing
(nothing of the store is touched then). tests/test_signals.py keeps real processes: there
SIGINT / SIGTERM run Python code, including interpreter shutdown, which a forked
``multiprocessing`` child skips (it ends with ``os._exit``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys

_context = None


def _warm() -> None:
    """What every writer would do first: runs in the server process (its preload)."""
    import zenstore  # noqa: F401
    from zenstore.kernels._kernel import numba_ready

    numba_ready()


def context():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["tests._forkserver_preload"])
    return _context


def _child(target, argv: list[str], env: dict, stderr_path: str, stdout_path: str | None) -> None:
    """In the forked writer: the environment and stdio the exec'd writer had, then run."""
    for path, std in ((stderr_path, 2), (stdout_path, 1)):
        if path is not None:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, std)
            os.close(fd)
    os.environ.clear()
    os.environ.update(env)
    # the start method an exec'd writer has: multiprocessing forces the server's
    # ("forkserver") in its children, and numba's thread-pool lock would then be a named
    # semaphore the parent's resource tracker reports as leaked after every SIGKILL
    multiprocessing.set_start_method("fork", force=True)
    from zenstore import faults

    faults.arm(env.get("ZENSTORE_FAULT", ""))  # read at import: in the server, unset
    rc = target(argv)
    sys.stdout.flush()
    sys.exit(rc)


class ForkedWriter:
    """The part of ``subprocess.Popen`` the harnesses use, for a forked writer."""

    def __init__(self, target, argv: list[str], env: dict, stderr_path: str,
                 stdout_path: str | None = None) -> None:
        self._proc = context().Process(target=_child, args=(target, list(argv), dict(env), stderr_path,
                                                            stdout_path))
        self._proc.start()
        self.pid = self._proc.pid

    def poll(self):
        return self._proc.exitcode

    def send_signal(self, sig: int) -> None:
        if self._proc.exitcode is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self._proc.exitcode is None:
            os.kill(self.pid, signal.SIGKILL)
            self._proc.join()
            raise TimeoutError(f"writer {self.pid} still running after {timeout} s (killed)")
        return self._proc.exitcode

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

