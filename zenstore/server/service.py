"""What the read endpoints do, without HTTP: rerank, search, records, stats, embeddings.

Every method validates its input against the server's :class:`Limits` and raises
:class:`ApiError` naming the problem before doing any work; store errors are turned into
the matching status by ``httperrors``. The app (``app.py``) only parses JSON and calls
these; the benchmark calls them directly to measure the in-process cost.
"""

from __future__ import annotations

import inspect
import numbers
import re

import numpy as np

from ..errors import IdNotFound
from ..filters import compile_filter
from ..rerank import Reranker
from ..search import MAX_K
from ..validation import id_problem
from .config import Limits
from .httperrors import ApiError
from .vectors import decode_vector, encode_vector

_INT_ID = re.compile(r"-?(0|[1-9][0-9]*)")
_PREVIEW = 60


def _preview(text: str) -> str:
    return repr(text if len(text) <= _PREVIEW else text[:_PREVIEW] + "...")


def relevance(metric: str, raw: np.ndarray) -> np.ndarray:
    """Scores mapped into [0, 1], higher is better, as Cohere's ``relevance_score`` is:
    cosine ``(1 + s) / 2``, inner product ``sigmoid(s)``, l2 ``1 / (1 + d)``. Monotone, so
    the order is the store's; the raw score is returned beside it."""
    raw = np.asarray(raw, dtype=np.float64)
    if metric == "cosine":
        return np.clip((1.0 + raw) / 2.0, 0.0, 1.0)
    if metric == "l2":
        return 1.0 / (1.0 + np.maximum(raw, 0.0))
    return 0.5 * (1.0 + np.tanh(0.5 * raw))  # sigmoid without overflow


def _store_supports_filter(store) -> bool:
    try:
        return "filter" in inspect.signature(store.search).parameters
    except (TypeError, ValueError):
        return False


