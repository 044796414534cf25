"""Writer processes forked from a warmed-up process that still end like a real ``python``.

tests/test_signals.py interrupts writers with SIGINT / SIGTERM, which run Python code:
the writer unwinds, and then the interpreter shuts down (atexit handlers, finalizers,
module teardown, and for an uncaught KeyboardInterrupt the re-raised SIGINT). A
``multiprocessing`` child skips that shutdown (it ends with ``os._exit``), so it cannot
stand in for a writer there. A fresh ``python`` per writer spends ~1.6 CPU s importing
numba and zenstore and loading numba's registries before its first write.

This script is started once (``python tests/_zygote.py``), does that warm-up, and then
for each request on stdin forks a child. The child leaves the request loop and runs the
writer (``_signal_child.main`` or zenstore's CLI) at the top level of this script, so it
exits exactly as ``python tests/_signal_child.py ...`` / ``python -m zenstore ...`` would:
through a normal interpreter shutdown, with the same exit statuses. The server waits for
the child and writes its exit status (``waitpid`` convention: negative for a signal) to
the request's status file. It never runs a kernel, so its children run the parallel
kernel builds (GNU OpenMP was never started before the fork).

Request (one JSON line): ``{"kind": "signal_child" | "cli", "argv": [...], "env": {...},
"stderr": path, "stdout": path or null, "cwd": path or null, "status": path}``; reply:
``"<pid>\\n"`` on stdout.
"""

from __future__ import annotations

import json
import os
import sys


def _serve() -> dict:
    """The request loop; returns (in a forked child only) the request to run."""
    import zenstore  # noqa: F401
    from zenstore.kernels._kernel import numba_ready

    import _signal_child  # noqa: F401  (the writer's code, imported before the fork)

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
    if req["kind"] == "cli":  # `python -m zenstore` reads ZENSTORE_FAULT when it imports zenstore
        from zenstore import faults

        faults.arm(os.environ.get("ZENSTORE_FAULT", ""))  # in the server it was unset
    # (_signal_child.main takes ZENSTORE_FAULT out of the environment before its imports and
    # arms it itself after its warm-up)
    sys.argv = [req["kind"], *req["argv"]]


# --- the test's side ------------------------------------------------------------------------


class Zygote:
    """The server process, started on first use; ``close()`` ends it."""

    def __init__(self) -> None:
        self._proc = None
        self._runs = 0

    def start(self, kind: str, argv: list[str], env: dict, stderr_path: str, stdout_path: str | None = None,
              cwd: str | None = None) -> "Forked":
        import subprocess

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


if __name__ == "__main__":
    request = _serve()
    _become_the_writer(request)
    if request["kind"] == "cli":
        from zenstore.cli import main as cli_main

        raise SystemExit(cli_main(request["argv"]))
    import _signal_child

    sys.exit(_signal_child.main(request["argv"]))
