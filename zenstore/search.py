"""The query pipeline as plain functions over a snapshot (codec + loaded segments).

Entry points: :func:`search_snapshot` (a batch of queries -> top-k tags and scores) and
:func:`rerank_snapshot` (exact scores of given rows). Below them, the stages:

1. ``prepare_queries``: normalise (cosine), rotate, and derive everything the kernels
   need per query: its sign code, per-block weights, and ``q . base[g]`` for every base row.
2. ``probe_mask``: which base rows each query scans (all, or the ``nprobe`` nearest).
3. ``coarse_pass``: XOR + popcount proxy over the probed rows of every segment, keeping a
   shortlist of the best ``shortlist`` rows per query in bounded heaps.
4. ``rescore``: exact scores of the shortlisted rows against their dequantized vectors
   with the full-precision query; the best ``k`` win.

Nothing here touches LMDB, so it is tested on in-memory segments
(tests/test_search_pipeline.py). Candidates are tags (``snapshot.make_tags``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from . import coarse
from .codec import Codec
from .errors import IdTypeMismatch
from .kernels import (rescore_rows, rescore_rows_range,
                      scan_batch_by_group, scan_batch_by_query_block, scan_listed_by_group, scan_query_parallel,
                      scan_query_serial)
from .kernels.query import prepare_range, prepare_rows
from .kernels.topk import top_mask
from .planner import EXACT, LISTED, FilterPlan, choose, filtered_probe
from .rotation import hadamard_block
from .refinement import RefineRequest, can_refine, refine_top, refined_values
from .segment import Segment
from .snapshot import Snapshot, by_segment, make_tags, split_tags, tag_base
from .types import SearchOptions
from .validation import for_metric, normalize_ids

MAX_K = 1 << 20  # largest k / shortlist / top_n accepted
WORK_BYTES = 64 << 20  # per-batch working memory of the coarse pass and ranking (queries are chunked)
QUERY_BLOCK = 8  # queries scored together per code row in scan_batch_by_query_block
PARALLEL_SCAN_ROWS = 16384  # smaller single-query scans run on one thread
PARALLEL_RESCORE = 64  # fewer (query, row) pairs: one thread (~1 us of work each)
PARALLEL_PREPARE = 16  # fewer queries: one thread
GROUP_SCAN_HEAP_BYTES = 64 << 20  # private heaps of scan_batch_by_group; larger: scan_batch_by_query_block
GATHER_BYTES = 32 << 20  # bounds the (query, row) pairs scored per rescoring slice


def ip_weight(metric: str) -> np.float32:
    """Kernels rank by ip_w * <q, x_hat> + term: 2 for l2 (-> ||q||^2 - ||q - x||^2), else 1."""
    return np.float32(2.0 if metric == "l2" else 1.0)


@dataclass(frozen=True)
class PreparedQueries:
    q: np.ndarray  # (nq, d) float32, rotated (and normalised for cosine)
    qcodes: np.ndarray  # (nq, words) uint64 sign code
    alpha: np.ndarray  # (nq, blocks) float32 weight of sign agreement per block
    qoff: np.ndarray  # (nq, n_base) float32 q . base[g]
    qsq: np.ndarray  # (nq,) float32 ||q||^2
    qsums: np.ndarray  # (nq, blocks) float32 sum of q over each block
    probe: np.ndarray | None = None  # (nq, n_base) bool when chosen at preparation (coarse.py)
    nprobe: int | None = None  # ... for this nprobe; qoff is then exact only on candidates

    def __len__(self) -> int:
        return self.q.shape[0]


def prepare_queries(codec: Codec, queries: np.ndarray, nprobe: int | None = None,
                    projected: bool | None = None) -> PreparedQueries:
    """Queries must already be validated (2-d, right dim, finite, nonzero for cosine).

    With ``nprobe``, the probed base rows are chosen here by the projected coarse step
    (``coarse.py``) where it is cheaper and the projection keeps enough of the base
    (``projected`` None) or always (True): ``q . c``
    is then exact only on each query's candidates. Otherwise (False, or no ``nprobe``)
    it is exact on every base row and ``probe_mask`` chooses."""
    x = np.ascontiguousarray(queries, dtype=np.float32)
    nq, d = x.shape
    nb = codec.config.scale_blocks
    q = np.empty((nq, d), dtype=np.float32)
    codes = np.empty((nq, d // 64), dtype=np.uint64)
    alpha = np.empty((nq, nb), dtype=np.float32)  # 1-bit query: q_b . b ~ mean|q_b| sign(q_b) . b
    qsums = np.empty((nq, nb), dtype=np.float32)
    qsq = np.empty(nq, dtype=np.float32)
    rot = codec.rotation
    args = (x, rot.signs, rot.perms, hadamard_block(d), codec.config.metric == "cosine", nb,
            q, codes, alpha, qsums, qsq)
    if nq < PARALLEL_PREPARE:
        prepare_range(*args, 0, nq)
    else:
        prepare_rows(*args, 4 * numba.get_num_threads())
    if projected is None:  # cheaper by multiply-adds, and faithful to this base (coarse.MIN_CAPTURED)
        projected = (nprobe is not None and coarse.worthwhile(codec.n_base, d, nprobe)
                     and codec.projection().faithful)
    if projected and nprobe is not None and nprobe < codec.n_base:
        qoff, probe = codec.probe(q, nprobe)
        return PreparedQueries(q, codes, alpha, qoff, qsq, qsums, probe, nprobe)
    qoff = codec.base_dots(q).astype(np.float32, copy=False)
    return PreparedQueries(q, codes, alpha, qoff, qsq, qsums)


def closeness(prep: PreparedQueries, codec: Codec) -> np.ndarray:
    """(nq, n_base): how near each base row is to each query (larger is nearer; in L2 for
    l2 and cosine stores, ``Codec.probe_by_l2``)."""
    if codec.probe_by_l2:
        return 2 * prep.qoff - codec.base_sqnorm[None, :]  # = ||q||^2 - ||q - c||^2
    return prep.qoff


def probe_mask(prep: PreparedQueries, codec: Codec, nprobe: int | None) -> np.ndarray:
    """(nq, n_base) bool: the base rows each query scans."""
    if prep.probe is not None:
        if nprobe != prep.nprobe:
            raise ValueError(f"queries prepared for nprobe={prep.nprobe} cannot probe {nprobe}")
        return prep.probe
    nq, g = prep.qoff.shape
    if nprobe is None or nprobe >= g:
        return np.ones((nq, g), dtype=np.bool_)
    mask = np.empty((nq, g), dtype=np.bool_)
    top_mask(np.ascontiguousarray(closeness(prep, codec), dtype=np.float32), nprobe, mask)
    return mask


@dataclass
class Shortlist:
    vals: np.ndarray  # (nq, L) float32 proxy values (heap order)
    tags: np.ndarray  # (nq, L) int64 candidate tags
    size: np.ndarray  # (nq,) int64 filled entries


def coarse_pass(segments: list[Segment], prep: PreparedQueries, probe: np.ndarray,
                shortlist: int, metric: str) -> Shortlist:
    nq = len(prep)
    vals = np.empty((nq, shortlist), dtype=np.float32)
    tags = np.empty((nq, shortlist), dtype=np.int64)
    size = np.zeros(nq, dtype=np.int64)
    ip_w = ip_weight(metric)
    threads = numba.get_num_threads()
    group_chunks = 2 * threads  # private heaps of (float32 value, int64 tag) per chunk
    if nq > 1 and not probe.all() and group_chunks * nq * shortlist * 12 <= GROUP_SCAN_HEAP_BYTES:
        _scan_group_major(segments, prep, probe, ip_w, group_chunks, vals, tags, size)
        return Shortlist(vals, tags, size)
    groups_one = np.flatnonzero(probe[0]).astype(np.int64) if nq == 1 else None
    qcodes, alpha, qoff, order = prep.qcodes, prep.alpha, prep.qoff, None
    if nq > 1 and not probe.all():
        # queries that probe the same base rows go into the same block of scan_batch_by_query_block, so a
        # group's codes are read from memory once for several queries instead of once each
        order = np.argsort(np.argmax(np.where(probe, prep.qoff, -np.inf), axis=1), kind="stable")
        probe, qcodes, alpha, qoff = probe[order], qcodes[order], alpha[order], qoff[order]
    for ordinal, seg in enumerate(segments):
        if seg.rows == 0:
            continue
        tag = tag_base(ordinal)
        if nq == 1:
            args = (seg.codes, seg.scales, seg.rowlam, seg.rowterm, seg.dead, seg.group_offsets,
                    groups_one, prep.qcodes, prep.alpha, prep.qoff, ip_w, tag)
            offs = seg.group_offsets
            if int((offs[groups_one + 1] - offs[groups_one]).sum()) < PARALLEL_SCAN_ROWS:
                scan_query_serial(*args, vals, tags, size)
            else:
                scan_query_parallel(*args, 2 * threads, vals, tags, size)
        else:
            scan_batch_by_query_block(seg.codes, seg.scales, seg.rowlam, seg.rowterm, seg.dead,
                                      seg.group_offsets, probe, qcodes, alpha, qoff, ip_w, tag,
                                      QUERY_BLOCK, vals, tags, size)
    if order is not None:
        back = np.argsort(order)
        vals, tags, size = vals[back], tags[back], size[back]
    return Shortlist(vals, tags, size)


def _scan_group_major(segments: list[Segment], prep: PreparedQueries, probe: np.ndarray,
                      ip_w: np.float32, n_chunks: int, vals, tags, size) -> None:
    """Batch coarse pass that reads each probed group once per batch (``scan_batch_by_group``):
    with nprobe << n_base the queries of a batch rarely share a block of ``scan_batch_by_query_block``, so
    reading by query block would fetch most groups once per query that probes them."""
    groups_t, queries_t = np.nonzero(probe.T)  # (group, query) pairs, by group
    n_groups = probe.shape[1]
    group_start = np.searchsorted(groups_t, np.arange(n_groups + 1))
    group_queries = queries_t.astype(np.int64)
    per_group = np.diff(group_start)
    for ordinal, seg in enumerate(segments):
        if seg.rows == 0:
            continue
        # contiguous runs of groups with about equal work (rows x probing queries) per task
        work = np.cumsum(per_group * (np.diff(seg.group_offsets) + 1))
        cuts = np.searchsorted(work, work[-1] * np.arange(1, n_chunks) / n_chunks, side="left") + 1
        chunk_groups = np.maximum.accumulate(np.concatenate(([0], np.minimum(cuts, n_groups), [n_groups])))
        scan_batch_by_group(seg.codes, seg.scales, seg.rowlam, seg.rowterm, seg.dead,
                            seg.group_offsets, group_queries, group_start,
                            chunk_groups.astype(np.int64), prep.qcodes, prep.alpha, prep.qoff,
                            ip_w, tag_base(ordinal), vals, tags, size)


def exact_scores(segments: list[Segment], prep: PreparedQueries, qidx: np.ndarray,
                 tags: np.ndarray, metric: str) -> np.ndarray:
    """Exact dequantized ranking values (ip_w * ip + term) of (query, tag) pairs.

    Pairs are sorted by query and scored in slices whose gathered rows stay under
    ``GATHER_BYTES``, so memory stays bounded whatever the batch and shortlist size.
    """
    n = len(tags)
    out = np.empty(n, dtype=np.float32)
    if n == 0:
        return out
    ip_w = ip_weight(metric)
    qidx = np.asarray(qidx, dtype=np.int64)
    order = None
    if n > 1 and (qidx[1:] < qidx[:-1]).any():
        order = np.argsort(qidx, kind="stable")
        qidx, tags = qidx[order], tags[order]
    d = prep.q.shape[1]
    step = max(1, GATHER_BYTES // (d // 8 + 4 * (prep.qsums.shape[1] + 3)))
    res = np.empty(n, dtype=np.float32) if order is not None else out
    for a in range(0, n, step):
        b = min(n, a + step)
        res[a:b] = _score_slice(segments, prep, qidx[a:b], tags[a:b], ip_w)
    if order is not None:
        out[order] = res
    return out


def _score_slice(segments: list[Segment], prep: PreparedQueries, qidx: np.ndarray,
                 tags: np.ndarray, ip_w: np.float32) -> np.ndarray:
    """Ranking values of pairs sorted by query (one slice of ``exact_scores``), each
    segment's pairs scored in place from its mapped codes (``kernels.signs``)."""
    n = len(tags)
    ords, rows = split_tags(tags)
    res = np.empty(n, dtype=np.float32)
    threads = numba.get_num_threads()
    for ordinal, sel in by_segment(ords):
        seg = segments[ordinal]
        r = np.ascontiguousarray(rows if sel is None else rows[sel], dtype=np.int64)
        q = np.ascontiguousarray(qidx if sel is None else qidx[sel], dtype=np.int64)
        groups = np.searchsorted(seg.group_offsets, r, side="right") - 1
        qoff = np.ascontiguousarray(prep.qoff[q, groups], dtype=np.float32)
        out = res if sel is None else np.empty(len(r), dtype=np.float32)
        args = (seg.codes.view(np.uint32), seg.scales, seg.rowlam, seg.rowterm, r, qoff, q, prep.q, ip_w, out)
        if len(r) < PARALLEL_RESCORE:
            rescore_rows_range(*args, 0, len(r))
        else:
            rescore_rows(*args, min(len(r), 4 * threads))
        if sel is not None:
            res[sel] = out
    return res


