"""One HTTP worker process: a read-only Store, the app, uvicorn on the shared socket.

Started by the supervisor (``python -m zenstore.server.worker``) with inherited file
descriptors: the listening socket (every worker accepts on it; the kernel spreads
connections), its end of a socketpair to the writer, the shared metrics table, and a
pipe on which it says "ready" once uvicorn is accepting. The configuration comes as JSON
in ``ZENSTORE_SERVER_CONFIG``. A worker whose supervisor dies (even by SIGKILL) stops:
Linux delivers SIGTERM on the parent's death (``PR_SET_PDEATHSIG``), and a watchdog
thread checks the parent pid everywhere else.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys
import threading
import time

CONFIG_ENV = "ZENSTORE_SERVER_CONFIG"
log = logging.getLogger("zenstore.server")


def die_with_parent(parent_pid: int) -> None:
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # died before prctl took effect
        sys.exit(0)


def _uvicorn_config(app, cfg):
    import importlib.util

    import uvicorn

    options = dict(lifespan="off", log_level="warning", access_log=False,
                   timeout_graceful_shutdown=max(1, int(cfg.graceful_seconds)), server_header=False,
                   limit_concurrency=None, backlog=2048)
    if importlib.util.find_spec("httptools") is not None:
        options["http"] = "httptools"
    if importlib.util.find_spec("uvloop") is not None:
        options["loop"] = "uvloop"
    return uvicorn.Config(app, **options)


def warm_up(store) -> None:
    """Load the search and rerank kernels (numba) before saying ready, so the first
    request is not the one that waits for them."""
    ids = store.ids()
    if len(ids):
        first = ids[0].item() if hasattr(ids[0], "item") else ids[0]
        q = store.get(first).vector
        store.search(q, 1)
        store.rerank(q, [first], top_n=1)


def run_worker(args) -> int:
    die_with_parent(args.parent_pid)
    from ..embedders import load_embedder
    from ..store import Store
    from .app import create_app
    from .config import ServerConfig
    from .keys import KeyRing
    from .metrics import Metrics
    from .service import ReadService
    from .textindex import open_lookup
    from .writes import PipeWrites

    import uvicorn

    cfg = ServerConfig.from_json(os.environ[CONFIG_ENV])
    store = Store.open(cfg.store, readonly=True, warm=True)  # the first request pays no one-time cost
    embedder = load_embedder(cfg.embedder) if cfg.embedder else None
    lookup = open_lookup(store, cfg.text_field, writer=False)
    if lookup is not None and cfg.readonly:
        lookup.watch(store)
    writes = None if args.writer_fd < 0 else PipeWrites(socket.socket(fileno=args.writer_fd))
    keyring = KeyRing(cfg.api_key_file) if cfg.api_key_file else None
    metrics = Metrics(args.metrics_fd, args.slots, args.slot)
    reads = ReadService(store, embedder=embedder, lookup=lookup, limits=cfg.limits, text_field=cfg.text_field)
    info = {"workers": cfg.workers, "readonly": cfg.readonly, "text_field": cfg.text_field,
            "embedder": cfg.embedder, "auth": keyring is not None, "version": __import__("zenstore").__version__}
    gate, _ = create_app(reads, writes, metrics=metrics, keyring=keyring, limits=cfg.limits,
                         readonly=cfg.readonly, info=info, text_field=cfg.text_field)
    warm_up(store)
    server = uvicorn.Server(_uvicorn_config(gate, cfg))
    listener = socket.socket(fileno=args.listen_fd)

    def watch():
        told = False
        while not server.should_exit:
            if not told and server.started:
                os.write(args.ready_fd, b"R")
                os.close(args.ready_fd)
                told = True
            if os.getppid() != args.parent_pid:
                server.should_exit = True
            time.sleep(0.05 if not told else 0.5)

    threading.Thread(target=watch, name="zenstore-worker-watch", daemon=True).start()
    try:
        server.run(sockets=[listener])
    finally:
        if writes is not None:
            writes.close()
        if lookup is not None:
            lookup.close()
        store.close()
        metrics.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="zenstore.server.worker")
    p.add_argument("--listen-fd", type=int, required=True)
    p.add_argument("--writer-fd", type=int, default=-1)
    p.add_argument("--metrics-fd", type=int, required=True)
    p.add_argument("--ready-fd", type=int, required=True)
    p.add_argument("--slot", type=int, required=True)
    p.add_argument("--slots", type=int, required=True)
    p.add_argument("--parent-pid", type=int, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="zenstore worker %(process)d: %(message)s")
    from ..errors import ZenstoreError

    try:
        return run_worker(args)
    except ZenstoreError as exc:
        print(f"zenstore serve: worker {args.slot}: error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
