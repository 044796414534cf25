"""zenstore for LangChain: a ``VectorStore`` and a document compressor that reranks.

``pip install 'zenstore[langchain]'`` (langchain-core 1.x)::

    from zenstore.integrations.langchain import ZenstoreVectorStore, ZenstoreReranker

    vs = ZenstoreVectorStore(embeddings)                 # a temporary store, removed on close
    vs.add_documents(docs)                               # ids: Document.id, or new uuid4s
    vs.similarity_search("query", k=4)

    reranker = ZenstoreReranker(vs, embeddings, top_n=3)  # for ContextualCompressionRetriever
    reranker.compress_documents(bm25_docs, "query")       # metadata["relevance_score"] set

Documents are stored with string ids; the payload is the document's metadata plus its
text under ``text_key`` ("text"), so ``zenstore.Reranker(store)`` and the store's own
tools read the same rows.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance
from pydantic import ConfigDict

from ..errors import InvalidArgument
from ..rerank import MISSING_POLICIES, Reranker
from ..store import Store

__all__ = ["ZenstoreVectorStore", "ZenstoreReranker"]


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class ZenstoreVectorStore(VectorStore):
    """A LangChain vector store kept in a zenstore directory.

    ``path=None`` makes a temporary store that is removed on :meth:`close` (or when the
    object is garbage-collected); an existing store at ``path`` is opened, else one is
    created there on the first add. The store's ``dim`` comes from the embedding's first
    vectors; ``create_options`` are ``Store.create``'s (``metric="cosine"``, ``n_base``,
    ``seed``, ...). The first add trains the codec's base matrix on its batch: give it a
    representative batch (or open a store trained beforehand).

    ``filter=``: a dict in the store's filter language (``{"field": value}``, ``$eq $ne
    $gt $gte $lt $lte $in $nin $exists $and $or $not``, dotted paths, arrays matching
    when any element does; docs/api.md "Filters"), passed to ``Store.search(filter=)``
    and so answered by the store's payload indexes where it has them; or a callable
    ``metadata -> bool``, evaluated in Python over every stored payload.
    """

    def __init__(self, embedding: Embeddings, path: str | os.PathLike | None = None, *,
                 text_key: str = "text", **create_options: Any) -> None:
        if not callable(getattr(embedding, "embed_documents", None)) or \
                not callable(getattr(embedding, "embed_query", None)):
            raise InvalidArgument(f"embedding must have embed_documents / embed_query, got "
                                  f"{type(embedding).__name__}")
        self.embedding = embedding
        self.text_key = text_key
        self._create_options = dict(create_options)
        self._temp_dir = None
        self._finalizer = None
        if path is None:
            self._temp_dir = tempfile.mkdtemp(prefix="zenstore-langchain-")
            self._finalizer = weakref.finalize(self, _remove_tree, self._temp_dir)
            path = os.path.join(self._temp_dir, "store.zen")
        self.path = os.fspath(path)
        self._store: Store | None = None
        if os.path.isdir(self.path) and os.listdir(self.path):
            self._store = Store.open(self.path)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def store(self) -> Store | None:
        """The underlying :class:`zenstore.Store` (None until the first add)."""
        return self._store

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    def close(self) -> None:
        """Close the store; a temporary store's directory is removed. Idempotent."""
        if self._store is not None:
            self._store.close()
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> ZenstoreVectorStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _ensure_store(self, dim: int) -> Store:
        if self._store is None:
            self._store = Store.create(self.path, dim=dim, **self._create_options)
        return self._store

    # --- writes ---------------------------------------------------------------------------

    def _payloads(self, texts: list[str], metadatas) -> list[dict]:
        if metadatas is None:
            metadatas = [{}] * len(texts)
        metadatas = list(metadatas)
        if len(metadatas) != len(texts):
            raise InvalidArgument(f"got {len(texts)} texts but {len(metadatas)} metadatas")
        out = []
        for i, (text, meta) in enumerate(zip(texts, metadatas)):
            meta = dict(meta or {})
            if self.text_key in meta:
                raise InvalidArgument(f"metadata of text {i} has the key {self.text_key!r}, which "
                                      f"holds the text; choose another text_key")
            meta[self.text_key] = text
            out.append(meta)
        return out

    @staticmethod
    def _ids(ids, n: int) -> list[str]:
        if ids is None:
            return [str(uuid.uuid4()) for _ in range(n)]
        ids = list(ids)
        if len(ids) != n:
            raise InvalidArgument(f"got {n} texts but {len(ids)} ids")
        out = []
        for i in ids:
            if i is not None and not isinstance(i, str):
                raise InvalidArgument(f"LangChain ids are str, got {type(i).__name__} {i!r}")
            out.append(i if i else str(uuid.uuid4()))
        return out

    def _write(self, texts: list[str], vectors, metadatas, ids) -> list[str]:
        ids = self._ids(ids, len(texts))
        payloads = self._payloads(texts, metadatas)
        if not texts:
            return []
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(texts):
            raise InvalidArgument(f"the embedding returned shape {vectors.shape} for {len(texts)} texts")
        self._ensure_store(int(vectors.shape[1])).upsert(ids, vectors, payloads)
        return ids

    def add_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Embed and store ``texts`` (an existing id is replaced); returns their ids."""
        texts = list(texts)
        vectors = self.embedding.embed_documents(texts) if texts else []
        return self._write(texts, vectors, metadatas, ids)

    async def aadd_texts(self, texts: Iterable[str], metadatas: list[dict] | None = None, *,
                         ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        texts = list(texts)
        vectors = await self.embedding.aembed_documents(texts) if texts else []
        return await run_in_executor(None, self._write, texts, vectors, metadatas, ids)

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete ``ids`` (unknown ids are ignored); ``ids=None`` deletes everything."""
        if self._store is None:
            return True
        if ids is None:
            ids = self._store.ids().tolist()
        ids = [i for i in ids if isinstance(i, str)]
        if ids:
            self._store.delete(list(dict.fromkeys(ids)), missing_ok=True)
        return True

    # --- reads ----------------------------------------------------------------------------

    def _document(self, ext_id: str, payload: dict | None) -> Document:
        meta = dict(payload or {})
        text = meta.pop(self.text_key, "")
        return Document(id=ext_id, page_content=text, metadata=meta)

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The stored documents among ``ids``, in the order asked (unknown ids skipped)."""
        if self._store is None:
            return []
        wanted = [i for i in ids if isinstance(i, str)]
        if not wanted:
            return []
        present = self._store.contains(wanted)
        return [self._document(i, self._store.get(i).payload) for i, ok in zip(wanted, present) if ok]

    def _predicate_ids(self, predicate) -> list:
        """Ids of the stored rows whose metadata (the payload less the text) passes a
        callable filter: one Python pass over every payload."""
        strip = self.text_key
        out = []
        for ids, _vectors, payloads in self._store.iter_records():
            for ext_id, payload in zip(ids.tolist(), payloads):
                if predicate({k: v for k, v in (payload or {}).items() if k != strip}):
                    out.append(ext_id)
        return out

    def _search(self, vector, k: int, flt=None, **kwargs) -> list:
        if k < 1:
            raise InvalidArgument(f"k must be a positive int, got {k!r}")
        if self._store is None or len(self._store) == 0:
            return []
        options = {o: kwargs[o] for o in ("shortlist", "nprobe") if o in kwargs}
        if callable(flt):
            options["filter_ids"] = self._predicate_ids(flt)
            if not options["filter_ids"]:
                return []
        elif flt is not None:
            options["filter"] = flt
        return self._store.search(np.asarray(vector, dtype=np.float32), k=k, **options)

    def similarity_search_with_score_by_vector(self, embedding: list[float], k: int = 4,
                                               filter: dict | Callable | None = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """``(document, score)`` best first; the score is the store's (cosine / ip:
        similarity; l2: squared distance)."""
        return [(self._document(h.id, h.payload), h.score) for h in self._search(embedding, k, filter, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict | Callable | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        if self._store is None or len(self._store) == 0:
            return []
        return self.similarity_search_with_score_by_vector(self.embedding.embed_query(query), k,
                                                           filter, **kwargs)

    async def asimilarity_search_with_score(self, query: str, k: int = 4,
                                            filter: dict | Callable | None = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        if self._store is None or len(self._store) == 0:
            return []
        vector = await self.embedding.aembed_query(query)
        return await run_in_executor(None, self.similarity_search_with_score_by_vector, vector, k,
                                     filter, **kwargs)

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    filter: dict | Callable | None = None, **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    def similarity_search(self, query: str, k: int = 4, filter: dict | Callable | None = None,
                          **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, filter: dict | Callable | None = None,
                                 **kwargs: Any) -> list[Document]:
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        """Store scores -> [0, 1]: cosine and ip (unit vectors assumed) map the similarity
        s to (1 + s) / 2; l2 maps the squared distance d to 1 - sqrt(d / 4) (0 at the
        distance of opposite unit vectors). Clipped to [0, 1]."""
        metric = self._store.metric if self._store is not None else self._create_options.get("metric", "cosine")
        if metric == "l2":
            return lambda d: float(min(1.0, max(0.0, 1.0 - (max(d, 0.0) / 4.0) ** 0.5)))
        return lambda s: float(min(1.0, max(0.0, (1.0 + s) / 2.0)))

    def max_marginal_relevance_search_by_vector(self, embedding: list[float], k: int = 4, fetch_k: int = 20,
                                                lambda_mult: float = 0.5, filter: dict | Callable | None = None,
                                                **kwargs: Any) -> list[Document]:
        """Fetch ``fetch_k`` nearest, then pick ``k`` by maximal marginal relevance over
        their stored (dequantized) vectors."""
        hits = self._search(embedding, max(fetch_k, k), filter, **kwargs)
        if not hits:
            return []
        vectors = np.stack([self._store.get(h.id).vector for h in hits])
        picked = maximal_marginal_relevance(np.asarray(embedding, dtype=np.float32), vectors,
                                            lambda_mult=lambda_mult, k=k)
        return [self._document(hits[i].id, hits[i].payload) for i in picked]

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: dict | Callable | None = None, **kwargs: Any) -> list[Document]:
        if self._store is None or len(self._store) == 0:
            return []
        return self.max_marginal_relevance_search_by_vector(self.embedding.embed_query(query), k, fetch_k,
                                                            lambda_mult, filter, **kwargs)

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: dict | Callable | None = None,
                                             **kwargs: Any) -> list[Document]:
        if self._store is None or len(self._store) == 0:
            return []
        vector = await self.embedding.aembed_query(query)
        return await run_in_executor(None, self.max_marginal_relevance_search_by_vector, vector, k, fetch_k,
                                     lambda_mult, filter, **kwargs)

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                   ids: list[str] | None = None, path: str | os.PathLike | None = None,
                   **kwargs: Any) -> ZenstoreVectorStore:
        """A new store (temporary unless ``path``) holding ``texts``; ``kwargs`` go to the
        constructor (``text_key``, ``metric``, ``n_base``, ...)."""
        store = cls(embedding, path=path, **kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store

    @classmethod
    async def afrom_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict] | None = None, *,
                          ids: list[str] | None = None, path: str | os.PathLike | None = None,
                          **kwargs: Any) -> ZenstoreVectorStore:
        store = await asyncio.to_thread(cls, embedding, path=path, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=ids)
        return store


class ZenstoreReranker(BaseDocumentCompressor):
    """Rerank documents by the embeddings stored in a zenstore store, like CohereRerank:
    ``compress_documents(documents, query)`` returns the best ``top_n`` (copies) with
    ``metadata["relevance_score"]`` set to the store's exact dequantized score.

    ``store``: a :class:`zenstore.Store` or a :class:`ZenstoreVectorStore`. A document's
    stored id is ``Document.id``, or ``metadata[id_key]`` when ``id_key`` is given.
    ``missing``: what to do with documents not in the store (see ``zenstore.Reranker``).
    Use it in ``ContextualCompressionRetriever(base_compressor=reranker, base_retriever=...)``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: Any
    embedding: Any
    top_n: int = 3
    id_key: str | None = None
    missing: str = "error"
    text_key: str = "text"

    def __init__(self, store=None, embedding=None, top_n: int = 3, id_key: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(store=store, embedding=embedding, top_n=top_n, id_key=id_key, **kwargs)
        if self.missing not in MISSING_POLICIES:
            raise InvalidArgument(f"missing must be one of {MISSING_POLICIES}, got {self.missing!r}")

    def _reranker(self) -> Reranker:
        store = self.store.store if isinstance(self.store, ZenstoreVectorStore) else self.store
        if store is None:
            raise InvalidArgument("the ZenstoreVectorStore holds no documents yet")
        return Reranker(store, self.embedding, self.text_key, id_key=self.id_key)

    def _compressed(self, documents: Sequence[Document], results) -> list[Document]:
        out = []
        for r in results:
            doc = documents[r.index]
            out.append(Document(id=doc.id, page_content=doc.page_content,
                                metadata={**doc.metadata, "relevance_score": r.score}))
        return out

    def compress_documents(self, documents: Sequence[Document], query: str,
                           callbacks: Callbacks | None = None) -> Sequence[Document]:
        documents = list(documents)
        if not documents:
            return []
        results = self._reranker().rerank(query, documents, top_n=self.top_n, missing=self.missing)
        return self._compressed(documents, results)

    async def acompress_documents(self, documents: Sequence[Document], query: str,
                                  callbacks: Callbacks | None = None) -> Sequence[Document]:
        documents = list(documents)
        if not documents:
            return []
        aembed = getattr(self.embedding, "aembed_query", None)
        vector = await aembed(query) if aembed is not None else await asyncio.to_thread(
            self.embedding.embed_query, query)
        results = await asyncio.to_thread(self._reranker().rerank, np.asarray(vector, dtype=np.float32),
                                          documents, self.top_n, missing=self.missing)
        return self._compressed(documents, results)
