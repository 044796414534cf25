#!/usr/bin/env python
"""FastAPI vs plain Starlette on uvicorn: the per-request cost of the framework alone.

Two servers on 127.0.0.1, the same uvicorn (httptools, uvloop) and the same handler
work -- parse a Cohere v2 rerank body of 100 document texts and answer a fixed 10-result
JSON -- one validating with zenstore's pydantic model (``RerankV2Request``, FastAPI, as
``zenstore serve`` does), one with ``json.loads`` on Starlette. Requests alternate
between the two, one client, so machine load drifts over both alike; reported: the
median latency of each and the median of the pairs' differences.

    python benchmarks/serve_stack.py --pairs 1000
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401

import argparse  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import _common  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

APPS = {
    "fastapi": """
from fastapi import FastAPI
from fastapi.responses import Response
from zenstore.server.schemas import RerankV2Request
import json
app = FastAPI()
ANSWER = json.dumps({"id": "x", "results": [{"index": i, "relevance_score": 0.5} for i in range(10)]}).encode()
@app.post("/v2/rerank")
def rerank(body: RerankV2Request):
    assert len(body.documents) == 100
    return Response(ANSWER, media_type="application/json")
""",
    "starlette": """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from starlette.concurrency import run_in_threadpool
import json
ANSWER = json.dumps({"id": "x", "results": [{"index": i, "relevance_score": 0.5} for i in range(10)]}).encode()
def work(raw):
    body = json.loads(raw)
    assert len(body["documents"]) == 100
    return ANSWER
async def rerank(request):
    return Response(await run_in_threadpool(work, await request.body()), media_type="application/json")
app = Starlette(routes=[Route("/v2/rerank", rerank, methods=["POST"])])
""",
}

RUNNER = """
import socket, sys, uvicorn
{app}
sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(128)
print("port", sock.getsockname()[1], flush=True)
uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, http="httptools", loop="uvloop",
                              lifespan="off")).run(sockets=[sock])
"""


def start(name: str):
    proc = subprocess.Popen([sys.executable, "-c", RUNNER.format(app=APPS[name])], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    port = int(re.search(r"port (\d+)", line).group(1))
    return proc, f"http://127.0.0.1:{port}"


def run(args) -> dict:
    body = {"model": "m", "query": "what causes scurvy?", "top_n": 10,
            "documents": [f"synthetic document number {i} with some words in it" for i in range(100)]}
    servers = {name: start(name) for name in APPS}
    lat = {name: [] for name in APPS}
    try:
        clients = {name: httpx.Client(base_url=url, timeout=30) for name, (_, url) in servers.items()}
        for i in range(args.pairs + 20):
            for name, c in clients.items():
                t = time.perf_counter()
                assert c.post("/v2/rerank", json=body).status_code == 200
                if i >= 20:
                    lat[name].append((time.perf_counter() - t) * 1e3)
        for c in clients.values():
            c.close()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    fa, st = np.asarray(lat["fastapi"]), np.asarray(lat["starlette"])
    return {"machine": _common.machine_info(), "pairs": args.pairs,
            "command": _common.rerun_command("benchmarks/serve_stack.py", args.argv),
            "fastapi_p50_ms": float(np.median(fa)), "starlette_p50_ms": float(np.median(st)),
            "fastapi_p99_ms": float(np.percentile(fa, 99)), "starlette_p99_ms": float(np.percentile(st, 99)),
            "fastapi_minus_starlette_p50_ms": float(np.median(fa - st))}


def report(res: dict) -> str:
    return "\n".join([
        _common.machine_line(res["machine"]),
        f"rerank body of 100 texts, one client, {res['pairs']} alternating pairs:",
        f"  FastAPI + pydantic model: p50 {res['fastapi_p50_ms']:.3f} ms, p99 {res['fastapi_p99_ms']:.3f} ms",
        f"  Starlette + json.loads:   p50 {res['starlette_p50_ms']:.3f} ms, p99 {res['starlette_p99_ms']:.3f} ms",
        f"  FastAPI costs {res['fastapi_minus_starlette_p50_ms']:.3f} ms per request more (median of pairs)",
        f"rerun: {res['command']}"])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1000)
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks", "serve_stack.json"))
    args = p.parse_args(argv)
    args.argv = argv
    return _common.publish(run(args), args.out, report)


if __name__ == "__main__":
    main()
