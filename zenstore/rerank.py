"""Reranking first-stage candidates with the embeddings a store keeps.

A cheap first stage (BM25, a small-vector index) returns ~100 candidates; a
:class:`Reranker` scores them against the query with the store's exact dequantized scores
(``Store.rerank``) and returns the best ``top_n``:

    results = Reranker(store, embedder).rerank("what causes scurvy?", candidates, top_n=5)
    context = [r.text for r in results]

Candidates are whatever the first stage produced: stored ids, dicts with an ``"id"``,
LangChain ``Document``s (``.id``, or ``metadata[id_key]``), LlamaIndex ``NodeWithScore`` /
``TextNode``s (``node_id``, or ``metadata[id_key]``). Nothing here imports LangChain or
LlamaIndex: candidates are recognised by their attributes.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import IdNotFound, InvalidArgument
from .validation import positive_int

MISSING_POLICIES = ("error", "skip", "embed")


@dataclass(frozen=True)
class RerankResult:
    """One reranked candidate, best first in the list :meth:`Reranker.rerank` returns.

    ``index`` is the candidate's position in the list given; ``score`` follows the store's
    metric (cosine / ip: similarity, higher is better; l2: squared distance, lower is
    better); ``embedded`` is True when the candidate was not stored and was scored from
    the embedder's float vector of its text (``missing="embed"``), not from the store.
    """

    id: Any
    score: float
    index: int
    payload: dict | None
    text: str | None
    embedded: bool = False


def _plain(value):
    return value.item() if isinstance(value, np.generic) else value


def candidate_id(candidate, id_key: str | None = None):
    """The stored id a first-stage candidate carries (None when it carries none).

    ``id_key`` names a metadata (or dict) key that holds the id, tried first; then a
    LangChain ``Document.id``, a LlamaIndex node's ``node_id``, a dict's ``"id"``.
    """
    return _plain(_find_id(candidate, id_key))


def _is_id(value) -> bool:
    return isinstance(value, (str, numbers.Integral)) and not isinstance(value, bool)


def _find_id(candidate, id_key):
    if _is_id(candidate):
        return candidate
    if isinstance(candidate, dict):
        if id_key is not None and id_key in candidate:
            return candidate[id_key]
        return candidate.get("id")
    node = getattr(candidate, "node", None)  # LlamaIndex NodeWithScore
    obj = node if node is not None and hasattr(node, "node_id") else candidate
    metadata = getattr(obj, "metadata", None)
    if id_key is not None and isinstance(metadata, dict) and id_key in metadata:
        return metadata[id_key]
    if hasattr(obj, "node_id"):  # LlamaIndex BaseNode
        return obj.node_id
    if hasattr(obj, "page_content"):  # LangChain Document
        return getattr(obj, "id", None)
    raise InvalidArgument(
        f"cannot find an id in a candidate of type {type(candidate).__name__}: pass stored ids, "
        f"dicts with 'id', LangChain Documents or LlamaIndex nodes"
    )


def candidate_text(candidate, text_field: str = "text") -> str | None:
    """The text a candidate carries itself (None for a bare id)."""
    if isinstance(candidate, dict):
        value = candidate.get(text_field)
        return value if isinstance(value, str) else None
    node = getattr(candidate, "node", None)
    obj = node if node is not None and hasattr(node, "node_id") else candidate
    if hasattr(obj, "page_content"):
        return obj.page_content
    get_content = getattr(obj, "get_content", None)
    if callable(get_content):
        return get_content()
    text = getattr(obj, "text", None)
    return text if isinstance(text, str) else None


def float_scores(query: np.ndarray, vectors: np.ndarray, metric: str) -> np.ndarray:
    """Exact float scores in the store's convention (cosine, ip: similarity; l2: squared
    distance)."""
    q = np.asarray(query, dtype=np.float64).ravel()
    x = np.asarray(vectors, dtype=np.float64)
    if metric == "l2":
        return ((x - q) ** 2).sum(axis=1)
    if metric == "cosine":
        norms = np.linalg.norm(x, axis=1) * np.linalg.norm(q)
        return np.divide(x @ q, norms, out=np.zeros(len(x)), where=norms > 0)
    return x @ q


def _key(ext_id):
    """Ids compare by kind and value: the int 1 and the str "1" are different ids."""
    return (isinstance(ext_id, str), ext_id)


class Reranker:
    """Rerank first-stage candidates by the embeddings stored in ``store``.

    ``embedder`` (anything with ``embed_query`` / ``embed_documents``; see
    ``zenstore.embedders``) embeds text queries, and candidate texts for
    ``missing="embed"``; a vector query needs none. ``text_field`` is the payload key a
    result's ``.text`` is read from when the candidate carries no text of its own.
    ``id_key``: the metadata key that holds a Document's or node's stored id (default: its
    own id).
    """

    def __init__(self, store, embedder=None, text_field: str = "text", *, id_key: str | None = None) -> None:
        from .embedders import as_embedder  # the embedders package imports no model up front

        self.store = store
        self.embedder = None if embedder is None else as_embedder(embedder)
        self.text_field = text_field
        self.id_key = id_key

    def __repr__(self) -> str:
        return f"Reranker({self.store!r}, embedder={self.embedder!r}, text_field={self.text_field!r})"

    def query_vector(self, query) -> np.ndarray:
        """A text query embedded with the embedder; a vector query as float32."""
        if isinstance(query, str):
            if self.embedder is None:
                raise InvalidArgument("a text query needs an embedder: Reranker(store, embedder=...)")
            return np.asarray(self.embedder.embed_query(query), dtype=np.float32)
        return np.asarray(query, dtype=np.float32)

    def rerank(self, query, candidates, top_n: int = 5, *, missing: str = "error") -> list[RerankResult]:
        """The best ``top_n`` of ``candidates`` for ``query`` (text or vector), best first.

        Stored candidates get the store's exact dequantized scores. ``missing`` decides
        what happens to candidates whose id is not stored (or that carry no id):
        ``"error"`` raises IdNotFound naming them, ``"skip"`` leaves them out, ``"embed"``
        embeds their text and scores the float vector (``RerankResult.embedded``).
        A candidate repeated (the same id twice) is scored once, at its first position.
        """
        if missing not in MISSING_POLICIES:
            raise InvalidArgument(f"missing must be one of {MISSING_POLICIES}, got {missing!r}")
        top_n = positive_int(top_n, "top_n")
        candidates = list(candidates)
        if not candidates:
            return []
        q = self.query_vector(query)
        ids = [candidate_id(c, self.id_key) for c in candidates]
        present = np.zeros(len(ids), dtype=bool)
        for kind in (str, numbers.Integral):  # one call per id kind (a store holds one kind)
            pos = [i for i, v in enumerate(ids) if _is_id(v) and isinstance(v, kind)]
            if pos:
                present[pos] = self.store.contains([ids[i] for i in pos])
        stored_pos, missing_pos, seen = [], [], set()
        for i, ext_id in enumerate(ids):
            key = _key(ext_id) if _is_id(ext_id) else None
            if key is not None and key in seen:
                continue
            if key is not None:
                seen.add(key)
            (stored_pos if present[i] else missing_pos).append(i)
        if missing_pos and missing == "error":
            shown = ", ".join(f"{ids[i]!r} (candidate {i})" for i in missing_pos[:5])
            more = f" and {len(missing_pos) - 5} more" if len(missing_pos) > 5 else ""
            raise IdNotFound(f"{len(missing_pos)} candidate(s) not in the store: {shown}{more}; "
                             f"pass missing='skip' or missing='embed'")
        results: list[RerankResult] = []
        if stored_pos:
            pos_of = {_key(ids[i]): i for i in stored_pos}
            # the overall best top_n lie within the stored best top_n and the embedded ones,
            # so the store scores all and reads payloads for top_n only
            for hit in self.store.rerank(q, [ids[i] for i in stored_pos], top_n=min(top_n, len(stored_pos))):
                i = pos_of[_key(hit.id)]
                results.append(self._result(candidates[i], hit.id, hit.score, i, hit.payload, False))
        if missing_pos and missing == "embed":
            results.extend(self._embed_missing(q, candidates, ids, missing_pos))
        lower_is_better = self.store.metric == "l2"
        results.sort(key=lambda r: (r.score if lower_is_better else -r.score, r.index))
        return results[:top_n]

    def _result(self, candidate, ext_id, score, index, payload, embedded) -> RerankResult:
        text = candidate_text(candidate, self.text_field)
        if text is None and isinstance(payload, dict) and isinstance(payload.get(self.text_field), str):
            text = payload[self.text_field]
        return RerankResult(ext_id, float(score), index, payload, text, embedded)

    def _embed_missing(self, q, candidates, ids, positions) -> list[RerankResult]:
        if self.embedder is None:
            raise InvalidArgument("missing='embed' needs an embedder: Reranker(store, embedder=...)")
        texts = [candidate_text(candidates[i], self.text_field) for i in positions]
        lacking = [i for i, t in zip(positions, texts) if t is None]
        if lacking:
            raise InvalidArgument(f"missing='embed': candidates {lacking[:5]} are not stored and "
                                  f"carry no text to embed")
        vectors = np.asarray(self.embedder.embed_documents(texts), dtype=np.float32)
        if vectors.shape[1:] != q.shape:
            raise InvalidArgument(f"the embedder's vectors have shape {vectors.shape[1:]}, the "
                                  f"query {q.shape}: they must come from the same model")
        scores = float_scores(q, vectors, self.store.metric)
        return [self._result(candidates[i], ids[i], s, i, None, True) for i, s in zip(positions, scores)]
