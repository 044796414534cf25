"""The embedder contract, the checks every embedder's output goes through, and adapters.

An embedder turns text into float vectors. The contract is LangChain's ``Embeddings``
(``embed_query`` / ``embed_documents``) plus ``dim``, so a LangChain embeddings object is
usable once wrapped by :func:`as_embedder`, and zenstore's own embedders can be handed to
LangChain. Whatever an embedder returns is checked here -- shape, count, dimension,
finiteness -- so a misbehaving model or server fails loudly with :class:`EmbedderError`
instead of storing garbage.
"""

from __future__ import annotations

import asyncio
import inspect
import numbers
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import EmbedderError, InvalidArgument
from ..validation import positive_int

_SHOW = 5  # how many offending rows an error message lists

DIM_PROBE_TEXT = "dimension probe"  # embedded once when an adapter must learn its dimension


class _StaticProtocolMeta(type(Protocol)):
    """``isinstance(x, Embedder)`` looks the members up statically, as Python 3.12 does:
    on 3.10 / 3.11 the stock check reads ``x.dim``, and a lazy ``dim`` embeds a probe text
    (a network request, maybe a failure) just to answer isinstance."""

    def __instancecheck__(cls, obj) -> bool:
        if not getattr(cls, "_is_runtime_protocol", False):
            return super().__instancecheck__(obj)
        for name in ("dim", "embed_query", "embed_documents"):
            try:
                inspect.getattr_static(obj, name)
            except AttributeError:
                return False
        return callable(getattr(obj, "embed_query")) and callable(getattr(obj, "embed_documents"))


@runtime_checkable
class Embedder(Protocol, metaclass=_StaticProtocolMeta):
    """What zenstore calls to embed text. Vectors are float32; ``dim`` is their length."""

    @property
    def dim(self) -> int: ...

    def embed_query(self, text: str) -> np.ndarray: ...

    def embed_documents(self, texts: list[str]) -> np.ndarray: ...


def check_texts(texts, what: str = "texts") -> list[str]:
    """A list of str, or InvalidArgument (a lone str is refused: it would embed characters)."""
    if isinstance(texts, (str, bytes)):
        raise InvalidArgument(f"{what} must be a list of str, got a single {type(texts).__name__}; "
                              f"use embed_query for one text")
    if not isinstance(texts, Iterable):
        raise InvalidArgument(f"{what} must be a list of str, got {type(texts).__name__}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidArgument(f"{what}[{i}] must be str, got {type(t).__name__}")
    return out


def check_text(text, what: str = "text") -> str:
    if not isinstance(text, str):
        raise InvalidArgument(f"{what} must be str, got {type(text).__name__}")
    return text


def as_vectors(raw, n: int, dim: int | None, source: str) -> np.ndarray:
    """Check an embedder's output for ``n`` texts: a finite float32 C-contiguous (n, dim)
    matrix (``dim`` None: any width >= 1). ``source`` names the embedder in errors."""
    try:
        arr = np.asarray(raw)
    except (ValueError, TypeError) as exc:  # ragged lists ...
        raise EmbedderError(f"{source} returned something that is not a numeric matrix "
                            f"for {n} texts: {exc}") from exc
    if arr.dtype.kind not in "fiu":  # strings, None, objects, bools
        raise EmbedderError(f"{source} returned something that is not a numeric matrix "
                            f"for {n} texts (values of type {arr.dtype})")
    with np.errstate(over="ignore", invalid="ignore"):
        arr = arr.astype(np.float32, copy=False)
    if n == 0 and arr.size == 0:
        return np.zeros((0, dim or 0), dtype=np.float32)
    if arr.ndim != 2:
        raise EmbedderError(f"{source} returned an array of shape {arr.shape} for {n} texts; "
                            f"expected ({n}, dim)")
    if arr.shape[0] != n:
        raise EmbedderError(f"{source} returned {arr.shape[0]} vectors for {n} texts")
    if arr.shape[1] == 0:
        raise EmbedderError(f"{source} returned empty (0-length) vectors")
    if dim is not None and arr.shape[1] != dim:
        raise EmbedderError(f"{source} returned vectors of dimension {arr.shape[1]}, "
                            f"expected {dim}")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite).tolist()
        more = f" (and {len(bad) - _SHOW} more)" if len(bad) > _SHOW else ""
        raise EmbedderError(f"{source} returned vectors with NaN or infinity (or beyond float32 "
                            f"range) for texts {', '.join(map(str, bad[:_SHOW]))}{more}")
    return np.ascontiguousarray(arr)


