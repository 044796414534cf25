"""The default search setting a store learns from its own data.

A search with neither ``nprobe`` nor ``shortlist`` uses the store's calibration: the
cheapest (nprobe, shortlist) whose recall@10 reaches ``TARGET`` (99%) of the full scan's
(nprobe all, shortlist 200: the old default), measured on held-out queries.

When: at the add that trains the store and at any later add after which the store holds
``GROWTH`` (4) times the rows it was calibrated on, on at least ``MIN_ROWS`` rows with
their original vectors (smaller stores keep the full scan, which is cheap there). Adds
smaller than that are pooled (:class:`PendingSample`) until they reach it: a store fed in
batches of 1,000 (a 4-shard Ray Data ingest gives each shard ~1,024 rows per 4,096-row
batch) would otherwise never calibrate, and its default search would stay a full scan.

How: ``QUERIES`` rows of the add's batch are the queries; the truth is the exact float
top 10 of each among at most ``MAX_CORPUS`` rows of the batch (itself excluded), and the
searches are restricted to those rows (``filter_ids``), so no original vector outside
the batch is needed. A subset is sparser than the store, so its neighbours are farther
apart and spread over more base rows: the setting chosen errs towards probing more.

A store with a refine tier calibrates with refinement on (a search's default) and only
shortlists of at least ``REFINE_MIN_SHORTLIST`` (2 x the refine pool): refinement takes
the best ``refine_k`` of the hot-rescored shortlist, so a shortlist equal to the pool lets
the 1-bit Hamming pass alone pick what is refined. A calibration subset cannot see this --
in 20k rows a shortlist of 100 holds the neighbours; among 1M rows it does not: at 1M x
7680 generated docs (int8 tier) nprobe 32 with shortlist 100 reached recall@10 0.974, with
200 0.992 (docs/refine.md, "At 1M").

Cost of a setting: rows scanned (nprobe / n_base of the rows) plus ``RESCORE_WEIGHT``
per shortlisted row (an exact rescoring costs ~10 Hamming scans; docs/benchmarks.md).
For each shortlist, nprobe doubles from 1 until the target is reached.

The record (catalog ``meta`` key ``calibration``, JSON, docs/format.md) carries a
``version``; a reader ignores a record it does not know (and then scans everything).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from .types import SearchOptions

CALIBRATION_VERSION = 1
TARGET = 0.99
K = 10
QUERIES = 100
MIN_ROWS = 2000
MAX_CORPUS = 20_000
GROWTH = 4
SHORTLISTS = (100, 200, 400)
REFINE_MIN_SHORTLIST = 2 * SearchOptions.DEFAULT_REFINE_K
FULL_SHORTLIST = 200  # the full scan compared against: today's default shortlist
RESCORE_WEIGHT = 10.0


@dataclass(frozen=True)
class Calibration:
    nprobe: int | None  # None: the cheapest setting is a full scan
    shortlist: int
    recall: float  # recall@10 of this setting on the calibration queries
    full_recall: float  # ... of the full scan
    rows: int  # rows stored when calibrated
    queries: int
    version: int = CALIBRATION_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> Calibration | None:
        """The record, or None for a version this reader does not know. Raises ValueError
        on a malformed record of a known version."""
        if not isinstance(d, dict) or d.get("version") != CALIBRATION_VERSION:
            return None
        try:
            cal = Calibration(nprobe=d["nprobe"], shortlist=d["shortlist"], recall=float(d["recall"]),
                              full_recall=float(d["full_recall"]), rows=d["rows"], queries=d["queries"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad calibration record: {exc}") from exc
        ints = [cal.shortlist, cal.rows, cal.queries] + ([] if cal.nprobe is None else [cal.nprobe])
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in ints):
            raise ValueError(f"bad calibration record: {d!r}")
        return cal


def growth_due(calibration: Calibration | None, stored_rows: int) -> bool:
    """Whether a store holding ``stored_rows`` has outgrown its calibration (or has none)."""
    return calibration is None or stored_rows >= GROWTH * calibration.rows


def due(calibration: Calibration | None, stored_rows: int, batch_rows: int) -> bool:
    """Whether an add of ``batch_rows`` that left ``stored_rows`` stored should calibrate
    on that batch alone."""
    return batch_rows >= MIN_ROWS and growth_due(calibration, stored_rows)


class PendingSample:
    """The rows of recent adds too small to calibrate on, pooled until they reach
    ``MIN_ROWS`` (one writer's memory, not durable: a reopened store starts a new pool).

    Kept only while a calibration is due, so it holds fewer than ``MIN_ROWS`` rows between
    adds (~61 MB at 7680 dims). A row deleted or upserted after it was pooled leaves the
    pool (:meth:`forget`): the truth must be computed from the vectors that are stored.
    """

    def __init__(self) -> None:
        self._ids: list[np.ndarray] = []
        self._x: list[np.ndarray] = []

    @property
    def rows(self) -> int:
        return sum(len(i) for i in self._ids)

    def clear(self) -> None:
        self._ids, self._x = [], []

    def forget(self, ids: np.ndarray) -> None:
        """Drop pooled rows whose id is in ``ids``."""
        if not self._ids or len(ids) == 0:
            return
        pooled_ids, pooled_x = [], []
        for i, x in zip(self._ids, self._x):
            keep = ~np.isin(i, ids)
            if keep.any():
                pooled_ids.append(i[keep])
                pooled_x.append(x[keep])
        self._ids, self._x = pooled_ids, pooled_x

    def offer(self, calibration: Calibration | None, stored_rows: int, ids: np.ndarray,
              x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """After an add of stored ``ids`` with vectors ``x``: the rows to calibrate on now,
        or None. A batch of ``MIN_ROWS`` rows is used alone (as before pooling existed)."""
        if not growth_due(calibration, stored_rows):
            self.clear()
            return None
        if due(calibration, stored_rows, len(ids)):
            self.clear()
            return ids, x
        self.forget(ids)  # upserted: the new vectors replace the pooled ones
        self._ids.append(np.array(ids, copy=True))
        self._x.append(np.array(x, dtype=np.float32, copy=True))
        if self.rows < MIN_ROWS:
            return None
        pooled = np.concatenate(self._ids), np.concatenate(self._x)
        self.clear()
        return pooled


def cost(nprobe: int | None, shortlist: int, n_base: int, rows: int) -> float:
    scanned = rows if nprobe is None else rows * min(nprobe, n_base) / n_base
    return scanned + RESCORE_WEIGHT * shortlist


def shortlists_for(refine: bool) -> tuple[int, ...]:
    """The shortlists a store calibrates over: with a refine tier, none below
    ``REFINE_MIN_SHORTLIST``."""
    return tuple(s for s in SHORTLISTS if s >= REFINE_MIN_SHORTLIST) if refine else SHORTLISTS


def choose(recall_of: Callable[[int | None, int], float], n_base: int, rows: int,
           queries: int, shortlists: tuple[int, ...] = SHORTLISTS) -> Calibration:
    """The cheapest setting reaching ``TARGET`` of the full scan's recall;
    ``recall_of(nprobe, shortlist)`` measures one (nprobe None: everything), for each of
    ``shortlists``."""
    full = recall_of(None, FULL_SHORTLIST)
    goal = TARGET * full
    best = (cost(None, FULL_SHORTLIST, n_base, rows), None, FULL_SHORTLIST, full)
    for shortlist in shortlists:
        nprobe = 1
        # cost grows with nprobe: stop once it reaches the best setting found so far
        while nprobe < n_base and cost(nprobe, shortlist, n_base, rows) < best[0]:
            r = recall_of(nprobe, shortlist)
            if r >= goal:
                best = (cost(nprobe, shortlist, n_base, rows), nprobe, shortlist, r)
                break
            nprobe *= 2
    _, nprobe, shortlist, r = best
    return Calibration(nprobe, shortlist, float(r), float(full), rows, queries)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-30)


def exact_neighbours(x: np.ndarray, corpus: np.ndarray, self_rows: np.ndarray, metric: str,
                     chunk: int = 4096) -> np.ndarray:
    """(nq, K) positions in ``corpus`` (rows of ``x``) nearest each query ``x[corpus[self_rows]]``
    (exact float), each query's own position excluded. The corpus is read in chunks: slices
    of ``x`` where the corpus is all of it (no copy), and cosine divides each column by its
    row's norm instead of normalising a copy of the rows."""
    q = np.asarray(x[corpus[self_rows]], dtype=np.float32)
    if metric == "cosine":
        q = _unit(q)
    whole = len(corpus) == len(x)  # corpus is 0..n-1 (sorted, no repeats)
    s = np.empty((len(q), len(corpus)), dtype=np.float32)
    for a in range(0, len(corpus), chunk):
        b = min(len(corpus), a + chunk)
        block = np.asarray(x[a:b] if whole else x[corpus[a:b]], dtype=np.float32)
        part = q @ block.T
        if metric != "ip":
            sq = np.einsum("ij,ij->i", block, block)
            part = part / np.maximum(np.sqrt(sq), 1e-30)[None, :] if metric == "cosine" else 2 * part - sq[None, :]
        s[:, a:b] = part
    s[np.arange(len(q)), self_rows] = -np.inf
    top = np.argpartition(-s, K, axis=1)[:, :K]
    order = np.argsort(-np.take_along_axis(s, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean |found ∩ truth| / K over queries (found: rows, -1 for none)."""
    return float(np.mean([len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth)]) / K)


def most_demanding(calibrations: list[Calibration | None]) -> tuple[int | None, int] | None:
    """One (nprobe, shortlist) for stores that share a base but hold different rows (the
    shards of a cluster): the largest nprobe (None, a full scan, is largest) and the
    largest shortlist of theirs, so every store searches at least as deeply as its own
    calibration asks. None when any of them has no calibration (then: a full scan)."""
    if not calibrations or any(c is None for c in calibrations):
        return None
    nprobes = [c.nprobe for c in calibrations]
    nprobe = None if None in nprobes else max(nprobes)
    return nprobe, max(c.shortlist for c in calibrations)
