"""The query embedder ``benchmarks/serve.py`` starts ``zenstore serve`` with: a text maps
to a fixed pseudo-random 7680-d vector (seeded by its hash). No model: the benchmark
measures serving, and the in-process call it is compared with uses the same embedder."""

from __future__ import annotations

import hashlib

import numpy as np

from zenstore.embedders import CallableEmbedder

DIM = 7680


def embed(texts):
    out = np.empty((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        seed = int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little")
        out[i] = np.random.default_rng(seed).standard_normal(DIM, dtype=np.float32)
    return out


def embedder():
    return CallableEmbedder(embed, dim=DIM)