def l2_normalize(x: np.ndarray, source: str) -> np.ndarray:
    """Rows scaled to unit length (in float64, then float32); an all-zero row is an error."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = norms == 0
    if zero.any():
        raise EmbedderError(f"{source} returned all-zero vectors (no direction to normalise) "
                            f"for texts {np.flatnonzero(zero)[:_SHOW].tolist()}")
    return (x / norms[:, None]).astype(np.float32)


def check_dim(dim, what: str = "dim") -> int | None:
    if dim is None:
        return None
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool) or dim < 1:
        raise InvalidArgument(f"{what} must be a positive int or None, got {dim!r}")
    return int(dim)


class BaseEmbedder:
    """Shared behaviour of zenstore's embedders: checked output, a lazily learnt ``dim``,
    optional L2 normalisation, and LangChain's async method names.

    Subclasses implement ``_embed(texts, kind)`` (``kind`` is "query" or "document") and
    may set ``_dim`` up front when they know it without embedding anything.
    """

    _dim: int | None = None
    normalize: bool = False

    def _embed(self, texts: list[str], kind: str):  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def source(self) -> str:
        """How errors name this embedder."""
        return type(self).__name__

    @property
    def dim(self) -> int:
        """Vector length. Unknown until the first call; asking for it first embeds one
        short probe text."""
        if self._dim is None:
            self._checked([DIM_PROBE_TEXT], "document")
        return self._dim

    def _checked(self, texts: list[str], kind: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = as_vectors(self._embed(texts, kind), len(texts), self._dim, self.source)
        if self._dim is None:
            self._dim = int(out.shape[1])
        return l2_normalize(out, self.source) if self.normalize else out

    def embed_documents(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32."""
        return self._checked(check_texts(texts), "document")

    def embed_query(self, text: str) -> np.ndarray:
        """(dim,) float32."""
        return self._checked([check_text(text, "query")], "query")[0]

    async def aembed_documents(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> np.ndarray:
        return await asyncio.to_thread(self.embed_query, text)

    def __repr__(self) -> str:
        return f"{self.source}(dim={self._dim})"


class CallableEmbedder(BaseEmbedder):
    """A plain function ``texts -> vectors`` (list of lists, or an (n, dim) array) as an
    embedder. Queries go through the same function (one text at a time)."""

    def __init__(self, fn: Callable[[list[str]], object], dim: int | None = None,
                 *, normalize: bool = False) -> None:
        if not callable(fn):
            raise InvalidArgument(f"CallableEmbedder needs a callable, got {type(fn).__name__}")
        self.fn = fn
        self._dim = check_dim(dim)
        self.normalize = bool(normalize)

    @property
    def source(self) -> str:
        return f"CallableEmbedder({getattr(self.fn, '__qualname__', type(self.fn).__name__)})"

    def _embed(self, texts, kind):
        return self.fn(texts)


class EmbeddingsAdapter(BaseEmbedder):
    """Any object with ``embed_query`` / ``embed_documents`` (a LangChain ``Embeddings``,
    for one) returning lists of floats or arrays, with or without ``dim``. Outputs are
    checked and turned into float32 arrays; ``dim`` is the object's own when it has an
    int one, else learnt from the first call."""

    def __init__(self, obj, dim: int | None = None, *, normalize: bool = False) -> None:
        for name in ("embed_query", "embed_documents"):
            if not callable(getattr(obj, name, None)):
                raise InvalidArgument(f"{type(obj).__name__} has no {name}() method; an embedder "
                                      f"needs embed_query and embed_documents")
        own = getattr(obj, "dim", None)
        self.wrapped = obj
        self._dim = check_dim(dim) or (int(own) if isinstance(own, numbers.Integral)
                                       and not isinstance(own, bool) and own >= 1 else None)
        self.normalize = bool(normalize)

    @property
    def source(self) -> str:
        return type(self.wrapped).__name__

    def _embed(self, texts, kind):
        if kind == "query":
            return [self.wrapped.embed_query(texts[0])]
        return self.wrapped.embed_documents(texts)

    async def aembed_documents(self, texts: list[str]) -> np.ndarray:
        """The object's own ``aembed_documents`` when it has one (LangChain's do), checked."""
        native = getattr(self.wrapped, "aembed_documents", None)
        texts = check_texts(texts)
        if native is None or not texts:
            return await super().aembed_documents(texts)
        out = as_vectors(await native(texts), len(texts), self._dim, self.source)
        self._dim = self._dim or int(out.shape[1])
        return l2_normalize(out, self.source) if self.normalize else out

    async def aembed_query(self, text: str) -> np.ndarray:
        native = getattr(self.wrapped, "aembed_query", None)
        if native is None:
            return await super().aembed_query(text)
        out = as_vectors([await native(check_text(text, "query"))], 1, self._dim, self.source)
        self._dim = self._dim or int(out.shape[1])
        return (l2_normalize(out, self.source) if self.normalize else out)[0]


def as_embedder(obj, *, dim: int | None = None) -> BaseEmbedder:
    """``obj`` as a checked zenstore embedder: zenstore's own are returned unchanged; any
    other object with ``embed_query`` / ``embed_documents`` is wrapped in
    :class:`EmbeddingsAdapter`. ``dim``: the expected dimension, when known."""
    if isinstance(obj, BaseEmbedder):
        if dim is not None and obj._dim is not None and obj._dim != check_dim(dim):
            raise EmbedderError(f"{obj.source} has dimension {obj._dim}, expected {dim}")
        if dim is not None and obj._dim is None:
            obj._dim = check_dim(dim)
        return obj
    return EmbeddingsAdapter(obj, dim)


def embed_in_batches(embedder, texts, batch_size: int = 256, *,
                     progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Embed ``texts`` ``batch_size`` at a time; returns one checked (n, dim) float32 array.

    This is what a loader calls for one batch of input rows: each chunk's vectors are
    checked against the embedder's dimension as they arrive, and ``progress(done, total)``
    is called after each chunk.
    """
    batch_size = positive_int(batch_size, "batch_size")
    emb = as_embedder(embedder)
    texts = check_texts(texts)
    if not texts:
        return np.zeros((0, emb.dim), dtype=np.float32)
    parts = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start:start + batch_size]
        parts.append(emb.embed_documents(chunk))  # checked: count, dimension, finite
        if progress is not None:
            progress(start + len(chunk), len(texts))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)
