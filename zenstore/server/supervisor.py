"""``zenstore serve``: the supervisor process, which is also the store's single writer.

The store allows one writer and any number of readers, so the server is shaped the
same way:

- this process opens the store for writing (taking its lock), brings the text index up
  to date, binds the listening socket, and starts ``workers`` HTTP worker processes;
- each worker opens the store ``readonly=True`` and answers every read itself (readers
  see each commit on their next call); it forwards writes over its own socketpair to
  this process, where a thread per worker applies them one at a time
  (:class:`~zenstore.server.writes.WriteService`); a write is answered only after its
  batch committed;
- on SIGTERM or SIGINT the listening socket is closed here and the workers are told to
  stop: uvicorn finishes the requests in flight (writes included, the writer is still
  up), then each worker exits; then the writer threads end and the store is closed.
  A worker that dies otherwise is restarted.

If this process is SIGKILLed, its workers stop too (``worker.die_with_parent``); every
acknowledged write was committed, and the next ``zenstore serve`` (any writer) opens
the store as the engine's crash recovery leaves it: complete batches only.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

from ..errors import InvalidArgument, ZenstoreError
from .config import ServerConfig
from .metrics import create_table
from .worker import CONFIG_ENV

log = logging.getLogger("zenstore.server")

# a worker imports numba and FastAPI, maps the store, loads the embedder and its kernels: seconds
# with a warm numba cache, over a minute on a loaded 2-core machine with a cold one
READY_TIMEOUT = 600.0
RESTARTS_PER_MINUTE = 5


class ServerError(ZenstoreError):
    """The server could not start or a worker kept failing."""


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise ServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


class Worker:
    """One worker process and the supervisor's ends of its pipes."""

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.proc: subprocess.Popen | None = None
        self.conn: socket.socket | None = None
        self.ready_r: int | None = None
        self.thread: threading.Thread | None = None


