"""A SIGKILLed server loses no acknowledged write: clients stream upserts (and deletes),
the supervisor is killed mid-stream, and every acknowledged change is in the store
after the restart, which verifies clean (text index included)."""

from __future__ import annotations

import signal
import threading
import time

import httpx

import zenstore
from tests._server import EMBEDDER, Server, build_store, children_of, wait_gone
from tests._server_embedder import embed

BATCH = 8


def _writer(url: str, start: int, acked: dict, deleted: set, doubtful: set, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        next_id = start
        while not stop.is_set():
            ids = list(range(next_id, next_id + BATCH))
            texts = [f"streamed doc {i}" for i in ids]
            try:
                r = client.post("/v1/upsert", json={"ids": ids, "vectors": embed(texts).tolist(),
                                                     "payloads": [{"text": t, "n": i} for t, i in zip(texts, ids)]})
            except httpx.HTTPError:
                return  # the server died under this request: not acknowledged
            if r.status_code != 200:
                return
            for i, t in zip(ids, texts):
                acked[i] = t
            next_id += BATCH
            if (next_id // BATCH) % 2:
                continue
            doubtful.add(ids[0])  # a delete in flight when the server dies may or may not apply
            try:  # delete the first id of every other batch: deletes are acknowledged writes too
                if client.post("/v1/delete", json={"ids": [ids[0]]}).status_code != 200:
                    return
            except httpx.HTTPError:
                return
            doubtful.discard(ids[0])
            deleted.add(ids[0])


def test_sigkill_during_upserts_loses_no_acknowledged_write(tmp_path):
    path = tmp_path / "s.zen"
    build_store(path, n=40)
    srv = Server(path, "--embedder", EMBEDDER, "--workers", "2").start()
    workers = children_of(srv.proc.pid)
    acked: dict[int, str] = {}
    deleted: set[int] = set()
    doubtful: set[int] = set()
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(srv.url, 10_000 * (k + 1), acked, deleted, doubtful, stop))
               for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 12 * BATCH and time.monotonic() < deadline:
        time.sleep(0.02)
    srv.signal(signal.SIGKILL)  # the writer, mid-stream
    for t in threads:
        t.join(60)
    stop.set()
    srv.wait(120)
    assert len(acked) >= 12 * BATCH, srv.output()
    assert wait_gone(workers), "workers outlived their supervisor"
    assert zenstore.verify_store(path) == []
    with zenstore.Store.open(path, readonly=True) as store:
        live = [i for i in acked if i not in deleted and i not in doubtful]
        assert store.contains(live).all()
        assert not store.contains(sorted(deleted)).any()
        for i in live[:: max(1, len(live) // 25)]:
            assert store.get(i).payload == {"text": acked[i], "n": i}
    # the restarted server serves it, and its text index caught up with every acknowledged text
    with Server(path, "--embedder", EMBEDDER) as again:
        probe = live[-5:]
        res = httpx.post(again.url + "/v2/rerank", json={"query": "streamed", "documents": [acked[i] for i in probe]},
                         timeout=30).json()["results"]
        assert {r["stored_id"] for r in res} == set(probe) and {r["resolved_by"] for r in res} == {"text"}
        gone = sorted(deleted)[:3]
        res = httpx.post(again.url + "/v2/rerank", json={"query": "streamed", "documents": [acked[i] for i in gone]},
                         timeout=30).json()["results"]
        assert {r["resolved_by"] for r in res} == {"embedded"}
        count = httpx.get(again.url + "/v1/stats").json()["count"]
        assert 40 + len(live) <= count <= 40 + len(live) + len(doubtful) + 3 * BATCH  # + unacknowledged batches
    assert zenstore.verify_store(path) == []
