#!/usr/bin/env python
"""``zenstore serve`` under load, against the same calls made in-process, in one run.

Builds (once, streamed from ``zenstore.synth`` via tools/gendata.py's spec) an N x 7680
store whose payloads hold a text per document, starts a real ``zenstore serve`` on
127.0.0.1, and drives it with C concurrent clients (asyncio + httpx, one connection
each) for each of:

- ``rerank100-ids``: POST /v2/rerank, a text query and 100 candidate ids (as strings);
- ``rerank100-texts``: the same with 100 document texts (resolved through the text index);
- ``search``: POST /v1/search, a base64 7680-d query vector, k=10, nprobe 16;

with and without a concurrent writer (a client upserting 16-row base64 batches as fast
as they are acknowledged). Each cell is bounded by a request count and a time limit.
The in-process cost of the same request (``ReadService`` on a read-only Store in this
process: embedding, resolution, scoring) is measured in the same run, alternating call
by call with the same request over HTTP; ``overhead`` is the median of the pairs'
differences (a busy shared machine drifts over both alike).

    python benchmarks/serve.py --n 20000                    # ~5 min on the 2-core VM
    python benchmarks/serve.py --n 100000 --requests 2000
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import _env  # noqa: E402,F401  first: the thread environment before numpy/numba load

import argparse  # noqa: E402
import asyncio  # noqa: E402
import base64  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402

from zenstore import Store  # noqa: E402
from zenstore.synth import SyntheticEmbeddings  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDER = "python:_serve_embedder:embedder"


def doc_text(i: int) -> str:
    return f"synthetic document number {i}"


def build_store(path: str, n: int, log=print) -> None:
    import gendata

    if os.path.exists(path):
        with Store.open(path, readonly=True) as s:
            if len(s) >= n:  # earlier runs' writer added rows beyond n: candidates stay below n
                return
        raise SystemExit(f"{path} exists with fewer than {n} rows; remove it")
    gen = SyntheticEmbeddings(gendata.make_spec(7680, seed=0))
    t0 = time.perf_counter()
    with Store.create(path, dim=7680, metric="cosine") as store:
        for first, block in gen.iter_docs(n, batch=4096):
            ids = list(range(first, first + len(block)))
            store.add(ids, block, payloads=[{"text": doc_text(i)} for i in ids])
            log(f"built {first + len(block):,}/{n:,} rows, {time.perf_counter() - t0:.0f} s")


def quantiles(lat_ms: list[float]) -> dict:
    a = np.asarray(lat_ms)
    if not len(a):
        return {"p50_ms": None, "p99_ms": None, "p999_ms": None}
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "p999_ms": float(np.percentile(a, 99.9))}


class Requests:
    """The request bodies of each kind, cycling through seeded choices."""

    def __init__(self, n: int, seed: int = 1) -> None:
        rng = np.random.default_rng(seed)
        self.cands = [rng.choice(n, 100, replace=False) for _ in range(64)]
        gen = SyntheticEmbeddings(__import__("gendata").make_spec(7680, seed=0))
        self.queries = gen.queries(64)
        self.b64 = [base64.b64encode(q.astype("<f4").tobytes()).decode() for q in self.queries]

    def body(self, kind: str, i: int) -> tuple[str, dict]:
        j = i % 64
        if kind == "rerank100-ids":
            return "/v2/rerank", {"model": "zenstore", "query": f"query {j}", "documents": [str(c) for c in self.cands[j]],
                                  "top_n": 10}
        if kind == "rerank100-texts":
            return "/v2/rerank", {"model": "zenstore", "query": f"query {j}",
                                  "documents": [doc_text(int(c)) for c in self.cands[j]], "top_n": 10}
        return "/v1/search", {"vector": self.b64[j], "k": 10, "nprobe": 16, "with_payload": False}


def in_process(store_path: str, reqs: Requests, kinds, count: int, url: str) -> dict:
    """The same request in-process (``ReadService`` on a read-only Store here) and over
    HTTP (one client), alternating call by call so that the machine's load drifts over
    both alike; the overhead is the median of the per-pair differences."""
    import _serve_embedder

    from zenstore.server.service import ReadService
    from zenstore.server.textindex import open_lookup

    out = {}
    with Store.open(store_path, readonly=True) as store, httpx.Client(base_url=url, timeout=30) as client:
        lookup = open_lookup(store, "text", writer=False)
        svc = ReadService(store, embedder=_serve_embedder.embedder(), lookup=lookup)
        for kind in kinds:
            local, remote = [], []
            for i in range(count + 5):
                path, body = reqs.body(kind, i)
                t = time.perf_counter()
                if path == "/v2/rerank":
                    svc.rerank(body["query"], body["documents"], body["top_n"])
                else:
                    svc.search(vector=body["vector"], k=10, nprobe=16, with_payload=False)
                t1 = time.perf_counter()
                r = client.post(path, json=body)
                t2 = time.perf_counter()
                assert r.status_code == 200, r.text
                if i >= 5:
                    local.append((t1 - t) * 1e3)
                    remote.append((t2 - t1) * 1e3)
            diff = np.asarray(remote) - np.asarray(local)
            out[kind] = {**quantiles(local), "http_p50_ms": float(np.median(remote)),
                         "overhead_p50_ms": float(np.median(diff))}
        if lookup is not None:
            lookup.close()
    return out


async def drive(url: str, reqs: Requests, kind: str, clients: int, count: int, seconds: float) -> dict:
    lat, errors, done = [], [0], [0]
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        for w in range(min(clients, 4)):  # warm the connections
            path, body = reqs.body(kind, w)
            await client.post(path, json=body)

        async def one_client(c: int):
            i = c
            while done[0] < count and time.perf_counter() < deadline:
                done[0] += 1
                path, body = reqs.body(kind, i)
                i += clients
                t = time.perf_counter()
                try:
                    r = await client.post(path, json=body)
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append((time.perf_counter() - t) * 1e3)
                else:
                    errors[0] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client(c) for c in range(clients)))
        wall = time.perf_counter() - t0
    return {"requests": len(lat) + errors[0], "errors": errors[0], "seconds": wall,
            "throughput_rps": len(lat) / wall if wall else None, **quantiles(lat)}


def writer_loop(url: str, first_id: int, stop, acked, errors) -> None:
    """Upsert 16-row batches of new ids (base64 vectors) until ``stop`` is set. Runs in a
    process of its own, so the load generator's event loop does not starve it."""
    rng = np.random.default_rng(7)
    vectors = [base64.b64encode(v.astype("<f4").tobytes()).decode()
               for v in rng.standard_normal((16, 7680)).astype(np.float32)]
    next_id = first_id
    with httpx.Client(base_url=url, timeout=60) as client:
        while not stop.is_set():
            ids = list(range(next_id, next_id + 16))
            r = client.post("/v1/upsert", json={"ids": ids, "vectors": vectors,
                                                "payloads": [{"text": f"written {i}"} for i in ids]})
            if r.status_code == 200:
                acked.value += 16
                next_id += 16
            else:
                errors.value += 1


