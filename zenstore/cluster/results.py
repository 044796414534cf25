"""Merging per-shard answers into one, and the result types that say who answered.

Every shard scores with the same base matrix, so a score from one shard compares with a
score from another exactly; merging is a sort. Ties are broken by shard number, then by
the shard's own order, so a merged result is deterministic.
"""

from __future__ import annotations

import numpy as np


class Hits(list):
    """``list[Hit]``, best first, plus ``answered`` (the shards that were searched and
    answered) and ``failed`` (``{shard: reason}`` of those that did not: only non-empty
    when the caller asked for ``partial=True``)."""

    def __init__(self, hits=(), answered=(), failed=None) -> None:
        super().__init__(hits)
        self.answered = tuple(answered)
        self.failed = dict(failed or {})


class BatchResult(tuple):
    """``(ids, scores)`` as ``Store.search_batch`` returns them (it unpacks the same way),
    plus ``answered`` and ``failed`` as in :class:`Hits`."""

    def __new__(cls, ids, scores, answered=(), failed=None):
        self = super().__new__(cls, (ids, scores))
        self.answered = tuple(answered)
        self.failed = dict(failed or {})
        return self

    @property
    def ids(self) -> np.ndarray:
        return self[0]

    @property
    def scores(self) -> np.ndarray:
        return self[1]


def _rank_key(scores: np.ndarray, metric: str) -> np.ndarray:
    """Smaller is better; NaN (padding) last."""
    key = scores.astype(np.float64) if metric == "l2" else -scores.astype(np.float64)
    return np.where(np.isnan(key), np.inf, key)


def merge_hits(parts: list[list], k: int, metric: str) -> list:
    """The best ``k`` of several best-first hit lists (given in shard order)."""
    hits = [h for part in parts for h in part]
    if not hits:
        return []
    key = _rank_key(np.array([h.score for h in hits], dtype=np.float32), metric)
    return [hits[i] for i in np.argsort(key, kind="stable")[:k]]


def merge_batches(parts: list[tuple[np.ndarray, np.ndarray]], k: int, metric: str, nq: int,
                  id_type: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The best ``k`` per query of several ``(ids, scores)`` answers (in shard order),
    padded like ``Store.search_batch``: id -1 (int) or None (str), score NaN."""
    str_ids = id_type == "str"
    out_ids = np.full((nq, k), None, dtype=object) if str_ids else np.full((nq, k), -1, dtype=np.int64)
    out_scores = np.full((nq, k), np.nan, dtype=np.float32)
    if not parts:
        return out_ids, out_scores
    scores = np.concatenate([s for _, s in parts], axis=1)
    ids = np.concatenate([i.astype(object) if str_ids else i for i, _ in parts], axis=1)
    order = np.argsort(_rank_key(scores, metric), axis=1, kind="stable")[:, :k]
    top_scores = np.take_along_axis(scores, order, axis=1)
    top_ids = np.take_along_axis(ids, order, axis=1)
    found = ~np.isnan(top_scores)
    width = top_scores.shape[1]
    out_scores[:, :width] = np.where(found, top_scores, np.nan)
    out_ids[:, :width][found] = top_ids[found]
    return out_ids, out_scores
