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


GATE_ENV = "ZENSTORE_TEST_GATE"


def _gated_embed(texts: list[str]) -> np.ndarray:
    """Like ``embed``, but a batch with a text starting with "slow:" is held: it leaves a
    file ``entered-*`` in the directory ``$ZENSTORE_TEST_GATE`` and waits until a file
    ``release`` appears there (at most 120 s). A test can so keep requests in flight for
    exactly as long as it needs, with no sleep to guess."""
    import os
    import time
    import uuid

    if any(t.startswith("slow:") for t in texts):
        gate = os.environ[GATE_ENV]
        open(os.path.join(gate, f"entered-{os.getpid()}-{uuid.uuid4().hex}"), "w").close()
        deadline = time.monotonic() + 120
        while not os.path.exists(os.path.join(gate, "release")) and time.monotonic() < deadline:
            time.sleep(0.01)
    return embed(texts)


def GatedHashEmbedder():  # noqa: N802
    return CallableEmbedder(_gated_embed, dim=DIM)
