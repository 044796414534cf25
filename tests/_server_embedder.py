"""A deterministic test embedder for ``zenstore serve --embedder python:tests._server_embedder:HashEmbedder``.

Each text maps to a fixed pseudo-random unit vector (seeded by its blake2b hash), so the
same text always gives the same vector and different texts are near-orthogonal; a query
"about X" can be made close to a document by sharing words (vectors are the normalised
sum of per-word vectors). No model, no download.
"""

from __future__ import annotations

import hashlib

import numpy as np

from zenstore.embedders import CallableEmbedder

DIM = 64


def word_vector(word: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
    return np.random.default_rng(seed).standard_normal(DIM)


def embed(texts: list[str]) -> np.ndarray:
    out = np.zeros((len(texts), DIM))
    for i, t in enumerate(texts):
        words = t.lower().split() or [""]
        v = sum(word_vector(w) for w in words)
        out[i] = v / (np.linalg.norm(v) or 1.0)
    return out.astype(np.float32)


def HashEmbedder():  # noqa: N802 - a zero-argument factory, named like the class it stands for
    return CallableEmbedder(embed, dim=DIM)


def _slow_embed(texts: list[str]) -> np.ndarray:
    """Like ``embed``, but texts starting with "slow:" take 2 s: a request kept in flight."""
    import time

    if any(t.startswith("slow:") for t in texts):
        time.sleep(2.0)
    return embed(texts)


def SlowHashEmbedder():  # noqa: N802
    return CallableEmbedder(_slow_embed, dim=DIM)