class Writer:
    def __init__(self, url: str, first_id: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.stop_event, self.acked_v, self.errors_v = ctx.Event(), ctx.Value("q", 0), ctx.Value("q", 0)
        self.proc = ctx.Process(target=writer_loop, args=(url, first_id, self.stop_event, self.acked_v, self.errors_v))

    def start(self) -> None:
        self.proc.start()

    def join(self, timeout: float) -> None:
        self.proc.join(timeout)
        self.acked, self.errors = self.acked_v.value, self.errors_v.value


def start_server(store: str, workers: int) -> tuple[subprocess.Popen, str]:
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "benchmarks") + os.pathsep + ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "zenstore", "serve", store, "--port", "0", "--workers",
                             str(workers), "--embedder", EMBEDDER], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, m.group(1)
    raise SystemExit("zenstore serve did not start")


def run(args) -> dict:
    store = os.path.join(args.data_dir, f"serve-n{args.n}.zen")
    os.makedirs(args.data_dir, exist_ok=True)
    build_store(store, args.n)
    reqs = Requests(args.n)
    res = {"machine": _common.machine_info(), "n": args.n, "dim": 7680, "workers": args.workers,
           "requests_per_cell": args.requests, "seconds_per_cell": args.seconds,
           "command": _common.rerun_command("benchmarks/serve.py", args.argv), "in_process": {}, "cells": []}
    proc, url = start_server(store, args.workers)
    try:
        res["in_process"] = in_process(store, reqs, args.kinds, args.inproc, url)
        for writer_on in (False, True):
            writer = None
            if writer_on:
                writer = Writer(url, 10 * args.n)
                writer.start()
                deadline = time.monotonic() + 120
                while writer.acked_v.value == 0 and time.monotonic() < deadline:  # writing before we measure
                    time.sleep(0.2)
            for kind in args.kinds:
                for clients in args.clients:
                    cell = asyncio.run(drive(url, reqs, kind, clients, args.requests, args.seconds))
                    cell.update(kind=kind, clients=clients, writer=writer_on)
                    res["cells"].append(cell)
                    print(f"{kind:16} clients {clients:>2} writer {str(writer_on):5} "
                          f"{cell['throughput_rps']:8.1f} req/s p50 {cell['p50_ms']:7.2f} p99 {cell['p99_ms']:7.2f} "
                          f"p999 {cell['p999_ms']:7.2f} ms errors {cell['errors']}", flush=True)
            if writer is not None:
                res["writer_rows_during_cells"] = writer.acked_v.value
                writer.stop_event.set()
                writer.join(60)
                res["writer"] = {"rows_acked": writer.acked, "errors": writer.errors}
    finally:
        proc.terminate()
        proc.wait(60)
    return res


