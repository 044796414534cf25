"""Shared test material for the integration tests: a small corpus, a deterministic
bag-of-words embedder with real (if crude) semantics, and the repository's BM25."""

from __future__ import annotations

import importlib.util
import os
import zlib

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIM = 200  # not a multiple of 64: the stores pad it


def load_bm25():
    spec = importlib.util.spec_from_file_location("bench_bm25", os.path.join(REPO, "benchmarks", "_bm25.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_bm25 = load_bm25()
BM25 = _bm25.BM25
tokenize = _bm25.tokenize


def word_vector(token: str, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(token.encode())).standard_normal(dim)


def embed(texts, dim: int = DIM) -> np.ndarray:
    """Sum of per-word random vectors, L2-normalised: texts sharing words are close."""
    out = np.zeros((len(texts), dim), dtype=np.float64)
    for i, text in enumerate(texts):
        for tok in tokenize(text) or ["<empty>"]:
            out[i] += word_vector(tok, dim)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


TOPICS = {
    "scurvy": "vitamin c deficiency causes scurvy bleeding gums fatigue citrus fruit",
    "rockets": "liquid fuel rocket engine thrust nozzle combustion chamber orbit",
    "bees": "honey bees pollinate flowers hive colony queen nectar",
    "tides": "ocean tides moon gravity high tide low tide coastline",
    "compilers": "compiler parses source code into syntax tree then emits machine code",
}


def corpus(n_per_topic: int = 8, seed: int = 0) -> list[tuple[str, str, str]]:
    """``(id, topic, text)`` rows: each text mixes words of its topic with filler words."""
    rng = np.random.default_rng(seed)
    filler = "the a of and study report new results shows data method analysis".split()
    rows = []
    for topic, words in TOPICS.items():
        vocab = words.split()
        for j in range(n_per_topic):
            k = int(rng.integers(3, len(vocab)))
            picked = list(rng.choice(vocab, size=k, replace=False)) + list(rng.choice(filler, size=4))
            rng.shuffle(picked)
            rows.append((f"{topic}-{j}", topic, " ".join(picked)))
    return rows
