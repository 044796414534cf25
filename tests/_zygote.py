"""Test child processes forked from one warmed-up process, ending like a real ``python``.

The crash, signal, integrity and CLI tests run writers, readers and ``zenstore`` commands
in processes of their own (a few hundred in a normal run) and SIGKILL / SIGINT / SIGTERM
them. A fresh ``python`` spends ~1.6 CPU s importing numpy, numba and zenstore and
loading numba's typing and lowering registries (``numba_ready``) before it touches a
store; none of that is what those tests check.

This script is started once per test session (``python tests/_zygote.py``, lazily, by
:data:`SHARED`), does that warm-up, and then for each request on stdin forks a child.
The child leaves the request loop and runs its entry point (see ``KINDS``) at the top
level of this script, so it exits as ``python tests/_signal_child.py ...`` or
``python -m zenstore ...`` would: through a normal interpreter shutdown (atexit
handlers, finalizers, an uncaught KeyboardInterrupt re-raising SIGINT), with the same
exit statuses -- SIGINT / SIGTERM run Python code up to the end, so a ``multiprocessing``
child (which ends with ``os._exit``) could not stand in for one. The server waits for
the child and writes its exit status (``waitpid`` convention: negative for a signal) to
the request's status file, and only then reads the next request: **one child at a time**
(a second request waits until the first child has exited). Every use runs one child at
once; a test that needs two concurrent children (say a writer and a reader) must start
the second some other way. It never runs a kernel, so GNU OpenMP is not started before
a fork and the children run the parallel kernel builds (``serial_only()`` is False).

Not covered this way: a signal that lands while a child is still importing (nothing of
a store is touched then). ``--version``, a bad command and the reruns of interrupted
ingests stay fresh ``python -m zenstore`` processes.

Request (one JSON line): ``{"kind": one of KINDS, "argv": [...], "env": {...}, "stderr":
path, "stdout": path or null, "cwd": path or null, "status": path}``; reply:
``"<pid>\\n"`` on stdout.
"""

from __future__ import annotations

import json
import os
import sys


# kind -> (module, function, whether ZENSTORE_FAULT is armed from the environment as
# importing zenstore does: _signal_child.main takes it out of the environment before its
# imports and arms it itself after its warm-up)
KINDS = {
    "cli": ("zenstore.cli", "main", True),
    "crash_child": ("_crash_child", "main", True),
    "signal_child": ("_signal_child", "main", False),
    "integrity_child": ("_integrity_child", "raw_catalog_check", True),
}


def _serve() -> dict:
    """The request loop; returns (in a forked child only) the request to run."""
    import importlib

    from zenstore.kernels._kernel import numba_ready

    for module, _, _ in KINDS.values():  # the children's code, imported before the fork
        importlib.import_module(module)
    numba_ready()
    print("ready", flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        pid = os.fork()
        if pid == 0:
            return req
        print(pid, flush=True)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        tmp = req["status"] + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(code))
        os.rename(tmp, req["status"])
    sys.exit(0)


def _become_the_writer(req: dict) -> None:
    """In the child: the stdio and environment the exec'd writer had."""
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    for std, path in ((2, req["stderr"]), (1, req.get("stdout"))):
        if path:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            os.dup2(fd, std)
            os.close(fd)
    if req.get("cwd"):
        os.chdir(req["cwd"])
    sys.stdin = open(0, closefd=False)
    os.environ.clear()
    os.environ.update(req["env"])
    if KINDS[req["kind"]][2]:
        from zenstore import faults

        faults.arm(os.environ.get("ZENSTORE_FAULT", ""))  # in the server it was unset
    sys.argv = [req["kind"], *req["argv"]]


# --- the test's side ------------------------------------------------------------------------


class Zygote:
    """The server process, started on first use; ``close()`` ends it (and reaps it, so
    that its children's CPU time is counted in the test run's)."""

    def __init__(self) -> None:
        self._proc = None
        self._runs = 0

    def start(self, kind: str, argv: list[str], env: dict, stderr_path: str, stdout_path: str | None = None,
              cwd: str | None = None) -> "Forked":
        import subprocess

        assert kind in KINDS, kind

        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, text=True)
            assert self._proc.stdout.readline().strip() == "ready", "the zygote did not start"
        self._runs += 1
        status = f"{stderr_path}.status"
        req = {"kind": kind, "argv": [str(a) for a in argv], "env": dict(env), "stderr": str(stderr_path),
               "status": status, "stdout": None if stdout_path is None else str(stdout_path),
               "cwd": None if cwd is None else str(cwd)}
        self._proc.stdin.write(json.dumps(req) + "\n")
        self._proc.stdin.flush()
        return Forked(int(self._proc.stdout.readline()), status)

    def close(self) -> None:
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
            self._proc.stdout.close()
            self._proc = None


class Forked:
    """The part of ``subprocess.Popen`` the signal tests use, for a zygote's child."""

    def __init__(self, pid: int, status_path: str) -> None:
        self.pid = pid
        self._status = status_path
        self.returncode = None

    def poll(self):
        if self.returncode is None and os.path.exists(self._status):
            with open(self._status) as f:
                self.returncode = int(f.read())
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        import signal
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                raise TimeoutError(f"writer {self.pid} still running after {timeout} s (killed)")
            time.sleep(0.002)
        return self.returncode


SHARED = Zygote()  # the session's one server (closed by tests/conftest.py at the end)


if __name__ == "__main__":
    import importlib

    request = _serve()
    _become_the_writer(request)
    module, function, _ = KINDS[request["kind"]]
    sys.exit(getattr(importlib.import_module(module), function)(request["argv"]))