def report(res: dict) -> str:
    lines = [_common.machine_line(res["machine"]),
             f"store {res['n']:,} x {res['dim']}, {res['workers']} worker(s); in-process vs HTTP, one client, "
             f"call by call:"]
    for kind, q in res["in_process"].items():
        lines.append(f"  {kind:16} in-process p50 {q['p50_ms']:.2f} ms p99 {q['p99_ms']:.2f} ms; HTTP p50 "
                     f"{q['http_p50_ms']:.2f} ms; overhead (median of pairs) {q['overhead_p50_ms']:.2f} ms")
    cols = [("kind", "kind", ""), ("clients", "clients", ""), ("writer", "writer", ""),
            ("throughput_rps", "req/s", ".1f"), ("p50_ms", "p50 ms", ".2f"), ("p99_ms", "p99 ms", ".2f"),
            ("p999_ms", "p99.9 ms", ".2f"), ("errors", "errors", ""), ("requests", "requests", "")]
    lines.append(_common.table(res["cells"], cols))
    if "writer" in res:
        lines.append(f"concurrent writer: {res['writer']['rows_acked']:,} rows acknowledged, "
                     f"{res['writer']['errors']} errors")
    lines.append(f"rerun: {res['command']}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--kinds", nargs="+", default=["rerank100-ids", "rerank100-texts", "search"])
    p.add_argument("--requests", type=int, default=1000, help="per cell (bounded also by --seconds)")
    p.add_argument("--seconds", type=float, default=20.0, help="per cell")
    p.add_argument("--inproc", type=int, default=300, help="in-process calls per kind")
    p.add_argument("--data-dir", default=os.path.join(ROOT, "data"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks", "serve.json"))
    args = p.parse_args(argv)
    args.argv = argv
    return _common.publish(run(args), args.out, report)


if __name__ == "__main__":
    main()