def to_scores(values: np.ndarray, prep_qsq: np.ndarray, metric: str) -> np.ndarray:
    """Ranking values -> user-facing scores (squared distance for l2, similarity otherwise)."""
    if metric == "l2":
        return np.maximum(prep_qsq - values, 0.0).astype(np.float32)
    return values.astype(np.float32)


def rank(values: np.ndarray, tags: np.ndarray, k: int) -> np.ndarray:
    """Order (positions) of the best ``k`` of one query's candidates: value desc, tag asc."""
    order = np.lexsort((tags, -values))
    return order[:k]


def search_prepared(segments: list[Segment], codec: Codec, prep: PreparedQueries, k: int,
                    shortlist: int, nprobe: int | None, probe: np.ndarray | None = None,
                    refine: RefineRequest | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run the whole pipeline. Returns (tags, scores), each (nq, k), best first; rows with
    fewer than k candidates are padded with tag -1 and score NaN. ``probe`` (nq, n_base)
    replaces the ``nprobe`` nearest base rows when given (filtered searches); ``refine``:
    refine the best rescored candidates with the store's refine tier (``refinement.py``)."""
    metric = codec.config.metric
    if probe is None:
        probe = probe_mask(prep, codec, nprobe)
    sl = coarse_pass(segments, prep, probe, shortlist, metric)
    return best_of_shortlist(segments, prep, sl, k, metric, refine)


def best_of_shortlist(segments: list[Segment], prep: PreparedQueries, sl: Shortlist, k: int,
                      metric: str, refine: RefineRequest | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rescore every query's shortlisted tags exactly -- and with ``refine``, refine the
    best of them (``refinement.refine_top``); the best ``k`` (tags, scores), each (nq, k),
    padded with tag -1 and score NaN."""
    nq, shortlist = sl.tags.shape
    filled = np.arange(shortlist)[None, :] < sl.size[:, None]
    qidx = np.nonzero(filled)[0]
    flat_tags = sl.tags[filled]
    values = exact_scores(segments, prep, qidx, flat_tags, metric)
    # rank every query's candidates at once: value descending, then tag ascending
    vals = np.full((nq, shortlist), -np.inf, dtype=np.float32)
    tags = np.full((nq, shortlist), np.iinfo(np.int64).max, dtype=np.int64)
    vals[filled] = values
    tags[filled] = flat_tags
    if refine is not None:
        order = np.lexsort((tags, -vals), axis=-1)
        tags, vals, filled = (np.take_along_axis(a, order, axis=1) for a in (tags, vals, filled))
        pos, top_vals, n_refined = refine_top(segments, refine.codec, prep.q, prep.qoff, prep.qsq, tags, vals,
                                              filled, k, refine.refine_k)
        if refine.out is not None:
            refine.out[:] = n_refined
        order = np.maximum(pos, 0)
        top_tags = np.take_along_axis(tags, order, axis=1)
        valid = pos >= 0
    else:
        order = np.lexsort((tags, -vals), axis=-1)[:, :k]
        top_tags = np.take_along_axis(tags, order, axis=1)
        top_vals = np.take_along_axis(vals, order, axis=1)
        valid = np.take_along_axis(filled, order, axis=1)
    scores = to_scores(top_vals, prep.qsq[:, None], metric)
    scores[~valid] = np.nan
    top_tags[~valid] = -1
    if top_tags.shape[1] < k:  # fewer candidates than k in total
        pad = k - top_tags.shape[1]
        top_tags = np.pad(top_tags, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=np.nan)
    return top_tags, scores


# --- filtered searches: the matching rows are known (planner.py) ---------------------------


LISTED_PARALLEL_ROWS = 4096  # fewer (listed row, query) pairs: one task, no split


def listed_pass(segments: list[Segment], prep: PreparedQueries, probe: np.ndarray, shortlist: int,
                metric: str, rows: tuple) -> Shortlist:
    """The coarse pass over only ``rows[i]`` (sorted rows of segment ``i``) in the groups
    ``probe`` flags: work in proportion to the matching rows, not to the segments."""
    nq, n_groups = probe.shape
    vals = np.empty((nq, shortlist), dtype=np.float32)
    tags = np.empty((nq, shortlist), dtype=np.int64)
    size = np.zeros(nq, dtype=np.int64)
    ip_w = ip_weight(metric)
    groups_t, queries_t = np.nonzero(probe.T)  # (group, query) pairs, by group
    group_start = np.searchsorted(groups_t, np.arange(n_groups + 1))
    group_queries = queries_t.astype(np.int64)
    per_group = np.diff(group_start)
    threads = numba.get_num_threads()
    for ordinal, seg in enumerate(segments):
        listed = rows[ordinal]
        if len(listed) == 0:
            continue
        list_offsets = np.searchsorted(listed, seg.group_offsets).astype(np.int64)
        work = np.cumsum(per_group * np.diff(list_offsets))
        n_chunks = 1 if work[-1] < LISTED_PARALLEL_ROWS else 2 * threads
        cuts = np.searchsorted(work, work[-1] * np.arange(1, n_chunks) / n_chunks, side="left") + 1
        chunk_groups = np.maximum.accumulate(np.concatenate(([0], np.minimum(cuts, n_groups), [n_groups])))
        scan_listed_by_group(seg.codes, seg.scales, seg.rowlam, seg.rowterm, listed, list_offsets,
                             group_queries, group_start, chunk_groups.astype(np.int64), prep.qcodes,
                             prep.alpha, prep.qoff, ip_w, tag_base(ordinal), vals, tags, size)
    return Shortlist(vals, tags, size)


def group_counts(segments: list[Segment], rows: tuple, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows stored, rows listed) per base row over all segments."""
    stored = np.zeros(n_groups, dtype=np.int64)
    listed = np.zeros(n_groups, dtype=np.int64)
    for seg, r in zip(segments, rows):
        stored += np.diff(seg.group_offsets)
        if len(r):
            listed += np.diff(np.searchsorted(r, seg.group_offsets))
    return stored, listed


def search_rows(segments: list[Segment], codec: Codec, prep: PreparedQueries, k: int, shortlist: int,
                nprobe: int | None, rows: tuple, plan: FilterPlan,
                refine: RefineRequest | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``search_prepared`` over only ``rows`` (per segment, sorted live rows), the way
    ``plan`` says (planner.py). Same output."""
    metric = codec.config.metric
    nq = len(prep)
    if plan.strategy == EXACT:  # every matching row is a candidate of every query
        every = np.concatenate([make_tags(i, r) for i, r in enumerate(rows) if len(r)])
        sl = Shortlist(np.zeros((nq, len(every)), np.float32), np.tile(every, (nq, 1)),
                       np.full(nq, len(every), dtype=np.int64))
        return best_of_shortlist(segments, prep, sl, k, metric, refine)
    stored, listed = group_counts(segments, rows, codec.n_base)
    probe = filtered_probe(closeness(prep, codec), stored, listed, nprobe, k)
    if plan.strategy == LISTED:
        sl = listed_pass(segments, prep, probe, shortlist, metric, rows)
        return best_of_shortlist(segments, prep, sl, k, metric, refine)
    shown = [seg.only_rows(r) for seg, r in zip(segments, rows)]
    return search_prepared(shown, codec, prep, k, shortlist, nprobe, probe, refine)


# --- entry points over a snapshot -----------------------------------------------------------


def prepare(snap: Snapshot, queries: np.ndarray, nprobe: int | None = None,
            projected: bool | None = None) -> PreparedQueries:
    """Validated (nq, dim) float32 queries -> prepared queries (metric checks included)."""
    return prepare_queries(snap.codec, for_metric(queries, snap.codec.config.metric, "query"), nprobe,
                           projected)


def searchable(snap: Snapshot, filter_ids=None) -> list[Segment]:
    """The snapshot's segments, restricted to ``filter_ids`` when given."""
    if filter_ids is None:
        return list(snap.segments)
    ids, kind = normalize_ids(filter_ids, allow_duplicates=True)
    if not snap.accepts(kind):
        raise IdTypeMismatch(f"this store uses {snap.id_type} ids; filter_ids are {kind}")
    return [seg.restricted(ids) for seg in snap.segments]


def search_snapshot(snap: Snapshot, queries: np.ndarray, opts: SearchOptions, metric: str,
                    filter_ids=None, rows: tuple | None = None,
                    refined_out: np.ndarray | None = None, exact_probe: bool = False
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``opts.k`` (tags, scores) of each query, each (nq, k), padded with tag -1 and
    score NaN; ``queries`` validated (nq, dim) float32 in the original space.

    ``exact_probe`` chooses the probed base rows by the exact product against every base
    row even where the projected step (``coarse.py``) would be used: the calibration's
    searches, which must not derive the projection inside an ``add``.

    ``rows`` (per segment of ``snap``, its sorted live rows that may be returned: a
    resolved payload filter, ``selection.py``) restricts the search to those rows, run as
    ``planner.choose`` says; ``filter_ids`` restricts it to ids (not with ``rows``).

    The shortlist and the heaps are capped by the rows stored (a k or shortlist beyond
    them finds nothing more), and queries run in chunks whose working memory stays near
    ``WORK_BYTES`` whatever nq x shortlist is asked for.
    """
    nq = queries.shape[0]
    out_tags = np.full((nq, opts.k), -1, dtype=np.int64)
    out_scores = np.full((nq, opts.k), np.nan, dtype=np.float32)
    matching = None if rows is None else sum(len(r) for r in rows)
    if snap.codec is None or snap.count == 0 or matching == 0:
        for_metric(queries, metric, "query")  # bad queries are refused even by an empty store
        return out_tags, out_scores
    segments = searchable(snap, filter_ids)
    stored = max(1, sum(s.rows for s in segments))
    candidates = stored if matching is None else matching
    k = min(opts.k, candidates)
    shortlist = min(opts.effective_shortlist, candidates)
    plan = None if rows is None else choose(matching, stored, shortlist)
    chunk = max(1, WORK_BYTES // (48 * max(shortlist, k)))
    if plan is not None and plan.strategy == LISTED:  # private heaps of the parallel tasks
        chunk = max(1, min(chunk, GROUP_SCAN_HEAP_BYTES // (2 * numba.get_num_threads() * shortlist * 12)))
    refine_k = min(opts.effective_refine_k, shortlist) if opts.refine and can_refine(segments) else None
    if refined_out is not None:
        refined_out[:] = 0
    for a in range(0, nq, chunk):
        prep = prepare(snap, queries[a : a + chunk], opts.nprobe if plan is None else None,
                       False if exact_probe else None)
        refine = None if refine_k is None else RefineRequest(
            snap.codec, refine_k, None if refined_out is None else refined_out[a : a + chunk])
        if plan is None:
            tags, scores = search_prepared(segments, snap.codec, prep, k, shortlist, opts.nprobe, refine=refine)
        else:
            tags, scores = search_rows(segments, snap.codec, prep, k, shortlist, opts.nprobe, rows, plan, refine)
        out_tags[a : a + chunk, :k] = tags
        out_scores[a : a + chunk, :k] = scores
    return out_tags, out_scores


def rerank_snapshot(snap: Snapshot, query: np.ndarray, tags: np.ndarray, top_n: int, refine: bool = True):
    """Exact dequantized scores of the rows ``tags`` for one validated (1, dim) query, or
    with a refine tier (and ``refine``) their refined scores: the positions (into
    ``tags``) of the best ``top_n``, best first, and their scores."""
    prep = prepare(snap, query)
    qidx = np.zeros(len(tags), np.int64)
    values = exact_scores(list(snap.segments), prep, qidx, tags, snap.codec.config.metric)
    if refine and can_refine(list(snap.segments)):  # a few hundred rows at most: refine them all
        values = refined_values(list(snap.segments), snap.codec, prep.q, prep.qoff, qidx, tags, values)
    order = rank(values, tags, top_n)
    return order, to_scores(values[order], prep.qsq[0], snap.codec.config.metric)
