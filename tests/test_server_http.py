"""Every endpoint of a real ``zenstore serve`` over httpx: the answers, and every auth,
limit and bad-input case -- each refused with a JSON error naming the problem and
changing nothing (the store's generation and contents are checked after each). The
server process is the session's ``api_server`` (tests/conftest.py)."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import pytest

from tests._server import doc_text, query_vector
from tests._server_embedder import embed
from zenstore.server import add_key, revoke_key

@pytest.fixture(scope="module")
def srv(api_server):
    return api_server


@pytest.fixture(scope="module")
def client(srv):
    with httpx.Client(base_url=srv.url, timeout=60, headers={"Authorization": f"Bearer {srv.keys['write']}"}) as c:
        yield c


def b64(vec) -> str:
    return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode()


def generation(client) -> int:
    return client.get("/v1/stats").json()["generation"]


def refused(client, method, path, status, needle, **kwargs):
    """The request gets ``status`` with a JSON error whose message contains ``needle``,
    and the store did not move."""
    before = client.get("/v1/stats").json()
    r = client.request(method, path, **kwargs)
    assert r.status_code == status, r.text
    body = r.json()
    assert needle in body["message"] and body["error"]["message"] == body["message"], body
    after = client.get("/v1/stats").json()
    assert (after["generation"], after["count"]) == (before["generation"], before["count"])
    return body


# --- the endpoints ------------------------------------------------------------------------------


def test_search_by_text_by_vector_and_by_base64_agree(client):
    by_text = client.post("/v1/search", json={"query": doc_text(9), "k": 3}).json()["hits"]
    q = query_vector(doc_text(9))
    by_list = client.post("/v1/search", json={"vector": q.tolist(), "k": 3}).json()["hits"]
    by_b64 = client.post("/v1/search", json={"vector": b64(q), "k": 3, "with_payload": False}).json()["hits"]
    assert by_text[0]["id"] == 9 and by_text[0]["payload"]["n"] == 9
    assert [h["id"] for h in by_text] == [h["id"] for h in by_list] == [h["id"] for h in by_b64]
    assert "payload" not in by_b64[0]


def test_search_filter_and_nprobe(client):
    hits = client.post("/v1/search", json={"query": "about music", "k": 5,
                                           "filter": {"topic": "music", "n": {"$lt": 100}}}).json()["hits"]
    assert len(hits) == 5 and all(h["payload"]["topic"] == "music" and h["payload"]["n"] < 100 for h in hits)
    hits = client.post("/v1/search", json={"query": doc_text(3), "k": 2, "nprobe": 2, "shortlist": 50}).json()["hits"]
    assert hits[0]["id"] == 3
    full = client.post("/v1/search", json={"query": doc_text(3), "k": 4, "nprobe": "all"}).json()["hits"]
    assert full[0]["id"] == 3 and len(full) == 4
    r = client.post("/v1/search", json={"query": doc_text(3), "nprobe": "most"})
    assert r.status_code == 422


def test_upsert_get_delete_round_trip(client):
    vecs = embed(["fresh one", "fresh two"])
    r = client.post("/v1/upsert", json={"ids": [5001, 5002], "vectors": [vecs[0].tolist(), b64(vecs[1])],
                                        "payloads": [{"text": "fresh one"}, None]})
    assert r.status_code == 200 and r.json()["upserted"] == 2
    rec = client.get("/v1/records/5001", params={"with_vector": "true"}).json()
    assert rec["payload"] == {"text": "fresh one"}
    got = np.asarray(rec["vector"])  # the dequantized 1-bit vector: close in direction
    assert got @ vecs[0] / np.linalg.norm(got) > 0.7
    rec = client.get("/v1/records/5002", params={"with_vector": "true", "vector_format": "base64"}).json()
    assert rec["payload"] is None and len(base64.b64decode(rec["vector"])) == 4 * 64
    # the text index follows writes: the new text resolves to its id at once
    res = client.post("/v2/rerank", json={"query": "fresh one", "documents": ["fresh one"]}).json()["results"]
    assert res[0]["stored_id"] == 5001 and res[0]["resolved_by"] == "text"
    assert client.post("/v1/delete", json={"ids": [5001, 5002]}).json()["deleted"] == 2
    assert client.get("/v1/records/5001").status_code == 404
    res = client.post("/v2/rerank", json={"query": "fresh one", "documents": ["fresh one"]}).json()["results"]
    assert res[0]["resolved_by"] == "embedded"  # deleted: no longer resolves
    assert client.post("/v1/delete", json={"ids": [5001], "missing_ok": True}).json()["deleted"] == 0


def test_upsert_texts_are_embedded_and_indexed(client):
    r = client.post("/v1/upsert", json={"ids": [6001], "texts": ["completely new words here"],
                                        "payloads": [{"tag": "x"}]})
    assert r.status_code == 200, r.text
    assert client.get("/v1/records/6001").json()["payload"] == {"tag": "x", "text": "completely new words here"}
    hit = client.post("/v1/search", json={"query": "completely new words here", "k": 1}).json()["hits"][0]
    assert hit["id"] == 6001 and hit["score"] > 0.9
    client.post("/v1/delete", json={"ids": [6001]})


def test_stats_health_ready_openapi(client, srv):
    st = client.get("/v1/stats").json()
    assert st["dim"] == 64 and st["server"]["auth"] is True and st["server"]["workers"] == 1
    assert httpx.get(srv.url + "/healthz").json() == {"status": "ok"}  # probes need no key
    ready = httpx.get(srv.url + "/readyz").json()
    assert ready["ready"] is True and set(ready["checks"]) == {"store", "writer"}
    spec = httpx.get(srv.url + "/openapi.json").json()
    assert {"/v1/rerank", "/v2/rerank", "/v1/search", "/v1/upsert", "/v1/delete", "/v1/records/{id}",
            "/v1/stats", "/v1/embeddings", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert "RerankV2Request" in spec["components"]["schemas"]


def test_metrics_count_requests_and_report_the_store(srv):
    admin = {"Authorization": f"Bearer {srv.keys['admin']}"}
    for _ in range(3):
        httpx.post(srv.url + "/v2/rerank", headers=admin, json={"query": "q", "documents": ["1", "2"]})
    text = httpx.get(srv.url + "/metrics", headers=admin).text
    line = next(x for x in text.splitlines() if x.startswith('zenstore_http_requests_total{endpoint="/v2/rerank",status="200"}'))
    assert int(line.split()[-1]) >= 3
    assert 'zenstore_http_request_duration_seconds_bucket{endpoint="/v2/rerank",le="+Inf"}' in text
    assert "zenstore_store_vectors 200" in text and "zenstore_store_bytes_on_disk" in text


def test_embeddings_endpoint_is_openai_shaped(client):
    r = client.post("/v1/embeddings", json={"input": ["a b", "c"], "model": "m"}).json()
    assert r["object"] == "list" and r["model"] == "m" and [d["index"] for d in r["data"]] == [0, 1]
    np.testing.assert_allclose([d["embedding"] for d in r["data"]], embed(["a b", "c"]), rtol=1e-6)
    one = client.post("/v1/embeddings", json={"input": "a b", "encoding_format": "base64"}).json()
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(one["data"][0]["embedding"]), "<f4"), embed(["a b"])[0])


def test_rerank_duplicates_and_top_n(client):
    docs = [doc_text(1), doc_text(1), "1", doc_text(2)]
    res = client.post("/v1/rerank", json={"query": doc_text(1), "documents": docs, "top_n": 3}).json()["results"]
    assert len(res) == 3 and {r["index"] for r in res} == {0, 1, 2}  # every copy scored, same score
    assert res[0]["score"] == res[1]["score"] == res[2]["score"]
    assert client.post("/v2/rerank", json={"query": "q", "documents": []}).json()["results"] == []


# --- authentication ---------------------------------------------------------------------------------


@pytest.mark.parametrize("headers, needle", [
    ({}, "missing API key"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "must be 'Bearer <key>'"),
    ({"Authorization": "Bearer"}, "must be 'Bearer <key>'"),
    ({"Authorization": "Bearer zsk_00000000_notakey"}, "invalid or revoked"),
    ({"Authorization": "Bearer something-else"}, "invalid or revoked"),
])
def test_401_without_a_valid_key(srv, client, headers, needle):
    before = generation(client)
    for method, path in [("POST", "/v2/rerank"), ("POST", "/v1/upsert"), ("GET", "/v1/stats"), ("GET", "/metrics"),
                         ("GET", "/v1/records/1"), ("GET", "/no/such/path")]:
        r = httpx.request(method, srv.url + path, headers=headers, json={"ids": [1], "vectors": [[0.0] * 64]})
        assert r.status_code == 401 and needle in r.json()["message"], (path, r.text)
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert generation(client) == before


@pytest.mark.parametrize("scope, method, path, body", [
    ("read", "POST", "/v1/upsert", {"ids": [1], "vectors": [[0.5] * 64]}),
    ("read", "POST", "/v1/delete", {"ids": [1]}),
    ("read", "GET", "/metrics", None),
    ("write", "GET", "/metrics", None),
])
def test_403_on_a_scope_too_low(srv, client, scope, method, path, body):
    before = generation(client)
    r = httpx.request(method, srv.url + path, json=body, headers={"Authorization": f"Bearer {srv.keys[scope]}"})
    assert r.status_code == 403 and f"scope '{scope}'" in r.json()["message"]
    assert generation(client) == before and client.get("/v1/records/1").status_code == 200


def test_higher_scopes_include_lower_ones(srv):
    for scope in ("read", "write", "admin"):
        r = httpx.post(srv.url + "/v2/rerank", headers={"Authorization": f"Bearer {srv.keys[scope]}"},
                       json={"query": "q", "documents": ["3"]})
        assert r.status_code == 200


def test_a_revoked_key_stops_working_on_the_running_server(srv):
    key, entry = add_key(srv.keys_file, "read")
    h = {"Authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 60
    while httpx.get(srv.url + "/v1/stats", headers=h).status_code != 200:  # a new key: picked up
        assert time.monotonic() < deadline
        time.sleep(0.2)
    revoke_key(srv.keys_file, entry.id)
    deadline = time.monotonic() + 60
    while httpx.get(srv.url + "/v1/stats", headers=h).status_code != 401:
        assert time.monotonic() < deadline, "revoked key still accepted"
        time.sleep(0.2)


# --- limits -----------------------------------------------------------------------------------


def test_413_for_a_body_over_the_limit(client, srv):
    big = {"ids": list(range(10)), "vectors": [[0.1] * 64] * 10, "payloads": [{"pad": "x" * 50_000}] * 10}
    body = refused(client, "POST", "/v1/upsert", 413, "at most 400,000", json=big)
    assert body["error"]["type"] == "request_too_large"

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"ids": [1], "payloads": [{"pad": "'
        for _ in range(100):
            yield b"y" * 10_000
        yield b'"}], "vectors": [[0.5]]}'

    refused(client, "POST", "/v1/upsert", 413, "at most 400,000", content=chunks())


@pytest.mark.parametrize("path, body, needle", [
    ("/v2/rerank", {"query": "q", "documents": ["1"] * 51}, "at most 50"),
    ("/v2/rerank", {"query": "q", "documents": ["1"], "top_n": 51}, "top_n=51"),
    ("/v1/rerank", {"query": "q", "documents": ["1"], "top_n": 0}, "top_n must be a positive integer"),
    ("/v1/search", {"query": "q", "k": 21}, "k=21"),
    ("/v1/search", {"query": "q", "k": 0}, "k must be a positive integer"),
    ("/v1/upsert", {"ids": list(range(17)), "vectors": [[0.5] * 64] * 17}, "at most 16"),
    ("/v1/delete", {"ids": list(range(17))}, "at most 16"),
    ("/v2/rerank", {"query": "x" * 100_001, "documents": ["1"]}, "at most 100,000"),
    ("/v1/embeddings", {"input": ["x" * 100_001]}, "at most 100,000"),
])
def test_422_for_counts_over_the_limits(client, path, body, needle):
    body = refused(client, "POST", path, 422, needle, json=body)
    assert body["error"]["type"] in ("limit_exceeded", "invalid_argument")


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path, kwargs, status, needle", [
    ("/v2/rerank", {"content": b'{"query": "q", "documents": ['}, 400, "not valid JSON"),
    ("/v2/rerank", {"content": b""}, 422, "JSON body"),
    ("/v2/rerank", {"json": {"documents": ["1"]}}, 422, "query: Field required"),
    ("/v2/rerank", {"json": {"query": "q", "documents": ["1"], "bogus": 1}}, 422, "bogus: Extra inputs"),
    ("/v2/rerank", {"json": {"query": 5, "documents": ["1"]}}, 422, "query: Input should be a valid string"),
    ("/v2/rerank", {"json": {"query": "q", "documents": "1"}}, 422, "documents"),
    ("/v2/rerank", {"json": {"query": "q", "documents": [{"title": "no text"}]}}, 422, "text"),
    ("/v2/rerank", {"json": {"query": "q", "documents": ["1"], "top_n": "3"}}, 422, "top_n"),
    ("/v1/search", {"json": {"k": 3}}, 422, "exactly one of 'query' (text) or 'vector'"),
    ("/v1/search", {"json": {"vector": [0.1] * 63}}, 422, "has 63 values; the store's dimension is 64"),
    ("/v1/search", {"json": {"vector": "!!notbase64"}}, 422, "not valid base64"),
    ("/v1/search", {"json": {"vector": b64([0.1] * 32)}}, 422, "holds 128 bytes"),
    ("/v1/search", {"json": {"vector": ["a"] * 64}}, 422, "flat list of numbers"),
    ("/v1/search", {"json": {"query": "q", "filter": {"n": {"$bogus": 1}}}}, 422, "$bogus"),
    ("/v1/search", {"json": {"query": "q", "filter": [1]}}, 422, "filter"),
    ("/v1/upsert", {"json": {"ids": [1, 1], "vectors": [[0.5] * 64] * 2}}, 422, "1"),
    ("/v1/upsert", {"json": {"ids": ["a"], "vectors": [[0.5] * 64]}}, 422, "int ids"),
    ("/v1/upsert", {"json": {"ids": [1], "vectors": [[0.5] * 64, [0.5] * 64]}}, 422, "1 ids but 2 vectors"),
    ("/v1/upsert", {"json": {"ids": [1], "vectors": [[0.0] * 64]}}, 422, "zero"),
    ("/v1/upsert", {"content": b'{"ids": [1], "vectors": [[NaN' + b', 0.5' * 63 + b']]}'}, 422, "NaN"),
    ("/v1/upsert", {"json": {"ids": [1]}}, 422, "give vectors"),
    ("/v1/upsert", {"json": {"ids": []}}, 422, "ids is empty"),
    ("/v1/upsert", {"json": {"ids": [1], "vectors": [[0.5] * 64], "payloads": [{"a": 1}, None]}}, 422, "1 ids but 2 payloads"),
    ("/v1/upsert", {"json": {"ids": [1], "texts": ["x"], "payloads": [{"text": "y"}]}}, 422, "differs from texts[0]"),
    ("/v1/delete", {"json": {"ids": [424242]}}, 404, "424242"),
    ("/v1/delete", {"json": {"ids": []}}, 422, "ids is empty"),
    ("/v1/embeddings", {"json": {"input": [[1, 2, 3]]}}, 422, "input"),
    ("/v1/embeddings", {"json": {"input": []}}, 422, "non-empty list"),
    ("/v1/embeddings", {"json": {"input": "a", "dimensions": 32}}, 422, "dimensions=32"),
])
def test_bad_requests_get_a_json_error_and_change_nothing(client, path, kwargs, status, needle):
    refused(client, "POST", path, status, needle, **kwargs)
    assert client.get("/v1/records/1").json()["payload"]["n"] == 1  # row 1 untouched by any of them


@pytest.mark.parametrize("path, status, needle", [
    ("/v1/records/99999", 404, "99999"),
    ("/v1/records/abc", 404, "int ids"),
    ("/v1/records/1?vector_format=xml&with_vector=true", 422, "vector_format"),
    ("/v1/nothing", 404, "no endpoint GET /v1/nothing"),
])
def test_bad_gets(client, path, status, needle):
    refused(client, "GET", path, status, needle)


def test_wrong_method_is_a_json_405(client):
    r = client.get("/v2/rerank")
    assert r.status_code == 405 and "no endpoint GET /v2/rerank" in r.json()["message"]
