"""The refine stage of the query pipeline: rescore a query's best candidates with the
store's refine tier, reading only their records from the refine files (issue 12).

After the exact dequantized rescoring (``search.exact_scores``) each query holds hot
estimates of its shortlisted rows. Which of them are refined is decided by the hot
estimate's error bound (``refine.error_slack``, no stored byte needed): candidates are
visited in order of their upper bound, ``REFINE_STEP`` rows per query and round, and a
query stops at the first candidate whose upper bound is below its k-th refined value
(``refine.bounded_refine``). ``refine_k`` caps how many of the best candidates can be
refined at all. The multiplier of the bound was measured (docs/refine.md: 1.5 keeps the
recall of the best fixed refine_k within 0.0004 on four data sets while refining 18-51
rows per query).

Nothing here touches LMDB; the refine records come from ``Segment.refine`` (mapped,
``MADV_RANDOM``): one candidate is one contiguous record of the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from . import refine as R
from .codec import Codec
from .kernels.refine import int8_dots, int8_dots_range, magnitude_dots, magnitude_dots_range
from .segment import Segment
from .snapshot import by_segment, split_tags

REFINE_SLACK = 1.5  # bound multiplier (docs/refine.md, "The error-bounded shortlist")
PARALLEL_PAIRS = 64  # fewer pairs: one thread


@dataclass(frozen=True)
class RefineRequest:
    """Refine a chunk of queries' best candidates: the store's codec (its config holds the
    tier), the pool size, and where to report the rows each query refined (or None)."""

    codec: Codec
    refine_k: int
    out: np.ndarray | None = None


def can_refine(segments: list[Segment]) -> bool:
    return bool(segments) and all(s.refine is not None for s in segments)


def _hot_fields(segments: list[Segment], tags: np.ndarray):
    """Per tag: hot scales (n, blocks) and base row -- what the error bound needs."""
    n = len(tags)
    ords, rows = split_tags(tags)
    scales = np.empty((n, segments[int(ords[0])].scales.shape[1]), dtype=np.float32)
    groups = np.empty(n, dtype=np.int64)
    for ordinal, sel in by_segment(ords):
        seg = segments[ordinal]
        where = slice(None) if sel is None else sel
        r = rows[where]
        scales[where], groups[where] = seg.scales[r], seg.groups[r]
    return scales, groups


def _refine_dots(segments: list[Segment], tier, queries: np.ndarray, qidx: np.ndarray, tags: np.ndarray):
    """The refine kernels' dot products of (query, tag) pairs, read in place from each
    segment's mapped refine records, plus what turns them into scores: the records' tail
    fields (a ``RefineBatch`` without codes), base rows and additive terms."""
    n = len(tags)
    ords, rows = split_tags(tags)
    d = queries.shape[1]
    cb = tier.code_bytes(d)
    dots = np.empty(n, dtype=np.float32)
    tails = np.empty((n, segments[int(ords[0])].refine.rows.shape[1] - cb), dtype=np.uint8)
    groups = np.empty(n, dtype=np.int64)
    rowterm = np.empty(n, dtype=np.float32)
    chunks = 4 * numba.get_num_threads()
    for ordinal, sel in by_segment(ords):
        seg = segments[ordinal]
        r = np.ascontiguousarray(rows if sel is None else rows[sel], dtype=np.int64)
        qs = np.ascontiguousarray(qidx if sel is None else qidx[sel], dtype=np.int64)
        out = dots if sel is None else np.empty(len(r), dtype=np.float32)
        table = seg.refine.rows
        if tier.kind == "int8":
            args = (table.view(np.int8), r, queries, qs, out)
            int8_dots(*args, chunks) if len(r) >= PARALLEL_PAIRS else int8_dots_range(*args, 0, len(r))
        else:
            args = (table, seg.codes.view(np.uint8), r, tier.bits, queries, qs, out)
            magnitude_dots(*args, chunks) if len(r) >= PARALLEL_PAIRS else magnitude_dots_range(*args, 0, len(r))
        where = slice(None) if sel is None else sel
        tails[where] = table[r, cb:]  # a few bytes per record
        groups[where] = seg.groups[r]
        rowterm[where] = seg.rowterm[r]
        if sel is not None:
            dots[sel] = out
    return dots, tails, groups, rowterm


def refined_values(segments: list[Segment], codec: Codec, queries: np.ndarray, qoff: np.ndarray,
                   qidx: np.ndarray, tags: np.ndarray, hot_values: np.ndarray) -> np.ndarray:
    """Refined ranking values (the kernels' units: ip, or ``2 ip - ||x||^2`` for l2) of
    (query, tag) pairs, given their hot ranking values (``search.exact_scores``).

    ``queries``: the prepared (rotated) queries; ``qoff``: their ``q . base[g]``.
    """
    n = len(tags)
    if n == 0:
        return np.zeros(0, np.float32)
    cfg = codec.config
    tier = cfg.refine_tier
    qidx = np.ascontiguousarray(qidx, dtype=np.int64)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    dots, tails, groups, rowterm = _refine_dots(segments, tier, q, qidx, tags)
    batch = R.tail_fields(tier, tails, cfg.metric)
    if tier.kind == "int8":
        hot_ip = hot_values if cfg.metric != "l2" else (hot_values - rowterm) / 2
        ip = R.refined_ip(tier, batch, q, qidx, hot_ip=hot_ip, dots=dots)
    else:
        ip = R.refined_ip(tier, batch, q, qidx, base_ip=qoff[qidx, groups], dots=dots)
    return R.ranking_values(ip, batch, cfg.metric)


def refine_top(segments: list[Segment], codec: Codec, queries: np.ndarray, qoff: np.ndarray,
               qsq: np.ndarray, tags: np.ndarray, values: np.ndarray, valid: np.ndarray, k: int,
               refine_k: int, step: int | None = None):
    """The top ``k`` of each query after refinement.

    ``tags``, ``values``, ``valid`` (nq, L): each query's rescored candidates, best first
    (hot ranking values). The best ``refine_k`` of them form the pool the error bound
    picks from. Returns (positions into L (nq, k), -1 where none; refined values (nq, k);
    rows refined per query (nq,)).
    """
    nq, width = tags.shape
    pool = min(max(refine_k, k), width)
    ptags, pvals, pvalid = tags[:, :pool], values[:, :pool], valid[:, :pool]
    flat = np.flatnonzero(pvalid.ravel())
    qi_all = flat // pool
    slack = np.zeros((nq, pool), dtype=np.float32)
    if len(flat):
        scales, groups = _hot_fields(segments, ptags.ravel()[flat])
        slack.ravel()[flat] = R.error_slack(scales, qoff[qi_all, groups], codec.base_sqnorm[groups],
                                            qsq[qi_all], REFINE_SLACK, codec.config.metric)

    def score_pairs(qi, pos):
        return refined_values(segments, codec, queries, qoff, qi, ptags[qi, pos], pvals[qi, pos])

    pos, vals, n_refined = R.bounded_refine(pvals, slack, pvalid, k, score_pairs, step)
    return pos, vals, n_refined