class Supervisor:
    def __init__(self, cfg: ServerConfig, *, out=sys.stdout) -> None:
        self.cfg = cfg
        self.out = out
        self.stop = threading.Event()
        self.store = None
        self.text_index = None
        self.writes = None
        self.listener: socket.socket | None = None
        self.metrics_fd: int | None = None
        self.workers = [Worker(i) for i in range(cfg.workers)]
        self.restarts: list[float] = []

    # --- start ---------------------------------------------------------------------------

    def open(self) -> None:
        from ..embedders import load_embedder
        from ..store import Store
        from .keys import KeyRing
        from .textindex import open_lookup
        from .writes import WriteService

        cfg = self.cfg
        if not cfg.loopback and cfg.api_key_file is None:
            raise InvalidArgument(f"refusing to listen on {cfg.host} without --api-key-file: anyone who can "
                                  f"reach it could read and write the store (create keys with "
                                  f"'zenstore keys add FILE --scope read')")
        if cfg.api_key_file:
            KeyRing(cfg.api_key_file)  # readable and well-formed, or fail now
        self.store = Store.open(cfg.store, readonly=cfg.readonly)
        if cfg.embedder:
            emb = load_embedder(cfg.embedder)
            if emb.dim != self.store.dim:
                raise InvalidArgument(f"the embedder {cfg.embedder!r} gives {emb.dim}-d vectors; the store "
                                      f"{cfg.store} holds {self.store.dim}-d ones")
        if not cfg.readonly:
            self.text_index = open_lookup(self.store, cfg.text_field, writer=True)
            self.writes = WriteService(self.store, self.text_index)
        self.listener = bind(cfg.host, cfg.port)
        self.metrics_fd = create_table(cfg.workers)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def spawn(self, w: Worker) -> None:
        child_conn = None
        if self.writes is not None:
            w.conn, child_conn = socket.socketpair()
            child_conn.set_inheritable(True)
        ready_r, ready_w = os.pipe()
        os.set_inheritable(ready_w, True)
        fds = [self.listener.fileno(), self.metrics_fd, ready_w] + ([child_conn.fileno()] if child_conn else [])
        cmd = [sys.executable, "-m", "zenstore.server.worker", "--listen-fd", str(self.listener.fileno()),
               "--metrics-fd", str(self.metrics_fd), "--ready-fd", str(ready_w), "--slot", str(w.slot),
               "--slots", str(self.cfg.workers), "--parent-pid", str(os.getpid()),
               "--writer-fd", str(child_conn.fileno() if child_conn else -1)]
        env = dict(os.environ, **{CONFIG_ENV: self.cfg.to_json()})
        w.proc = subprocess.Popen(cmd, pass_fds=fds, env=env, start_new_session=False)
        os.close(ready_w)
        if child_conn is not None:
            child_conn.close()
            w.thread = threading.Thread(target=self.writes.serve_connection, args=(w.conn,),
                                        name=f"zenstore-writer-{w.slot}", daemon=True)
            w.thread.start()
        w.ready_r = ready_r

    def wait_ready(self, w: Worker, timeout: float) -> None:
        import select

        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ServerError(f"worker {w.slot} did not become ready in {timeout:.0f} s")
            if self.stop.is_set():  # SIGTERM while starting: stop waiting, shut down
                return
            r, _, _ = select.select([w.ready_r], [], [], min(left, 0.2))
            if r and os.read(w.ready_r, 1) == b"R":
                os.close(w.ready_r)
                w.ready_r = None
                return
            if w.proc.poll() is not None:
                raise ServerError(f"worker {w.slot} exited with code {w.proc.returncode} while starting "
                                  f"(its error is above)")

    # --- run -----------------------------------------------------------------------------

    def _on_signal(self, signum, frame) -> None:
        self.stop.set()

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.open()
            for w in self.workers:
                self.spawn(w)
            for w in self.workers:
                self.wait_ready(w, READY_TIMEOUT)
            if self.stop.is_set():
                return 0
            host, port = self.address
            shown = f"[{host}]" if ":" in host else host
            mode = "read-only" if self.cfg.readonly else "read-write"
            print(f"zenstore serve: listening on http://{shown}:{port} ({self.cfg.workers} worker(s), {mode}, "
                  f"store {self.cfg.store})", file=self.out, flush=True)
            while not self.stop.wait(0.25):
                self._check_workers()
            return 0
        finally:
            self.shutdown()
            for s, h in previous.items():
                signal.signal(s, h)

    def _check_workers(self) -> None:
        for w in self.workers:
            if w.proc is None or w.proc.poll() is None or self.stop.is_set():
                continue
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < 60] + [now]
            if len(self.restarts) > RESTARTS_PER_MINUTE:
                log.error("workers keep exiting; stopping the server")
                self.stop.set()
                raise ServerError(f"worker {w.slot} exited with code {w.proc.returncode}; more than "
                                  f"{RESTARTS_PER_MINUTE} restarts in a minute, giving up")
            print(f"zenstore serve: worker {w.slot} exited with code {w.proc.returncode}; restarting it",
                  file=sys.stderr, flush=True)
            self._reap(w)
            self.spawn(w)
            self.wait_ready(w, READY_TIMEOUT)

    def _reap(self, w: Worker) -> None:
        if w.ready_r is not None:
            os.close(w.ready_r)
            w.ready_r = None
        if w.conn is not None:
            w.conn.close()  # its writer thread ends
            w.conn = None

    # --- stop ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Workers drain and exit (in-flight requests finish), then the writer closes the store."""
        if self.listener is not None:
            self.listener.close()
        live = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for w in live:
            w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.cfg.graceful_seconds + 5
        for w in live:
            try:
                w.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker %d did not stop in time; killing it", w.slot)
                w.proc.kill()
                w.proc.wait()
        for w in self.workers:
            if w.thread is not None:
                w.thread.join(timeout=10)  # finishes the write it is applying, then sees EOF
            self._reap(w)
        if self.writes is not None:
            with self.writes.lock:  # no write in progress from here on
                self._close_store()
        else:
            self._close_store()
        if self.metrics_fd is not None:
            os.close(self.metrics_fd)
            self.metrics_fd = None

    def _close_store(self) -> None:
        if self.text_index is not None:
            self.text_index.close()
            self.text_index = None
        if self.store is not None:
            self.store.close()
            self.store = None


def serve(cfg: ServerConfig, *, out=sys.stdout) -> int:
    """Run the server until SIGTERM / SIGINT; returns the exit code (0 after a clean stop)."""
    return Supervisor(cfg, out=out).run()
