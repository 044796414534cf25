"""How ``zenstore serve`` runs: several workers beside one writer, read-only, graceful
SIGTERM, a crashed worker, and the settings it refuses to start with."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

import zenstore
from tests._server import EMBEDDER, ROOT, Server, build_store, children_of, doc_text, wait_gone
from tests._server_embedder import GATE_ENV, embed

GATED = "python:tests._server_embedder:GatedHashEmbedder"


def test_two_workers_one_writer_read_your_writes(tmp_path):
    build_store(tmp_path / "s.zen", n=50)
    with Server(tmp_path / "s.zen", "--workers", "2", "--embedder", EMBEDDER) as srv:
        workers = children_of(srv.proc.pid)
        assert len(workers) == 2
        for i in range(16):  # a new connection each time: the kernel spreads them over both workers
            vec = embed([f"written {i}"])[0].tolist()
            r = httpx.post(srv.url + "/v1/upsert", json={"ids": [1000 + i], "vectors": [vec],
                                                          "payloads": [{"text": f"written {i}"}]})
            assert r.status_code == 200, r.text
            got = httpx.get(f"{srv.url}/v1/records/{1000 + i}")  # acknowledged => visible everywhere
            assert got.status_code == 200 and got.json()["payload"] == {"text": f"written {i}"}
            res = httpx.post(srv.url + "/v2/rerank", json={"query": "q", "documents": [f"written {i}"]}).json()
            assert res["results"][0]["stored_id"] == 1000 + i
        metrics = httpx.get(srv.url + "/metrics").text  # both workers' counts, summed
        line = next(x for x in metrics.splitlines()
                    if x.startswith('zenstore_http_requests_total{endpoint="/v1/upsert",status="200"}'))
        assert int(line.split()[-1]) == 16
        assert "zenstore_server_workers 2" in metrics
        # a worker that dies is replaced; the server keeps answering
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while True:
            now = children_of(srv.proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            assert time.monotonic() < deadline, srv.output()
            time.sleep(0.2)
        for _ in range(10):
            assert httpx.get(srv.url + "/v1/records/1015").status_code == 200
        assert "worker 0 exited" in srv.output() or "worker 1 exited" in srv.output()
        assert srv.stop() == 0


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _refuses_connections(url: str) -> bool:
    try:
        httpx.get(url + "/healthz", timeout=5)
    except httpx.ConnectError:
        return True
    except httpx.HTTPError:
        pass
    return False


def test_sigterm_finishes_requests_in_flight_then_closes_the_store(tmp_path):
    build_store(tmp_path / "s.zen", n=50)
    gate = tmp_path / "gate"
    gate.mkdir()
    srv = Server(tmp_path / "s.zen", "--embedder", GATED, env={GATE_ENV: str(gate)}).start()
    results = {}

    def call(name, path, body):
        results[name] = httpx.post(srv.url + path, json=body, timeout=120)

    threads = [threading.Thread(target=call, args=("rerank", "/v2/rerank", {"query": "slow: q", "documents": ["1"]})),
               threading.Thread(target=call, args=("upsert", "/v1/upsert", {"ids": [777], "texts": ["slow: kept"]}))]
    for t in threads:
        t.start()
    _until(lambda: len(list(gate.glob("entered-*"))) == 2, 120, "both requests inside the embedder")
    workers = children_of(srv.proc.pid)
    srv.signal(signal.SIGTERM)
    # the server takes no new connection while both requests are still held in the embedder
    _until(lambda: _refuses_connections(srv.url), 120, "the listening socket to close")
    assert all(t.is_alive() for t in threads) and srv.proc.poll() is None
    (gate / "release").touch()
    for t in threads:
        t.join(120)
    assert results["rerank"].status_code == 200 and results["rerank"].json()["results"][0]["stored_id"] == 1
    assert results["upsert"].status_code == 200, results["upsert"].text
    assert srv.wait(120) == 0
    assert wait_gone(workers)
    assert zenstore.verify_store(tmp_path / "s.zen") == []
    with zenstore.Store.open(tmp_path / "s.zen") as store:  # the lock was released: a writer can open it
        assert store.get(777).payload == {"text": "slow: kept"}


def test_readonly_server(tmp_path):
    from zenstore.server.textindex import open_lookup

    build_store(tmp_path / "s.zen", n=50)
    with zenstore.Store.open(tmp_path / "s.zen") as store:  # what a writer server leaves: the text index
        open_lookup(store, "text", writer=True).close()
    with Server(tmp_path / "s.zen", "--readonly", "--workers", "1") as srv:
        r = httpx.post(srv.url + "/v1/upsert", json={"ids": [1], "vectors": [[0.5] * 64]})
        assert r.status_code == 403 and "--readonly" in r.json()["message"]
        assert httpx.post(srv.url + "/v1/delete", json={"ids": [1]}).status_code == 403
        assert httpx.get(srv.url + "/readyz").json()["checks"] == {"store": "generation 1"}
        # no embedder: ids and stored texts rerank; anything else is named
        r = httpx.post(srv.url + "/v1/rerank", json={"query": "q", "documents": ["3"]})
        assert r.status_code == 422 and "needs an embedder" in r.json()["message"]  # the query needs one
        r = httpx.post(srv.url + "/v1/search", json={"vector": embed([doc_text(4)])[0].tolist(), "k": 1})
        assert r.json()["hits"][0]["id"] == 4
        # another process writes the store: the read-only server sees it, and stops trusting its text index
        with zenstore.Store.open(tmp_path / "s.zen") as store:
            store.upsert([4], embed(["changed"]), payloads=[{"text": "changed"}])
        assert httpx.get(srv.url + "/v1/records/4").json()["payload"] == {"text": "changed"}


def test_unknown_documents_without_an_embedder_are_named(tmp_path):
    from zenstore.server.service import ReadService

    build_store(tmp_path / "s.zen", n=20)
    with zenstore.Store.open(tmp_path / "s.zen", readonly=True) as store:
        class Fixed:  # a query embedder only, so the documents' resolution is what fails
            dim = 64

            def embed_query(self, text):
                return embed([text])[0]

        svc = ReadService(store, embedder=None)
        svc.embed_query = Fixed().embed_query
        from zenstore.server.httperrors import ApiError

        with pytest.raises(ApiError) as err:
            svc.rerank("q", ["3", "not stored at all", "also unknown"])
        assert err.value.status == 422 and "documents[1] 'not stored at all'" in err.value.message
        assert "documents[2]" in err.value.message and "no text index" in err.value.message
        out = svc.rerank("q", ["3", "5"])
        assert {r["stored_id"] for r in out} == {3, 5}


def _serve(*args, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "zenstore", "serve", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_refuses_to_start_open_to_the_network_without_keys(tmp_path, capsys):
    from zenstore.cli import main

    build_store(tmp_path / "s.zen", n=10)
    r = _serve(str(tmp_path / "s.zen"), "--host", "0.0.0.0", "--port", "0")  # the command, as a user runs it
    assert r.returncode == 1 and "without --api-key-file" in r.stderr
    with zenstore.Store.open(tmp_path / "s.zen"):  # another writer (process) holds the store
        r = _serve(str(tmp_path / "s.zen"), "--port", "0")
    assert r.returncode == 1 and "lock" in r.stderr
    # the rest fail before any worker starts: in this process, through the same CLI entry
    for args, needle in [((str(tmp_path / "s.zen"), "--api-key-file", str(tmp_path / "missing.json")),
                          "no such keys file"),
                         ((str(tmp_path / "nope.zen"),), "no such store"),
                         ((str(tmp_path / "s.zen"), "--embedder", "python:tests._server_embedder:nothing"),
                          "has no attribute")]:
        assert main(["serve", *args, "--port", "0"]) == 1
        assert needle in capsys.readouterr().err
    assert zenstore.verify_store(tmp_path / "s.zen") == []
