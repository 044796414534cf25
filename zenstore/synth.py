"""Deterministic, streaming synthetic embeddings that look like real ones.

Real sentence embeddings are not isotropic Gaussians: they share a mean direction (mean
cosine to it 0.36-0.59 on the collections in ``docs/benchmarks.md``), their covariance has a
decaying eigen-spectrum (participation ratio ~30-65 at 384-768 dims) and documents cluster by
topic. Benchmarks on isotropic noise flatter or punish a quantizer for the wrong reasons, so
this generator builds each document as

    x = mean_weight * mu + topic_weight * T[topic] + U^T (sigma * z) + noise_weight * e

normalised to unit length, where ``mu`` is a fixed unit direction, ``T`` a set of random
topic centres, ``U`` a set of random orthonormal-ish factor directions with power-law
``sigma`` and ``e`` isotropic noise.

Rows are generated in fixed chunks, each from its own seeded stream, so any row range can
be produced independently and in any order: 1M x 7680 (30 GB) never has to exist at once.
Queries are held-out documents (a separate stream) perturbed by extra noise, so their true
neighbours are same-topic documents, not planted near-duplicates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

CHUNK_ROWS = 1024
_DOC_STREAM = 1
_QUERY_STREAM = 2
_QUERY_NOISE_STREAM = 3


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of the generator; two equal specs generate identical data."""

    dim: int = 7680
    seed: int = 0
    n_topics: int = 256
    rank: int = 256
    spectrum_decay: float = 0.8
    mean_weight: float = 0.55
    topic_weight: float = 0.60
    factor_weight: float = 0.55
    noise_weight: float = 0.45
    query_noise: float = 0.35

    def __post_init__(self) -> None:
        if self.dim <= 0 or self.n_topics <= 0 or self.rank <= 0:
            raise ValueError("dim, n_topics and rank must be positive")

    def fingerprint(self) -> str:
        """A short stable hash of the spec, for naming cached files."""
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


class SyntheticEmbeddings:
    """Generator of documents and queries for one :class:`SynthSpec`."""

    def __init__(self, spec: SynthSpec | None = None, **overrides) -> None:
        if spec is None:
            spec = SynthSpec(**overrides)
        elif overrides:
            raise TypeError("pass either a spec or keyword overrides, not both")
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 0])
        d = spec.dim
        mu = rng.standard_normal(d)
        self._mu = (mu / np.linalg.norm(mu)).astype(np.float32)
        topics = rng.standard_normal((spec.n_topics, d))
        topics /= np.linalg.norm(topics, axis=1, keepdims=True)
        self._topics = topics.astype(np.float32)
        # factor directions: random unit vectors (nearly orthogonal in high dimension);
        # scaled so the factor part has expected squared norm factor_weight^2.
        factors = rng.standard_normal((spec.rank, d))
        factors /= np.linalg.norm(factors, axis=1, keepdims=True)
        sigma = (np.arange(1, spec.rank + 1, dtype=np.float64)) ** (-spec.spectrum_decay / 2)
        sigma *= spec.factor_weight / np.sqrt(np.sum(sigma**2))
        self._factors = (factors * sigma[:, None]).astype(np.float32)
        # topic popularity follows a mild Zipf law, like real corpora
        pop = 1.0 / np.arange(1, spec.n_topics + 1) ** 0.5
        self._topic_cdf = np.cumsum(pop / pop.sum())

    @property
    def dim(self) -> int:
        return self.spec.dim

    def _chunk(self, stream: int, chunk: int) -> np.ndarray:
        s = self.spec
        rng = np.random.default_rng([s.seed, stream, chunk])
        n = CHUNK_ROWS
        topic = np.searchsorted(self._topic_cdf, rng.random(n), side="right")
        topic = np.minimum(topic, s.n_topics - 1)
        z = rng.standard_normal((n, s.rank), dtype=np.float32)
        x = z @ self._factors
        x += s.topic_weight * self._topics[topic]
        x += s.mean_weight * self._mu
        x += rng.standard_normal((n, s.dim), dtype=np.float32) * np.float32(
            s.noise_weight / np.sqrt(s.dim)
        )
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def _rows(self, stream: int, start: int, stop: int) -> np.ndarray:
        if not 0 <= start <= stop:
            raise ValueError(f"bad row range [{start}, {stop})")
        out = np.empty((stop - start, self.spec.dim), dtype=np.float32)
        pos = start
        while pos < stop:
            chunk, off = divmod(pos, CHUNK_ROWS)
            take = min(CHUNK_ROWS - off, stop - pos)
            out[pos - start : pos - start + take] = self._chunk(stream, chunk)[off : off + take]
            pos += take
        return out

    def docs(self, start: int, stop: int) -> np.ndarray:
        """Documents ``start .. stop-1`` as a float32 (stop-start, dim) array of unit rows."""
        return self._rows(_DOC_STREAM, start, stop)

    def iter_docs(self, n: int, batch: int = 8192, start: int = 0):
        """Yield ``(first_row, block)`` pairs covering documents ``start .. start+n-1``."""
        pos = start
        while pos < start + n:
            stop = min(pos + batch, start + n)
            yield pos, self.docs(pos, stop)
            pos = stop

    def queries(self, n: int, start: int = 0) -> np.ndarray:
        """``n`` queries: held-out documents plus noise, normalised (float32)."""
        base = self._rows(_QUERY_STREAM, start, start + n)
        rng = np.random.default_rng([self.spec.seed, _QUERY_NOISE_STREAM, start, n])
        noise = rng.standard_normal(base.shape, dtype=np.float32)
        noise *= np.float32(self.spec.query_noise / np.sqrt(self.spec.dim))
        q = base + noise
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        return q


def exact_topk(
    queries: np.ndarray, docs_iter, k: int, metric: str = "ip"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k over a stream of ``(first_row, block)`` documents.

    Keeps only (nq, k) candidates in memory, so the corpus can be any size. ``metric`` is
    "ip" (largest inner product first; equals cosine for unit rows) or "l2" (smallest
    squared distance first). Returns (ids int64, scores float32), each (nq, k).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    nq = q.shape[0]
    best_ids = np.full((nq, k), -1, dtype=np.int64)
    sign = 1.0 if metric == "ip" else -1.0
    best = np.full((nq, k), -np.inf, dtype=np.float32)
    qn = (q * q).sum(1, keepdims=True) if metric == "l2" else None
    for first, block in docs_iter:
        s = q @ np.ascontiguousarray(block, dtype=np.float32).T
        if metric == "l2":
            s = -(qn - 2 * s + (block * block).sum(1)[None, :])
        ids = np.arange(first, first + block.shape[0], dtype=np.int64)
        allv = np.concatenate([best, s.astype(np.float32)], axis=1)
        alli = np.concatenate([best_ids, np.broadcast_to(ids, s.shape)], axis=1)
        kk = min(k, allv.shape[1])
        part = np.argpartition(-allv, kk - 1, axis=1)[:, :k]
        best = np.take_along_axis(allv, part, 1)
        best_ids = np.take_along_axis(alli, part, 1)
    order = np.argsort(-best, axis=1, kind="stable")
    best = np.take_along_axis(best, order, 1)
    best_ids = np.take_along_axis(best_ids, order, 1)
    return best_ids, (best * sign).astype(np.float32)