class ReadService:
    """The read side of one server process, over a Store (opened read-only in workers)."""

    def __init__(self, store, *, embedder=None, lookup=None, limits: Limits = Limits(),
                 text_field: str = "text") -> None:
        self.store = store
        self.embedder = embedder
        self.lookup = lookup
        self.limits = limits
        self.text_field = text_field
        self.metric = store.metric
        self.dim = store.dim
        self.native_filter = _store_supports_filter(store)
        self.reranker = Reranker(store, embedder, text_field)  # scores what resolution found

    # --- shared checks ----------------------------------------------------------------------

    def _text(self, value, what: str) -> str:
        if not isinstance(value, str):
            raise ApiError(422, "invalid_argument", f"{what} must be a string")
        if len(value) > self.limits.max_text_chars:
            raise ApiError(422, "limit_exceeded", f"{what} has {len(value):,} characters; this server "
                           f"accepts at most {self.limits.max_text_chars:,}")
        return value

    def _count(self, value, name: str, maximum: int, *, default: int | None = None) -> int:
        if value is None and default is not None:
            return default
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
            raise ApiError(422, "invalid_argument", f"{name} must be a positive integer, got {value!r}")
        if value > maximum:
            raise ApiError(422, "limit_exceeded", f"{name}={value} is above this server's limit of {maximum}")
        return int(value)

    def need_embedder(self, why: str):
        if self.embedder is None:
            raise ApiError(422, "no_embedder", f"{why} needs an embedder, and this server has none "
                           f"(start it with --embedder SPEC)")
        return self.embedder

    def embed_query(self, text: str) -> np.ndarray:
        emb = self.need_embedder("a text query")
        q = np.asarray(emb.embed_query(text), dtype=np.float32)
        if q.shape != (self.dim,):
            raise ApiError(500, "embedder_mismatch", f"the embedder returned a {q.shape} vector; the "
                           f"store's dimension is {self.dim}")
        return q

    # --- rerank --------------------------------------------------------------------------------

    def _as_ids(self, docs: list[str]) -> list:
        """Each document that is a stored id, as that id (else None)."""
        id_type = self.store.snapshot().id_type
        out: list = [None] * len(docs)
        if id_type == "int":
            pos = [i for i, d in enumerate(docs) if _INT_ID.fullmatch(d) and -(2**63) <= int(d) < 2**63]
            cand = [int(docs[i]) for i in pos]
        elif id_type == "str":
            pos = [i for i, d in enumerate(docs) if id_problem(d) is None]
            cand = [docs[i] for i in pos]
        else:
            return out
        if cand:
            for i, v, ok in zip(pos, cand, self.store.contains(cand)):
                if ok:
                    out[i] = v
        return out

    def rerank(self, query, documents, top_n=None, return_documents: bool = False) -> list[dict]:
        """Cohere rerank: ``results`` best first, each ``{index, relevance_score, score,
        stored_id, resolved_by, document?}``. Each document string is a stored id, else the
        text of a stored document (payload ``text_field``), else embedded on the fly when
        the server has an embedder; anything else is a 422 naming the documents."""
        query = self._text(query, "query")
        if not isinstance(documents, list):
            raise ApiError(422, "invalid_argument", "documents must be a list")
        if len(documents) > self.limits.max_documents:
            raise ApiError(422, "limit_exceeded", f"{len(documents):,} documents; this server reranks at "
                           f"most {self.limits.max_documents:,} per request")
        docs = [self._text(d, f"documents[{i}]") for i, d in enumerate(documents)]
        n = len(docs)
        top_n = self._count(top_n, "top_n", self.limits.max_top_n, default=max(n, 1))
        if n == 0:
            return []
        q = self.embed_query(query)
        for attempt in range(3):
            try:
                ids, how = self._resolve(docs)
                raw = self._score(q, docs, ids, how)
                break
            except IdNotFound:  # deleted between resolving and scoring: resolve again
                if attempt == 2:
                    raise
        rel = relevance(self.metric, raw)
        key = raw if self.metric == "l2" else -raw
        order = np.lexsort((np.arange(n), key))[:top_n]
        results = []
        for i in order.tolist():
            item = {"index": i, "relevance_score": float(rel[i]), "score": float(raw[i]),
                    "stored_id": ids[i], "resolved_by": how[i]}
            if return_documents:
                item["document"] = {"text": docs[i]}
            results.append(item)
        return results

    def _resolve(self, docs: list[str]) -> tuple[list, list[str]]:
        ids = self._as_ids(docs)
        how = ["id" if v is not None else "" for v in ids]
        todo = [i for i, v in enumerate(ids) if v is None]
        if todo and self.lookup is not None and self.lookup.unavailable() is None:
            found = self.lookup.lookup([docs[i] for i in todo])
            cand = {i: c for i, c in zip(todo, found) if c}
            if cand:
                flat = sorted({v for c in cand.values() for v in c}, key=lambda v: (isinstance(v, str), v))
                live = dict(zip(flat, self.store.contains(flat).tolist()))
                for i, c in cand.items():
                    alive = sorted((v for v in c if live[v]), key=lambda v: (isinstance(v, str), v))
                    if alive:
                        ids[i], how[i] = alive, "text"  # verified against the payload when scored
        return ids, how

    def _score(self, q, docs, ids, how) -> np.ndarray:
        """Raw scores per document, from :class:`zenstore.Reranker`: the store's exact
        scores for stored ids, the embedder's float vectors for the rest. Text-resolved
        candidates are checked against their stored payload here (a stale index entry
        never resolves a text)."""
        raw = np.full(len(docs), np.nan)
        flat = []
        for i, v in enumerate(ids):
            if how[i] == "id":
                flat.append(v)
            elif how[i] == "text":
                flat.extend(v)
        if flat:
            uniq = list(dict.fromkeys(flat))
            by_id = {r.id: r for r in self.reranker.rerank(q, uniq, top_n=len(uniq))}
            for i, v in enumerate(ids):
                if how[i] == "id":
                    raw[i] = by_id[v].score
                elif how[i] == "text":
                    ok = [c for c in v if isinstance(by_id[c].payload, dict)
                          and by_id[c].payload.get(self.text_field) == docs[i]]
                    if ok:
                        ids[i], raw[i] = ok[0], by_id[ok[0]].score
                    else:
                        ids[i], how[i] = None, ""
        rest = [i for i in range(len(docs)) if not how[i]]
        if rest:
            if self.embedder is None:
                why = ""
                if self.lookup is None:
                    why = " (this server has no text index)"
                elif self.lookup.unavailable():
                    why = f" ({self.lookup.unavailable()})"
                shown = ", ".join(f"documents[{i}] {_preview(docs[i])}" for i in rest[:5])
                more = f" and {len(rest) - 5} more" if len(rest) > 5 else ""
                raise ApiError(422, "unknown_document",
                               f"{len(rest)} document(s) are neither a stored id nor the '{self.text_field}' "
                               f"of a stored document{why}, and this server has no embedder to embed them "
                               f"(start it with --embedder SPEC): {shown}{more}")
            texts = [{self.text_field: docs[i]} for i in rest]  # no id: Reranker embeds each one
            for r in self.reranker.rerank(q, texts, top_n=len(rest), missing="embed"):
                raw[rest[r.index]] = r.score
                how[rest[r.index]] = "embedded"
        return raw

    # --- search --------------------------------------------------------------------------------

    def search(self, *, query=None, vector=None, k=10, filter=None, nprobe=None, shortlist=None,
               with_payload: bool = True) -> list[dict]:
        if (query is None) == (vector is None):
            raise ApiError(422, "invalid_argument", "give exactly one of 'query' (text) or 'vector'")
        k = self._count(k, "k", self.limits.max_k)
        if nprobe is not None and nprobe != "all":
            nprobe = self._count(nprobe, "nprobe", 1 << 20)
        shortlist = None if shortlist is None else self._count(shortlist, "shortlist", MAX_K)
        if filter is not None and not isinstance(filter, dict):
            raise ApiError(422, "invalid_filter", "filter must be a JSON object")
        q = self.embed_query(self._text(query, "query")) if vector is None else decode_vector(vector, self.dim, "vector")
        if filter is None:
            hits = self.store.search(q, k, shortlist=shortlist, nprobe=nprobe, with_payload=with_payload)
        elif self.native_filter:
            hits = self.store.search(q, k, shortlist=shortlist, nprobe=nprobe, filter=filter,
                                     with_payload=with_payload)
        else:
            hits = self._post_filtered(q, k, compile_filter(filter), shortlist, nprobe, with_payload)
        return [{"id": h.id, "score": h.score, **({"payload": h.payload} if with_payload else {})} for h in hits]

    def _post_filtered(self, q, k, flt, shortlist, nprobe, with_payload):
        """Until the store filters natively: search an expanding candidate list and keep
        the hits whose payload matches, until k match or every candidate was seen."""
        n = len(self.store)
        want = 4 * k
        while True:
            want = min(want, max(n, 1), MAX_K)
            sl = None if shortlist is None else max(shortlist, want)
            hits = self.store.search(q, want, shortlist=sl, nprobe=nprobe, with_payload=True)
            good = [h for h in hits if flt.matches(h.payload)]
            if len(good) >= k or len(hits) < want or want >= n or want >= MAX_K:
                break
            want *= 4
        good = good[:k]
        if not with_payload:
            good = [type(h)(h.id, h.score, None) for h in good]
        return good

    # --- records, stats, embeddings ---------------------------------------------------------------

    def parse_id(self, raw: str):
        """A path id as the store's kind of id (404 for what cannot be one)."""
        id_type = self.store.snapshot().id_type
        if id_type == "int":
            if not _INT_ID.fullmatch(raw) or not -(2**63) <= int(raw) < 2**63:
                raise ApiError(404, "not_found", f"id {raw!r} not found (this store has int ids)")
            return int(raw)
        if id_problem(raw) is not None:
            raise ApiError(404, "not_found", f"id {raw!r} not found ({id_problem(raw)})")
        return raw

    def record(self, raw_id: str, with_vector: bool = False, vector_format: str = "float") -> dict:
        if vector_format not in ("float", "base64"):
            raise ApiError(422, "invalid_argument", "vector_format must be 'float' or 'base64'")
        rec = self.store.get(self.parse_id(raw_id))
        out = {"id": rec.id, "payload": rec.payload}
        if with_vector:
            out["vector"] = encode_vector(rec.vector, vector_format)
        return out

    def stats(self) -> dict:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in self.store.stats().items()}

    def embeddings(self, inputs, encoding_format: str = "float", dimensions=None) -> np.ndarray:
        emb = self.need_embedder("/v1/embeddings")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or not inputs:
            raise ApiError(422, "invalid_argument", "input must be a string or a non-empty list of strings")
        if len(inputs) > self.limits.max_embed_inputs:
            raise ApiError(422, "limit_exceeded", f"{len(inputs):,} inputs; this server embeds at most "
                           f"{self.limits.max_embed_inputs:,} per request")
        texts = [self._text(t, f"input[{i}]") if isinstance(t, str) else None for i, t in enumerate(inputs)]
        if any(t is None for t in texts):
            raise ApiError(422, "invalid_argument", "input must hold strings (token arrays are not supported)")
        if encoding_format not in ("float", "base64"):
            raise ApiError(422, "invalid_argument", "encoding_format must be 'float' or 'base64'")
        vecs = np.asarray(emb.embed_documents(texts), dtype=np.float32)
        if dimensions is not None and dimensions != vecs.shape[1]:
            raise ApiError(422, "invalid_argument", f"dimensions={dimensions!r}: this server's embedder "
                           f"gives {vecs.shape[1]}-d vectors and cannot shorten them")
        return vecs


__all__ = ["ReadService", "relevance"]
