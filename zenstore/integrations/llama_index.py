"""zenstore for LlamaIndex: a vector store and a node postprocessor that reranks.

``pip install 'zenstore[llama-index]'`` (llama-index-core 0.14)::

    from zenstore.integrations.llama_index import ZenstoreVectorStore, ZenstoreRerank

    vector_store = ZenstoreVectorStore()                     # temporary; or path="docs.zen"
    index = VectorStoreIndex(nodes, storage_context=StorageContext.from_defaults(
        vector_store=vector_store), embed_model=embed_model)
    engine = index.as_query_engine(similarity_top_k=20, llm=llm,
                                   node_postprocessors=[ZenstoreRerank(vector_store, top_n=3)])

Nodes are stored under their ``node_id`` with a payload holding the node's metadata
(flat, so it can be filtered), its text under ``text_key`` and LlamaIndex's serialised
node (``node_to_metadata_dict``: ``_node_content``, ``_node_type``, ``ref_doc_id``, ...).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import weakref
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import ConfigDict, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from ..errors import InvalidArgument
from ..rerank import MISSING_POLICIES, Reranker
from ..store import Store

__all__ = ["ZenstoreVectorStore", "ZenstoreRerank", "to_filter"]

_OPERATORS = {
    FilterOperator.EQ: "$eq", FilterOperator.NE: "$ne", FilterOperator.GT: "$gt",
    FilterOperator.GTE: "$gte", FilterOperator.LT: "$lt", FilterOperator.LTE: "$lte",
    FilterOperator.IN: "$in", FilterOperator.NIN: "$nin",
}


def _condition(f: MetadataFilter) -> dict:
    """One ``MetadataFilter`` in the store's filter language, where an array field matches
    when any element does: CONTAINS is equality, ANY is ``$in``, ALL one equality per value."""
    op, key, value = f.operator, f.key, f.value
    if op in _OPERATORS:
        return {key: {_OPERATORS[op]: value}}
    if op == FilterOperator.CONTAINS:
        return {key: {"$eq": value}}
    if op == FilterOperator.ANY:
        return {key: {"$in": value}}
    if op == FilterOperator.ALL:
        values = value if isinstance(value, (list, tuple)) else [value]
        return {"$and": [{key: {"$eq": v}} for v in values]} if values else {key: {"$exists": True}}
    if op == FilterOperator.IS_EMPTY:
        return {"$or": [{key: {"$exists": False}}, {key: {"$eq": None}}, {key: {"$eq": ""}}]}
    raise InvalidArgument(f"filter operator {op!r} on {key!r} is not supported: zenstore's filter "
                          "language has no text matching")


def to_filter(filters: MetadataFilters | None) -> dict | None:
    """LlamaIndex ``MetadataFilters`` as zenstore's Mongo-style filter dict (None: no filter).

    AND -> ``$and``, OR -> ``$or``, NOT (none of them match) -> ``$not`` of ``$or``;
    nested ``MetadataFilters`` nest; IS_EMPTY matches a missing, null or "" value;
    TEXT_MATCH(_INSENSITIVE) raise InvalidArgument (see ``_condition``).
    """
    if filters is None or not filters.filters:
        return None
    parts = []
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            sub = to_filter(f)
            if sub is not None:
                parts.append(sub)
        elif isinstance(f, MetadataFilter):
            parts.append(_condition(f))
        else:  # ExactMatchFilter (legacy)
            parts.append({f.key: {"$eq": f.value}})
    if not parts:
        return None
    condition = filters.condition or FilterCondition.AND
    if condition == FilterCondition.AND:
        return parts[0] if len(parts) == 1 else {"$and": parts}
    if condition == FilterCondition.OR:
        return {"$or": parts}
    if condition == FilterCondition.NOT:
        return {"$not": {"$or": parts}}
    raise InvalidArgument(f"filter condition {condition!r} is not supported")


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class ZenstoreVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store kept in a zenstore directory (``stores_text=True``).

    ``path=None``: a temporary store removed on :meth:`close` (or garbage collection); an
    existing store at ``path`` is opened, else created on the first add with the first
    nodes' embedding dimension; ``create_options`` go to ``Store.create`` (``metric``,
    ``n_base``, ``seed``, ...). Filters are translated by :func:`to_filter` and passed to
    the store (``Store.search(filter=)``, ``Store.ids(filter=)``), so its payload indexes
    answer them where it has them; query modes: default and MMR.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    stores_text: bool = True
    flat_metadata: bool = False
    path: str
    text_key: str = "text"
    create_options: dict = {}

    _store: Store | None = PrivateAttr(default=None)
    _temp_dir: str | None = PrivateAttr(default=None)
    _finalizer: Any = PrivateAttr(default=None)

    def __init__(self, path: str | os.PathLike | None = None, *, text_key: str = "text",
                 **create_options: Any) -> None:
        temp_dir = None
        if path is None:
            temp_dir = tempfile.mkdtemp(prefix="zenstore-llamaindex-")
            path = os.path.join(temp_dir, "store.zen")
        super().__init__(path=os.fspath(path), text_key=text_key, create_options=dict(create_options))
        if temp_dir is not None:
            self._temp_dir = temp_dir
            self._finalizer = weakref.finalize(self, _remove_tree, temp_dir)
        if os.path.isdir(self.path) and os.listdir(self.path):
            self._store = Store.open(self.path)

    @classmethod
    def class_name(cls) -> str:
        return "ZenstoreVectorStore"

    @property
    def client(self) -> Store | None:
        """The underlying :class:`zenstore.Store` (None until the first add)."""
        return self._store

    @property
    def store(self) -> Store | None:
        return self._store

    def close(self) -> None:
        """Close the store; a temporary store's directory is removed. Idempotent."""
        if self._store is not None:
            self._store.close()
        if self._finalizer is not None:
            self._finalizer()

    # --- writes ---------------------------------------------------------------------------

    def _payload(self, node: BaseNode) -> dict:
        payload = node_to_metadata_dict(node, remove_text=True, flat_metadata=self.flat_metadata)
        if self.text_key in payload:
            raise InvalidArgument(f"node {node.node_id!r} has metadata key {self.text_key!r}, which "
                                  f"holds the text; choose another text_key")
        payload[self.text_key] = node.get_content(metadata_mode=MetadataMode.NONE)
        return payload

    def add(self, nodes: list[BaseNode], **add_kwargs: Any) -> list[str]:
        """Store nodes (with their embeddings) under their node ids; an id already stored
        is replaced."""
        nodes = list(nodes)
        if not nodes:
            return []
        missing = [n.node_id for n in nodes if n.embedding is None]
        if missing:
            raise InvalidArgument(f"nodes without an embedding: {missing[:5]}")
        vectors = np.asarray([n.get_embedding() for n in nodes], dtype=np.float32)
        ids = [n.node_id for n in nodes]
        payloads = [self._payload(n) for n in nodes]
        if self._store is None:
            self._store = Store.create(self.path, dim=int(vectors.shape[1]), **self.create_options)
        self._store.upsert(ids, vectors, payloads)
        return ids

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the source document ``ref_doc_id``."""
        self.delete_nodes(filters=MetadataFilters(filters=[MetadataFilter(key="ref_doc_id", value=ref_doc_id)]))

    def delete_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None,
                     **delete_kwargs: Any) -> None:
        """Delete the nodes among ``node_ids`` that pass ``filters`` (both optional: no
        argument deletes nothing; use :meth:`clear`)."""
        if self._store is None or (node_ids is None and filters is None):
            return
        ids = self._select(node_ids, filters)
        if ids:
            self._store.delete(ids, missing_ok=True)

    def clear(self) -> None:
        """Delete every node."""
        if self._store is not None and len(self._store):
            self._store.delete(self._store.ids().tolist())

    # --- reads ----------------------------------------------------------------------------

    def _select(self, node_ids, filters) -> list[str]:
        """Stored ids among ``node_ids`` (None: all) passing ``filters``."""
        if node_ids is not None:
            wanted = list(dict.fromkeys(i for i in node_ids if isinstance(i, str)))
            wanted = [i for i, ok in zip(wanted, self._store.contains(wanted)) if ok] if wanted else []
        flt = to_filter(filters) if isinstance(filters, MetadataFilters) else filters
        if flt is None:
            return wanted if node_ids is not None else self._store.ids().tolist()
        passing = self._store.ids(filter=flt).tolist()
        if node_ids is None:
            return passing
        keep = set(wanted)
        return [i for i in passing if i in keep]

    def _node(self, ext_id: str, payload: dict | None) -> BaseNode:
        payload = dict(payload or {})
        text = payload.pop(self.text_key, "")
        node = metadata_dict_to_node(payload, text=text)
        node.embedding = None
        return node

    def get_nodes(self, node_ids: list[str] | None = None, filters: MetadataFilters | None = None) -> list[BaseNode]:
        """Stored nodes among ``node_ids`` (None: all) passing ``filters``."""
        if self._store is None:
            return []
        return [self._node(i, self._store.get(i).payload) for i in self._select(node_ids, filters)]

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """The ``similarity_top_k`` nearest nodes (restricted by ``filters``, ``node_ids``,
        ``doc_ids``); similarities are the store's scores. ``mode=MMR`` picks by maximal
        marginal relevance with ``mmr_threshold`` (default 0.5) as the relevance weight."""
        if query.mode not in (VectorStoreQueryMode.DEFAULT, VectorStoreQueryMode.MMR):
            raise InvalidArgument(f"query mode {query.mode!r} is not supported (default, mmr)")
        if query.query_embedding is None:
            raise InvalidArgument("ZenstoreVectorStore.query needs query.query_embedding")
        empty = VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
        if self._store is None or len(self._store) == 0:
            return empty
        restrict = {}
        node_ids = query.node_ids or None  # retrievers pass [] for "no restriction"
        flt = to_filter(query.filters)
        if query.doc_ids:
            doc = {"ref_doc_id": {"$in": list(query.doc_ids)}}
            flt = doc if flt is None else {"$and": [flt, doc]}
        if flt is not None:
            restrict["filter"] = flt
        if node_ids:
            wanted = list(dict.fromkeys(i for i in node_ids if isinstance(i, str)))
            if not wanted:
                return empty
            restrict["filter_ids"] = wanted
        k = max(1, int(query.similarity_top_k))
        q = np.asarray(query.query_embedding, dtype=np.float32)
        fetch = k if query.mode == VectorStoreQueryMode.DEFAULT else max(4 * k, 20)
        hits = self._store.search(q, k=fetch, **restrict, **kwargs)
        if query.mode == VectorStoreQueryMode.MMR and hits:
            from llama_index.core.indices.query.embedding_utils import get_top_k_mmr_embeddings

            vectors = [self._store.get(h.id).vector.tolist() for h in hits]
            scores, ids = get_top_k_mmr_embeddings(
                q.tolist(), vectors, similarity_top_k=k, embedding_ids=list(range(len(hits))),
                mmr_threshold=query.mmr_threshold if query.mmr_threshold is not None else 0.5)
            hits = [hits[i] for i in ids]
        return VectorStoreQueryResult(nodes=[self._node(h.id, h.payload) for h in hits],
                                      similarities=[h.score for h in hits], ids=[h.id for h in hits])

    # --- async: the same calls on a worker thread --------------------------------------------

    async def async_add(self, nodes: list[BaseNode], **kwargs: Any) -> list[str]:
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(self, node_ids=None, filters=None, **delete_kwargs: Any) -> None:
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        await asyncio.to_thread(self.clear)

    async def aget_nodes(self, node_ids=None, filters=None) -> list[BaseNode]:
        return await asyncio.to_thread(self.get_nodes, node_ids, filters)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        return await asyncio.to_thread(self.query, query, **kwargs)


class _LlamaEmbedder:
    """A LlamaIndex ``BaseEmbedding`` under the embedder method names zenstore uses."""

    def __init__(self, model) -> None:
        self.model = model

    def embed_query(self, text: str):
        return self.model.get_query_embedding(text)

    def embed_documents(self, texts: list[str]):
        return self.model.get_text_embedding_batch(texts)


def _as_embedder(embedder):
    if embedder is None or callable(getattr(embedder, "embed_query", None)):
        return embedder
    if callable(getattr(embedder, "get_query_embedding", None)):
        return _LlamaEmbedder(embedder)
    raise InvalidArgument(f"embedder must be a zenstore / LangChain embedder or a LlamaIndex "
                          f"embedding model, got {type(embedder).__name__}")


class ZenstoreRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes by the embeddings stored in a zenstore store; keeps the best
    ``top_n`` with their exact dequantized scores as ``NodeWithScore.score``.

    The query vector: with no ``embedder``, ``query_bundle.embedding`` -- what the
    retriever computed (a vector index retriever leaves it in the bundle of a sync query;
    LlamaIndex's async path builds a new bundle without it), which must then come from the
    model of the stored vectors. With an ``embedder`` (a zenstore embedder, a LangChain
    embeddings object or a LlamaIndex embedding model), it embeds ``query_bundle.query_str``:
    the first stage may use another model (a small-vector index). ``reuse_query_embedding``
    True reuses the bundle's embedding even when an embedder is given.
    ``store``: a :class:`zenstore.Store` or a :class:`ZenstoreVectorStore`. A node's stored
    id is its ``node_id`` (or ``metadata[id_key]``); ``missing`` as in ``zenstore.Reranker``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    embedder: Any = None
    top_n: int = 2
    id_key: str | None = None
    missing: str = "error"
    text_key: str = "text"
    reuse_query_embedding: bool = False

    def __init__(self, store=None, embedder=None, top_n: int = 2, **kwargs: Any) -> None:
        super().__init__(store=store, embedder=embedder, top_n=top_n, **kwargs)
        if self.missing not in MISSING_POLICIES:
            raise InvalidArgument(f"missing must be one of {MISSING_POLICIES}, got {self.missing!r}")

    @classmethod
    def class_name(cls) -> str:
        return "ZenstoreRerank"

    def _postprocess_nodes(self, nodes: list[NodeWithScore],
                           query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise InvalidArgument("ZenstoreRerank needs the query (a query bundle)")
        nodes = list(nodes)
        if not nodes:
            return []
        store = self.store.store if isinstance(self.store, ZenstoreVectorStore) else self.store
        if store is None:
            raise InvalidArgument("the ZenstoreVectorStore holds no nodes yet")
        embedder = _as_embedder(self.embedder)
        reuse = query_bundle.embedding is not None and (embedder is None or self.reuse_query_embedding)
        if reuse:
            query = np.asarray(query_bundle.embedding, dtype=np.float32)
        elif embedder is not None:
            query = query_bundle.query_str
        else:
            raise InvalidArgument("ZenstoreRerank has no query embedding: give it an embedder (an "
                                  "async query engine does not pass the retriever's embedding on)")
        reranker = Reranker(store, embedder, self.text_key, id_key=self.id_key)
        results = reranker.rerank(query, nodes, top_n=self.top_n, missing=self.missing)
        return [NodeWithScore(node=nodes[r.index].node, score=r.score) for r in results]
