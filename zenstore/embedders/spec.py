"""One SPEC string names an embedder everywhere (``zenstore ingest --embedder``,
``zenstore serve --embedder``, configuration files):

- ``openai:URL[#MODEL]``: an OpenAI-compatible server (:class:`OpenAIEmbedder`); the API
  key, if any, comes from the ``ZENSTORE_EMBEDDER_API_KEY`` environment variable, never
  from the SPEC (SPECs end up in logs and process lists);
- ``sentence-transformers:PATH``: a local model directory (:class:`SentenceTransformerEmbedder`);
- ``python:MODULE:ATTR``: an embedder object, or a zero-argument factory (a class, a
  function) returning one, importable from the Python path. This runs the module's code:
  take SPECs only from whoever runs the process, never from requests.
"""

from __future__ import annotations

import importlib
import os

from ..errors import EmbedderError, InvalidArgument
from .base import BaseEmbedder, as_embedder

API_KEY_ENV = "ZENSTORE_EMBEDDER_API_KEY"
KINDS = ("openai", "sentence-transformers", "python")
GRAMMAR = "openai:URL[#MODEL], sentence-transformers:PATH or python:MODULE:ATTR"


def _malformed(spec: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"bad embedder SPEC {spec!r}: {why} (expected {GRAMMAR})")


def parse_spec(spec: str) -> tuple[str, str]:
    """(kind, rest) of a SPEC, or InvalidArgument naming what is wrong."""
    if not isinstance(spec, str):
        raise InvalidArgument(f"an embedder SPEC must be a str, got {type(spec).__name__}")
    kind, sep, rest = spec.strip().partition(":")
    if not sep:
        raise _malformed(spec, "no 'KIND:' prefix")
    if kind not in KINDS:
        raise _malformed(spec, f"unknown kind {kind!r}")
    if not rest.strip():
        raise _malformed(spec, f"nothing after '{kind}:'")
    return kind, rest.strip()


def load_embedder(spec, **options) -> BaseEmbedder:
    """The embedder a SPEC names; an embedder object (or anything with ``embed_query`` and
    ``embed_documents``) is returned checked via :func:`as_embedder`. ``options`` go to the
    embedder's constructor (``batch_size``, ``timeout``, ``device``, ...; not for python:)."""
    if not isinstance(spec, str):
        if options:
            raise InvalidArgument("options apply to a SPEC string, not to an embedder object")
        return as_embedder(spec)
    kind, rest = parse_spec(spec)
    if kind == "openai":
        from .openai_http import OpenAIEmbedder

        url, _, model = rest.partition("#")
        if not url:
            raise _malformed(spec, "no URL before '#'")
        if "#" in rest and not model:
            raise _malformed(spec, "empty MODEL after '#'")
        options.setdefault("api_key", os.environ.get(API_KEY_ENV) or None)
        return OpenAIEmbedder(url, model or None, **options)
    if kind == "sentence-transformers":
        from .sentence_transformer import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(rest, **options)
    if options:
        raise InvalidArgument("options do not apply to a python: SPEC; its factory decides")
    return _load_python(spec, rest)


def _load_python(spec: str, rest: str) -> BaseEmbedder:
    module_name, sep, attr = rest.partition(":")
    if not sep or not module_name or not attr:
        raise _malformed(spec, "python: needs MODULE:ATTR")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise EmbedderError(f"embedder SPEC {spec!r}: no module {module_name!r} on the Python "
                                f"path (add its directory to PYTHONPATH)") from exc
        raise EmbedderError(f"embedder SPEC {spec!r}: importing {module_name!r} failed: "
                            f"{exc}") from exc
    except Exception as exc:  # the module's own code failed: say so, with the cause
        raise EmbedderError(f"embedder SPEC {spec!r}: importing {module_name!r} raised "
                            f"{type(exc).__name__}: {exc}") from exc
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise EmbedderError(f"embedder SPEC {spec!r}: {module_name!r} has no attribute "
                                f"{attr!r}") from None
    if not _looks_like_embedder(obj):
        if not callable(obj):
            raise EmbedderError(f"embedder SPEC {spec!r}: {attr} is a {type(obj).__name__}, "
                                f"neither an embedder nor a zero-argument factory of one")
        try:
            obj = obj()
        except Exception as exc:
            raise EmbedderError(f"embedder SPEC {spec!r}: calling {attr}() raised "
                                f"{type(exc).__name__}: {exc} (python: needs an embedder or a "
                                f"zero-argument factory; wrap a texts -> vectors function in "
                                f"zenstore.embedders.CallableEmbedder)") from exc
        if not _looks_like_embedder(obj):
            raise EmbedderError(f"embedder SPEC {spec!r}: {attr}() returned a "
                                f"{type(obj).__name__}, which has no embed_query / "
                                f"embed_documents (wrap a texts -> vectors function in "
                                f"zenstore.embedders.CallableEmbedder)")
    return as_embedder(obj)


def _looks_like_embedder(obj) -> bool:
    return (not isinstance(obj, type) and callable(getattr(obj, "embed_query", None))
            and callable(getattr(obj, "embed_documents", None)))
