"""Deterministic embedders for the ``zenstore ingest --embedder python:...`` tests.

No model, no network: a text's vector is the sum of one seeded Gaussian vector per
lower-cased word (seeded by the word's sha256), so equal texts embed equally and texts
sharing words are near. Loaded by SPEC, e.g. ``python:_hash_embedder:HashEmbedder``, with
this directory on ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from zenstore.embedders import BaseEmbedder

DIM = 48  # not a multiple of 64: the store pads it


def hash_vector(text: str, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim)
    for word in text.lower().split() or [""]:
        seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
        v += np.random.default_rng(seed).standard_normal(dim)
    return v.astype(np.float32)


class HashEmbedder(BaseEmbedder):
    """The embedder; ``python:_hash_embedder:HashEmbedder`` (a zero-argument class)."""

    def __init__(self, dim: int = DIM) -> None:
        self._dim = dim
        self.calls = 0

    def _embed(self, texts, kind):
        self.calls += 1
        return np.stack([hash_vector(t, self._dim) for t in texts])


class SlowHashEmbedder(HashEmbedder):
    """The same vectors, ``ZS_EMBED_SLEEP`` seconds (default 0.05) per call: an ingest
    that can be interrupted mid-way."""

    def _embed(self, texts, kind):
        time.sleep(float(os.environ.get("ZS_EMBED_SLEEP", "0.05")))
        return super()._embed(texts, kind)


def wide() -> HashEmbedder:
    """A factory: the same embedder at dimension 32 (a 'wrong dimension' for DIM stores)."""
    return HashEmbedder(32)


class ChangesDimension(HashEmbedder):
    """Dimension DIM for its first ``ZS_EMBED_GOOD_CALLS`` (default 1) calls, then DIM + 1:
    an embedder that goes wrong mid-ingest."""

    def _embed(self, texts, kind):
        self.calls += 1
        good = int(os.environ.get("ZS_EMBED_GOOD_CALLS", "1"))
        dim = self._dim if self.calls <= good else self._dim + 1
        return np.stack([hash_vector(t, dim) for t in texts])


NOT_AN_EMBEDDER = 42
