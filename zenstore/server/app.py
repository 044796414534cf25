"""The HTTP surface: a FastAPI app over a :class:`ReadService` and a writer handle.

Why FastAPI on uvicorn: the OpenAPI schema (``/openapi.json``) comes from the same
pydantic models that validate requests, so it cannot drift from what is accepted; it is
Starlette underneath, and the per-request cost that adds over plain Starlette was
measured in ``benchmarks/serve.py`` (docs/api.md, "HTTP API"). Handlers are plain
functions run in the thread pool: the store's kernels release the GIL, so one worker
serves requests on both cores, and a slow embedder call never blocks the event loop.

Authentication, the body-size limit and the metrics are one pure-ASGI layer
(:class:`Gate`) in front of everything: an unauthenticated or oversized request is
answered before its body is read into the app, and every answer is counted.
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ZenstoreError
from ..version import __version__
from . import schemas as S
from .config import Limits
from .httperrors import ApiError, error_body, from_exception
from .metrics import ENDPOINTS, Metrics
from .service import ReadService
from .vectors import decode_matrix, encode_vector

JSON = "application/json"

# the scope each endpoint needs; None: open (probes and the schema)
SCOPES = {
    ("POST", "/v1/rerank"): "read", ("POST", "/v2/rerank"): "read", ("POST", "/v1/search"): "read",
    ("POST", "/v1/embeddings"): "read", ("GET", "/v1/stats"): "read", ("GET", "/v1/records/{id}"): "read",
    ("POST", "/v1/upsert"): "write", ("POST", "/v1/delete"): "write",
    ("GET", "/metrics"): "admin",
    ("GET", "/healthz"): None, ("GET", "/readyz"): None, ("GET", "/openapi.json"): None,
}


def endpoint_of(path: str) -> str:
    if path.startswith("/v1/records/") and len(path) > len("/v1/records/"):
        return "/v1/records/{id}"
    return path if path in ENDPOINTS else "other"


def dumps(content) -> bytes:
    return json.dumps(content, separators=(",", ":"), default=_plain).encode("utf-8")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def json_response(content, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(content), status_code=status, media_type=JSON, headers=headers)


def error_response(err: ApiError) -> Response:
    return json_response(err.body(), err.status, err.headers)


class Gate:
    """Pure ASGI: metrics around everything, then the API key check, then the body limit
    (the body is read here, counted, and replayed to the app)."""

    def __init__(self, app, *, keyring, limits: Limits, metrics: Metrics) -> None:
        self.app = app
        self.keyring = keyring
        self.limits = limits
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        endpoint = endpoint_of(scope["path"])
        status = [500]

        async def counted_send(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.metrics.observe(endpoint, status[0], time.perf_counter() - start)

        if scope["method"] == "POST":  # every body here is JSON, whatever a client labels it
            scope = dict(scope, headers=[(k, v) for k, v in scope["headers"] if k != b"content-type"]
                         + [(b"content-type", b"application/json")])
        try:
            await self._admit(scope, endpoint)
            receive = await self._read_body(scope, receive)
        except ApiError as err:
            return await error_response(err)(scope, receive, counted_send)
        await self.app(scope, receive, counted_send)

    async def _admit(self, scope, endpoint: str) -> None:
        if self.keyring is None:
            return
        needed = SCOPES.get((scope["method"], endpoint), "read")  # unknown paths: a key first
        if needed is None:
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        self.keyring.authorize(header, needed)

    async def _read_body(self, scope, receive):
        limit = self.limits.max_body_bytes
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise ApiError(400, "bad_request", "Content-Length is not a number") from None
                if declared > limit:
                    raise ApiError(413, "request_too_large", f"request body of {declared:,} bytes; this server "
                                   f"accepts at most {limit:,} (--max-body-bytes)")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break  # disconnected: the app sees it when it reads
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                raise ApiError(413, "request_too_large", f"request body over {limit:,} bytes; this server "
                               f"accepts at most {limit:,} (--max-body-bytes)")
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        sent = False

        async def replayed():
            nonlocal sent
            if not sent:
                sent = True
                return replay
            return await receive()

        return replayed


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return 400, "invalid_json", "the request body is not valid JSON"
    parts = []
    for e in errors[:5]:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        if e.get("type") == "missing" and loc == "":
            parts.append("the request needs a JSON body")
            continue
        parts.append(f"{loc or 'body'}: {e.get('msg')}")
    more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    return 422, "invalid_request", "; ".join(parts) + more


def create_app(reads: ReadService, writes, *, metrics: Metrics, keyring=None, limits: Limits = Limits(),
               readonly: bool = False, info: dict | None = None, text_field: str = "text"):
    """The ASGI app of one worker. ``writes``: a WriteService or PipeWrites (None when
    ``readonly``)."""
    app = FastAPI(title="zenstore", version=__version__, openapi_url="/openapi.json", docs_url=None,
                  redoc_url=None, description="zenstore HTTP API: Cohere-compatible rerank, search, "
                  "writes, OpenAI-compatible embeddings. See docs/api.md, 'HTTP API'.")
    bearer = HTTPBearer(auto_error=False, description="an API key: zenstore keys add FILE --scope read")
    secured = [Depends(bearer)] if keyring is not None else []
    errors = {s: {"model": S.ErrorResponse} for s in (401, 403, 404, 413, 422)}
    info = dict(info or {})

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        status, type_, message = _validation_message(exc)
        return json_response(error_body(type_, message), status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        type_ = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = f"no endpoint {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return json_response(error_body(type_, message), exc.status_code, getattr(exc, "headers", None))

    @app.exception_handler(ZenstoreError)  # an answer like any other: the connection stays up
    async def _zenstore_error(request: Request, exc: ZenstoreError):
        return error_response(from_exception(exc))

    @app.exception_handler(Exception)  # a bug: answered as JSON 500, then logged by uvicorn
    async def _unexpected(request: Request, exc: Exception):
        return error_response(from_exception(exc))

    def need_writes():
        if readonly or writes is None:
            raise ApiError(403, "read_only", "this server was started with --readonly: it takes no writes")
        return writes

    # --- rerank ----------------------------------------------------------------------------

    def _rerank(body, version: str) -> Response:
        docs = [d if isinstance(d, str) else d.text for d in body.documents]
        results = reads.rerank(body.query, docs, body.top_n, bool(body.return_documents))
        return json_response({"id": str(uuid.uuid4()), "results": results,
                              "meta": {"api_version": {"version": version}, "billed_units": {"search_units": 1}}})

    @app.post("/v1/rerank", response_model=S.RerankResponse, responses=errors, dependencies=secured,
              summary="Cohere v1 rerank")
    def rerank_v1(body: S.RerankV1Request):
        return _rerank(body, "1")

    @app.post("/v2/rerank", response_model=S.RerankResponse, responses=errors, dependencies=secured,
              summary="Cohere v2 rerank")
    def rerank_v2(body: S.RerankV2Request):
        return _rerank(body, "2")

    # --- search and records --------------------------------------------------------------------

    @app.post("/v1/search", response_model=S.SearchResponse, responses=errors, dependencies=secured)
    def search(body: S.SearchRequest):
        hits = reads.search(query=body.query, vector=body.vector, k=body.k, filter=body.filter,
                            nprobe=body.nprobe, shortlist=body.shortlist, with_payload=body.with_payload)
        return json_response({"hits": hits})

    @app.get("/v1/records/{id}", response_model=S.RecordResponse, responses=errors, dependencies=secured)
    def record(id: str, with_vector: bool = False, vector_format: str = "float"):
        return json_response(reads.record(id, with_vector, vector_format))

    @app.get("/v1/stats", dependencies=secured)
    def stats():
        return json_response({**reads.stats(), "server": info})

    # --- writes ----------------------------------------------------------------------------------

    @app.post("/v1/upsert", response_model=S.UpsertResponse, responses=errors, dependencies=secured)
    def upsert(body: S.UpsertRequest):
        w = need_writes()
        n = len(body.ids)
        if n == 0:
            raise ApiError(422, "invalid_argument", "ids is empty: nothing to upsert")
        if n > limits.max_batch:
            raise ApiError(422, "limit_exceeded", f"{n:,} rows; this server takes at most {limits.max_batch:,} "
                           f"per upsert (send several requests)")
        payloads = body.payloads
        if payloads is not None and len(payloads) != n:
            raise ApiError(422, "invalid_argument", f"got {n} ids but {len(payloads)} payloads")
        if body.texts is not None:
            if len(body.texts) != n:
                raise ApiError(422, "invalid_argument", f"got {n} ids but {len(body.texts)} texts")
            for i, t in enumerate(body.texts):
                reads._text(t, f"texts[{i}]")
            payloads = [dict(p or {}) for p in (payloads or [None] * n)]
            for i, (p, t) in enumerate(zip(payloads, body.texts)):
                if text_field in p and p[text_field] != t:
                    raise ApiError(422, "invalid_argument", f"payloads[{i}].{text_field} differs from texts[{i}]")
                p[text_field] = t
        if body.vectors is not None:
            if len(body.vectors) != n:
                raise ApiError(422, "invalid_argument", f"got {n} ids but {len(body.vectors)} vectors")
            vectors = decode_matrix(body.vectors, reads.dim, "vectors")
        elif body.texts is not None:
            vectors = np.asarray(reads.need_embedder("upserting texts without vectors").embed_documents(body.texts),
                                 dtype=np.float32)
        else:
            raise ApiError(422, "invalid_argument", "give vectors (or texts, to embed with the server's embedder)")
        return json_response(w.upsert(list(body.ids), vectors, payloads))

    @app.post("/v1/delete", response_model=S.DeleteResponse, responses=errors, dependencies=secured)
    def delete(body: S.DeleteRequest):
        w = need_writes()
        if not body.ids:
            raise ApiError(422, "invalid_argument", "ids is empty: nothing to delete")
        if len(body.ids) > limits.max_batch:
            raise ApiError(422, "limit_exceeded", f"{len(body.ids):,} ids; this server deletes at most "
                           f"{limits.max_batch:,} per request")
        return json_response(w.delete(list(body.ids), body.missing_ok))

    # --- embeddings ------------------------------------------------------------------------------

    @app.post("/v1/embeddings", response_model=S.EmbeddingsResponse, responses=errors, dependencies=secured,
              summary="OpenAI-compatible embeddings")
    def embeddings(body: S.EmbeddingsRequest):
        vecs = reads.embeddings(body.input, body.encoding_format, body.dimensions)
        data = [{"object": "embedding", "index": i, "embedding": encode_vector(v, body.encoding_format)}
                for i, v in enumerate(vecs)]
        return json_response({"object": "list", "data": data, "model": body.model or info.get("embedder") or "",
                              "usage": {"prompt_tokens": 0, "total_tokens": 0}})

    # --- probes and metrics ------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz():
        return json_response({"status": "ok"})

    @app.get("/readyz")
    def readyz():
        checks = {}
        try:
            checks["store"] = f"generation {reads.store.snapshot().generation}"
        except Exception as exc:  # noqa: BLE001 - a probe reports, it does not fail
            checks["store"] = f"error: {exc}"
        if not readonly:
            try:
                checks["writer"] = f"generation {writes.ping()['generation']}"
            except ApiError as exc:
                checks["writer"] = f"error: {exc.message}"
        ready = not any(str(v).startswith("error") for v in checks.values())
        return json_response({"ready": ready, "checks": checks}, 200 if ready else 503)

    @app.get("/metrics", dependencies=secured)
    def metrics_text():
        st = reads.stats()
        gauges = {
            "zenstore_store_vectors": ("Live vectors in the store.", st["count"]),
            "zenstore_store_deleted_rows": ("Deleted rows not yet compacted away.", st["deleted_rows"]),
            "zenstore_store_segments": ("Segment files.", st["segments"]),
            "zenstore_store_bytes_on_disk": ("Bytes of the store directory.", st["bytes_on_disk"]["total"]),
            "zenstore_store_generation": ("Committed generation of the store.", st["generation"]),
            "zenstore_server_workers": ("HTTP worker processes.", info.get("workers", 1)),
        }
        return Response(metrics.render(gauges), media_type="text/plain; version=0.0.4; charset=utf-8")

    return Gate(app, keyring=keyring, limits=limits, metrics=metrics), app
