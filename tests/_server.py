"""Helpers for the server tests: a small text store and a real ``zenstore serve`` process.

The server runs as a subprocess of this interpreter's ``zenstore`` (``python -m
zenstore``), on 127.0.0.1 with ``--port 0``; the port is read from the line it prints
once every worker is ready.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

import zenstore
from tests._server_embedder import DIM, embed

ROOT = Path(__file__).resolve().parents[1]
EMBEDDER = "python:tests._server_embedder:HashEmbedder"
# the limits the shared API server (conftest.api_server) runs with
LIMITS = ["--max-body-bytes", "400000", "--max-documents", "50", "--max-k", "20", "--max-batch", "16"]
START_TIMEOUT = 600.0  # a loaded 2-core machine, cold numba cache: two Python start-ups, numba, uvicorn

TOPICS = ["astronomy", "biology", "chemistry", "geology", "history", "music", "physics"]


def doc_text(i: int) -> str:
    return f"document {i} is about {TOPICS[i % len(TOPICS)]} and item{i}"


def build_store(path, n: int = 300) -> list[str]:
    """A 64-d cosine store of ``n`` documents with payload ``{"text", "n", "topic"}``."""
    texts = [doc_text(i) for i in range(n)]
    with zenstore.Store.create(path, dim=DIM, metric="cosine", n_base=8) as store:
        store.add(list(range(n)), embed(texts),
                  payloads=[{"text": t, "n": i, "topic": TOPICS[i % len(TOPICS)]} for i, t in enumerate(texts)])
    return texts


class Server:
    """``zenstore serve STORE --port 0 ARGS...`` as a child process."""

    def __init__(self, store, *args: str, env: dict | None = None) -> None:
        self.cmd = [sys.executable, "-m", "zenstore", "serve", str(store), "--port", "0", *args]
        self.env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                        **(env or {}))
        self.proc: subprocess.Popen | None = None
        self.url: str | None = None
        self.lines: list[str] = []
        self._pump: threading.Thread | None = None

    def start(self) -> Server:
        self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        found = threading.Event()

        def pump():
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"listening on (http://\S+)", line)
                if m and self.url is None:
                    self.url = m.group(1)
                    found.set()
            found.set()

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()
        found.wait(START_TIMEOUT)
        if self.url is None:
            self.stop()
            raise RuntimeError("zenstore serve did not start:\n" + "".join(self.lines))
        return self

    def output(self) -> str:
        return "".join(self.lines)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 120.0) -> int:
        code = self.proc.wait(timeout)
        self.close()
        return code

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)  # graceful shutdown: up to --graceful-seconds + 5 s, then joins
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        """Release the output pipe (once the process has exited)."""
        if self.proc.poll() is not None and self._pump is not None:
            self._pump.join(10)
            self._pump = None
            self.proc.stdout.close()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def wait_gone(pids, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}") and _not_zombie(p)]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def query_vector(text: str) -> np.ndarray:
    return embed([text])[0]
