"""An embedder that calls an OpenAI-compatible ``/v1/embeddings`` endpoint.

That one schema is served by OpenAI, text-embeddings-inference, vLLM, Ollama, llama.cpp
and most gateways, so one client covers them all. It is written on the standard
library's ``http.client`` so that the base install (and ``zenstore ingest --embedder``)
needs no HTTP package: a request per batch of texts, kept-alive connections (one per
thread), retries with exponential backoff and jitter on 408/429/5xx and connection
failures (honouring ``Retry-After``), and an :class:`EmbedderError` that names the URL,
the HTTP status and the server's own message.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import json
import logging
import math
import numbers
import random
import socket
import ssl
import threading
import time
import urllib.parse

import numpy as np

from ..errors import EmbedderError, InvalidArgument
from ..validation import positive_int
from .base import BaseEmbedder, check_dim

log = logging.getLogger("zenstore.embedders")

ENCODING_FORMATS = ("auto", "float", "base64")
# Worth another try: timeouts, rate limits, server overload and restarts. Other 4xx
# (bad request, auth, unknown model, input too long) will fail the same way again.
RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
_BODY_PREVIEW = 300  # characters of an unparsable body quoted in an error


def embeddings_url(url: str) -> str:
    """The full ``.../v1/embeddings`` URL for a base URL given with or without ``/v1``
    (or already ending in ``/embeddings``); query strings are kept."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidArgument(f"the embedding server URL must be a non-empty str, got {url!r}")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https"):
        raise InvalidArgument(f"the embedding server URL must start with http:// or https://, "
                              f"got {url!r}")
    if not parts.hostname:
        raise InvalidArgument(f"the embedding server URL has no host: {url!r}")
    if parts.fragment:
        raise InvalidArgument(f"the embedding server URL has a '#' part ({url!r}); pass the "
                              f"model as model=, or as openai:URL#MODEL in a SPEC")
    try:
        parts.port  # noqa: B018  (raises on a non-numeric or out-of-range port)
    except ValueError as exc:
        raise InvalidArgument(f"the embedding server URL has a bad port: {url!r}") from exc
    path = parts.path.rstrip("/")
    if not path.endswith("/embeddings"):
        path += "/embeddings" if path.endswith("/v1") else "/v1/embeddings"
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def server_message(body: bytes) -> str:
    """The error text a server put in its body: OpenAI/vLLM ``{"error": {"message"}}``,
    TEI ``{"error": "..."}``, ``{"message"}``, FastAPI ``{"detail"}``, else the raw text."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for key in ("error", "message", "detail"):
            if doc.get(key):
                value = doc[key]
                return value if isinstance(value, str) else json.dumps(value)
    if len(text) > _BODY_PREVIEW:
        text = text[:_BODY_PREVIEW] + "..."
    return text or "(empty body)"


def retry_after_seconds(headers) -> float | None:
    """The wait a server asked for: ``retry-after-ms`` (OpenAI), else ``Retry-After`` as
    seconds or an HTTP date. None when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
            if math.isfinite(value) and value >= 0:
                return value
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
        return value if math.isfinite(value) and value >= 0 else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Transient(Exception):
    """One attempt failed in a way another attempt may not (internal)."""

    def __init__(self, message: str, status: int | None = None, server_msg: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.server_msg, self.retry_after = status, server_msg, retry_after


class OpenAIEmbedder(BaseEmbedder):
    """Embeddings from an OpenAI-compatible server.

    ``url``: the server's base URL, with or without ``/v1`` (``http://127.0.0.1:8080``).
    ``model``: sent as ``model`` (OpenAI and Ollama require it; TEI ignores it; omitted
    when None). ``api_key``: sent as ``Authorization: Bearer``. ``batch_size``: texts per
    request. ``timeout``: seconds for connecting and for each read of the answer.
    ``max_retries``: further attempts after a retryable failure, waiting
    ``backoff * 2**attempt`` seconds (times a random factor in [0.5, 1]), at least what
    ``Retry-After`` asks and at most ``max_backoff``. ``dimensions``: requested from the
    server (models that can shorten their output) and then required of every answer.
    ``encoding_format``: what to ask for: "base64" (float32 bytes: about a quarter of the
    bytes, and ~100x cheaper to read than JSON numbers), "float" (JSON numbers), or "auto"
    (base64, switching to float for good if the server refuses base64). Answers are read
    by what they hold, whatever was asked (Ollama, for one, answers floats to a base64
    request). ``query_prefix`` / ``document_prefix``: prepended to queries / documents, for
    models trained with such prefixes (E5's "query: " and "passage: ").
    ``normalize``: scale every vector to unit length.
    """

    def __init__(self, url: str, model: str | None = None, api_key: str | None = None, *,
                 batch_size: int = 64, timeout: float = 60.0, max_retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, dimensions: int | None = None,
                 encoding_format: str = "auto", query_prefix: str = "",
                 document_prefix: str = "", normalize: bool = False,
                 headers: dict[str, str] | None = None) -> None:
        self.url = embeddings_url(url)
        if model is not None and (not isinstance(model, str) or not model):
            raise InvalidArgument(f"model must be a non-empty str or None, got {model!r}")
        if api_key is not None and (not isinstance(api_key, str) or not api_key):
            raise InvalidArgument("api_key must be a non-empty str or None")
        for name, value in (("timeout", timeout), ("backoff", backoff), ("max_backoff", max_backoff)):
            if (not isinstance(value, numbers.Real) or isinstance(value, bool)
                    or not math.isfinite(value) or value < 0 or (name == "timeout" and value == 0)):
                raise InvalidArgument(f"{name} must be a finite number of seconds "
                                      f"({'> 0' if name == 'timeout' else '>= 0'}), got {value!r}")
        if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
            raise InvalidArgument(f"max_retries must be an int >= 0, got {max_retries!r}")
        if encoding_format not in ENCODING_FORMATS:
            raise InvalidArgument(f"encoding_format must be one of {ENCODING_FORMATS}, "
                                  f"got {encoding_format!r}")
        for name, value in (("query_prefix", query_prefix), ("document_prefix", document_prefix)):
            if not isinstance(value, str):
                raise InvalidArgument(f"{name} must be str, got {type(value).__name__}")
        self.model = model
        self.batch_size = positive_int(batch_size, "batch_size")
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.dimensions = check_dim(dimensions, "dimensions")
        self._dim = self.dimensions
        self.encoding_format = encoding_format
        self._format = "base64" if encoding_format == "auto" else encoding_format  # asked for now
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.normalize = bool(normalize)
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._target = parts.path + (f"?{parts.query}" if parts.query else "")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         "User-Agent": "zenstore-embedder", **(headers or {})}
        if api_key is not None:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._local = threading.local()  # one kept-alive connection per thread
        self._lock = threading.Lock()
        self._conns: set[http.client.HTTPConnection] = set()  # all of them, for close()
        self.requests_sent = 0  # HTTP requests made, retries included (for callers' metrics)

    @property
    def source(self) -> str:
        return f"embedding server {self.url}"

    def __repr__(self) -> str:  # never shows the API key
        return f"OpenAIEmbedder({self.url!r}, model={self.model!r}, dim={self._dim})"

    def close(self) -> None:
        """Close every kept-alive connection (the embedder stays usable: the next request
        connects again)."""
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            conn.close()

    def __enter__(self) -> OpenAIEmbedder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown: nothing left to do)
            pass

    def _drop(self) -> None:
        """Forget this thread's connection after a failure; the next attempt reconnects."""
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    # --- one batch ---------------------------------------------------------------------------

    def _embed(self, texts: list[str], kind: str) -> np.ndarray:
        prefix = self.query_prefix if kind == "query" else self.document_prefix
        if prefix:
            texts = [prefix + t for t in texts]
        parts, width = [], self._dim
        for start in range(0, len(texts), self.batch_size):
            part = self._request(texts[start:start + self.batch_size])
            if width is not None and part.shape[1] != width:
                raise EmbedderError(f"{self.source} returned vectors of dimension {part.shape[1]}, "
                                    f"expected {width}", url=self.url)
            width = part.shape[1]
            parts.append(part)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _request(self, texts: list[str]) -> np.ndarray:
        try:
            return self._send(self._body(texts), len(texts))
        except EmbedderError as exc:
            if not self._base64_refused(exc):
                raise
        log.info("%s refuses base64 answers; asking for float from now on", self.source)
        self._format = "float"
        return self._send(self._body(texts), len(texts))

    def _base64_refused(self, exc: EmbedderError) -> bool:
        """An "auto" embedder's base64 request was refused as such (older vLLM: HTTP 400
        "base64 encoding is not currently supported")."""
        msg = (exc.server_message or "").lower()
        return (self.encoding_format == "auto" and self._format == "base64"
                and exc.status in (400, 422) and ("base64" in msg or "encoding_format" in msg))

    def _body(self, texts: list[str]) -> bytes:
        payload: dict = {"input": texts, "encoding_format": self._format}
        if self.model is not None:
            payload["model"] = self.model
        if self.dimensions is not None:
            payload["dimensions"] = self.dimensions
        try:
            body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            bad = next(i for i, t in enumerate(texts) if not _is_utf8(t))
            raise InvalidArgument(f"text {bad} is not valid Unicode (it has a lone surrogate); "
                                  f"JSON cannot carry it to {self.source}") from None
        return body

    def _send(self, body: bytes, n: int) -> np.ndarray:
        """One request, retried on transient failures; the checked-for-schema answer."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            try:
                return self._attempt(body, n)
            except _Transient as failure:
                last = failure
            if attempt + 1 == attempts:
                break
            delay = self._delay(attempt, last.retry_after)
            log.info("%s; retry %d of %d in %.2f s", last, attempt + 1, self.max_retries, delay)
            time.sleep(delay)
        raise EmbedderError(f"{last} (gave up after {attempts} attempt{'s' * (attempts > 1)})",
                            url=self.url, status=last.status,
                            server_message=last.server_msg) from last.__cause__

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        wait = self.backoff * (2.0 ** attempt) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return min(wait, self.max_backoff)

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:  # close() may have closed it since: it then reconnects itself
            with self._lock:
                self._conns.add(conn)
            return conn, conn.sock is not None
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout,
                                               context=ssl.create_default_context())
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        self._local.conn = conn
        with self._lock:
            self._conns.add(conn)
        return conn, False

    def _attempt(self, body: bytes, n: int) -> np.ndarray:
        for _ in range(2):  # a kept-alive connection the server has since closed: once more
            conn, reused = self._connection()
            try:
                self.requests_sent += 1
                conn.request("POST", self._target, body=body, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError,
                    http.client.RemoteDisconnected) as exc:
                self._drop()
                if reused:
                    continue
                raise _Transient(f"{self.source} dropped the connection: {exc}") from exc
            except ssl.SSLCertVerificationError as exc:  # will not pass on a retry either
                self._drop()
                raise EmbedderError(f"{self.source}: TLS certificate not trusted: {exc}",
                                    url=self.url) from exc
            except (TimeoutError, socket.timeout) as exc:
                self._drop()
                raise _Transient(f"{self.source} did not answer within {self.timeout:g} s") from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise _Transient(f"cannot reach {self.source}: {exc}") from exc
            break
        if resp.will_close:
            self._drop()
        if 200 <= resp.status < 300:
            return self._parse(data, n)
        message = server_message(data)
        text = f"{self.source} answered HTTP {resp.status} {resp.reason}: {message}"
        if resp.status in RETRYABLE_STATUS:
            raise _Transient(text, resp.status, message, retry_after_seconds(resp.headers))
        raise EmbedderError(text, url=self.url, status=resp.status, server_message=message)

    # --- reading the answer ------------------------------------------------------------------

    def _bad(self, what: str) -> EmbedderError:
        return EmbedderError(f"{self.source} answered HTTP 200 but {what}", url=self.url, status=200)

    def _parse(self, data: bytes, n: int) -> np.ndarray:
        try:
            doc = json.loads(data)
        except ValueError:
            preview = data[:_BODY_PREVIEW].decode("utf-8", errors="replace")
            raise self._bad(f"its body is not JSON: {preview!r}") from None
        items = doc.get("data") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise self._bad("its body has no 'data' list (not the OpenAI embeddings schema)")
        if len(items) != n:
            raise self._bad(f"returned {len(items)} embeddings for {n} inputs")
        if not all(isinstance(it, dict) and "embedding" in it for it in items):
            raise self._bad("an item of 'data' has no 'embedding'")
        order = self._order(items)
        embs = [items[j]["embedding"] for j in order]
        if all(isinstance(e, list) for e in embs):
            return self._floats(embs)
        if all(isinstance(e, str) for e in embs):
            rows = [self._base64(e, i) for i, e in enumerate(embs)]
            widths = {len(r) for r in rows}
            if len(widths) > 1:
                raise self._bad(f"returned vectors of different lengths {sorted(widths)} in one answer")
            return np.stack(rows)
        raise self._bad("its embeddings are neither all lists of numbers nor all base64 strings")

    def _order(self, items: list[dict]) -> list[int]:
        """Position in ``items`` of the embedding of input 0, 1, ...: by ``index`` when the
        server gives one (answers may come out of order), else as listed."""
        has = ["index" in it for it in items]
        if not any(has):
            return list(range(len(items)))
        idx = [it.get("index") for it in items]
        if not all(has) or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx):
            raise self._bad("some items of 'data' lack an integer 'index'")
        if sorted(idx) != list(range(len(items))):
            raise self._bad(f"the 'index' values are not 0..{len(items) - 1} once each")
        order = [0] * len(items)
        for pos, i in enumerate(idx):
            order[i] = pos
        return order

    def _floats(self, embs: list[list]) -> np.ndarray:
        try:
            arr = np.array(embs)  # one C pass; kind tells numbers from strings and bools
        except (ValueError, TypeError):  # rows of different lengths
            widths = sorted({len(e) for e in embs})
            raise self._bad(f"returned vectors of different lengths {widths} in one answer") from None
        if arr.ndim != 2 or arr.dtype.kind not in "fi":
            raise self._bad("its embeddings are not lists of numbers")
        with np.errstate(over="ignore", invalid="ignore"):
            return arr.astype(np.float32)

    def _base64(self, emb: str, i: int) -> np.ndarray:
        try:
            raw = base64.b64decode(emb, validate=True)
        except ValueError:
            raise self._bad(f"embedding {i} is a string that is not base64") from None
        if len(raw) % 4:
            raise self._bad(f"embedding {i} is {len(raw)} base64 bytes, not whole float32s")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
