"""Embedders: text -> float32 vectors, behind LangChain's method names.

``embed_query(text) -> (dim,)``, ``embed_documents(texts) -> (n, dim)``, ``dim``. Ship:
:class:`OpenAIEmbedder` (any ``/v1/embeddings`` server), :class:`SentenceTransformerEmbedder`
(a local model; extra ``zenstore[sentence-transformers]``), :class:`CallableEmbedder`
(a plain function), and :func:`as_embedder` for anything LangChain-shaped.
:func:`load_embedder` turns a SPEC string into one. See docs/api.md, "Embedders".
"""

from .base import (
    BaseEmbedder,
    CallableEmbedder,
    Embedder,
    EmbeddingsAdapter,
    as_embedder,
    embed_in_batches,
)
from .openai_http import OpenAIEmbedder
from .sentence_transformer import SentenceTransformerEmbedder
from .spec import API_KEY_ENV, load_embedder, parse_spec

__all__ = [
    "Embedder",
    "BaseEmbedder",
    "CallableEmbedder",
    "EmbeddingsAdapter",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "as_embedder",
    "embed_in_batches",
    "load_embedder",
    "parse_spec",
    "API_KEY_ENV",
]
