"""Merging segments: the size-tiered policy and the streaming merge that carries it out.

Segments are immutable, so every write adds one; merging keeps their number (and the
work of every query, which scans each) bounded, at the cost of rewriting rows.

**The policy** (``plan_merge``). A segment of ``n`` live rows has *tier*
``floor(log_F max(n, 1))``, ``F = segment_fanout``: tier t holds segments of
``[F^t, F^(t+1))`` live rows. Whenever some tier holds ``F`` segments, those ``F`` are
merged. Tiers count live rows, so the merged segment has at least ``F * F^t`` rows and
lands in a higher tier: **every rewrite of a row moves it to a strictly higher tier**.
Without deletes a row is therefore rewritten at most ``floor(log_F N)`` times in a store
of ``N`` rows, whatever the batch sizes (``tests/test_merge_policy.py`` checks the bound
on real stores and on the policy alone; ``benchmarks/storage.py`` reports it for 1M
rows). Deleting rows can move a segment down a tier, after which its rows may climb
(and be rewritten) again; ``compact()`` rewrites everything once more. A tier never
keeps more than ``F - 1`` segments, so a store has at most ``(F - 1)(floor(log_F N) + 1)``.

The rule it replaced -- "whenever there are more than ``F`` segments, merge the ``F``
smallest" -- rewrote each row ~``N / (F * batch)`` times: 357 rewrites per row after
10k one-row adds.

**The merge** (``merge_segments``) writes the live rows of several segments as one new
segment in (base row, id) order, streaming them in chunks so a merge of gigabytes runs
in bounded memory; the caller commits it and removes the sources.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import format as fmt
from .faults import fault
from .files import write_framed_file
from .refinefile import write_refine
from .segment import Segment, order_rows, segment_filename


def tier(live_rows: int, fanout: int) -> int:
    """``floor(log_fanout(max(live_rows, 1)))``, in exact integer arithmetic."""
    t, size = 0, fanout
    while size <= live_rows:
        t, size = t + 1, size * fanout
    return t


def plan_merge(live_rows: list[int], fanout: int) -> list[int] | None:
    """Positions (into ``live_rows``) of the segments to merge next, or None.

    The lowest tier holding ``fanout`` segments gives its ``fanout`` smallest (ties by
    position, i.e. oldest first). Call again after each merge: one merge can fill the
    next tier.
    """
    by_tier: dict[int, list[int]] = {}
    for pos, n in enumerate(live_rows):
        by_tier.setdefault(tier(n, fanout), []).append(pos)
    for t in sorted(by_tier):
        members = by_tier[t]
        if len(members) >= fanout:
            return sorted(members, key=lambda p: (live_rows[p], p))[:fanout]
    return None


def max_rewrites(rows: int, fanout: int) -> int:
    """The policy's bound on how often one row is rewritten by merges in an add-only
    store of ``rows`` rows."""
    return tier(rows, fanout)


@dataclass(frozen=True)
class Amplification:
    """What the policy does to an add-only store fed given batches (``simulate``)."""

    rows: int
    max_rewrites: int  # most merges any one row went through
    mean_rewrites: float  # rows written by merges / rows added
    most_segments: int  # most segments at once, after each add's merges
    final_segments: int
    bound: int  # max_rewrites(rows, fanout)


def simulate(batches, fanout: int) -> Amplification:
    """Run ``plan_merge`` exactly as the writer does over add-only batches of these sizes
    (an iterable: it may be long), counting every row a merge writes."""
    sizes: list[int] = []
    depth: list[int] = []  # most rewrites of any row in each segment
    written = most = rows = 0
    for b in batches:
        rows += b
        sizes.append(b)
        depth.append(0)
        while (pick := plan_merge(sizes, fanout)) is not None:
            merged = sum(sizes[p] for p in pick)
            d = max(depth[p] for p in pick) + 1
            written += merged
            for p in sorted(pick, reverse=True):
                del sizes[p], depth[p]
            sizes.append(merged)
            depth.append(d)
        most = max(most, len(sizes))
    return Amplification(rows, max(depth, default=0), written / max(rows, 1), most, len(sizes),
                         max_rewrites(rows, fanout))


MERGE_CHUNK_ROWS = 4096


def merge_plan(segments: list[Segment], n_groups: int):
    """Final (group, id) order of the live rows of ``segments``.

    Returns (src_segment, src_row, group_of_row, ids) arrays in the merged order.
    """
    src_seg, src_row, grp, ids = [], [], [], []
    for s, seg in enumerate(segments):
        live = np.ones(seg.rows, dtype=bool) if seg.dead.size == 0 else seg.dead == 0
        rows = np.flatnonzero(live)
        src_seg.append(np.full(len(rows), s, dtype=np.int64))
        src_row.append(rows.astype(np.int64))
        grp.append(seg.groups[rows])
        ids.append(seg.ids[rows])
    if not src_seg:
        return (np.zeros(0, np.int64),) * 3 + (np.zeros(0, np.int64),)
    src_seg = np.concatenate(src_seg)
    src_row = np.concatenate(src_row)
    grp = np.concatenate(grp)
    ids = np.concatenate(ids)
    order = order_rows(grp, ids)
    return src_seg[order], src_row[order], grp[order], ids[order]


def _gather_chunks(segments, src_seg, src_row, attr, section):
    """Yield the rows of ``attr`` (codes/scales16/aux16, or "refine" for the refine
    records) of the sources, in plan order.

    Each source's rows are consumed in increasing order (both orders are (group, id)),
    so pages behind the furthest row read are released as the merge advances.
    """
    def source(seg):
        if attr == "refine":
            return seg.refine.rows, seg.refine.mapped
        return getattr(seg, attr), seg.mapped

    first = source(segments[0])[0]
    row_bytes = first.itemsize * int(np.prod(first.shape[1:]))
    for start in range(0, len(src_seg), MERGE_CHUNK_ROWS):
        s_chunk = src_seg[start : start + MERGE_CHUNK_ROWS]
        r_chunk = src_row[start : start + MERGE_CHUNK_ROWS]
        out = np.empty((len(s_chunk),) + first.shape[1:], dtype=first.dtype)
        for s in np.unique(s_chunk):
            sel = s_chunk == s
            array, mapped = source(segments[int(s)])
            out[sel] = array[r_chunk[sel]]
            mapped.release(section, int(r_chunk[sel].max()) * row_bytes)
        yield out


def merge_segments(root: str, segment_id: int, config: fmt.StoreConfig, n_groups: int,
                   segments: list[Segment], created: list[str] | None = None):
    """Write one segment holding the live rows of ``segments`` (and with a refine tier its
    refine file, after it, with the same row permutation); stream, never load them whole.
    ``created`` collects the files written.

    Returns (record, ids in row order).
    """
    src_seg, src_row, grp, ids = merge_plan(segments, n_groups)
    n = len(src_seg)
    counts = np.bincount(grp, minlength=n_groups)
    offsets = np.zeros(n_groups + 1, dtype="<u8")
    np.cumsum(counts, out=offsets[1:])
    words, blocks = config.words, config.scale_blocks
    sections = [
        ("groups", offsets),
        ("codes", (n * words * 8, _gather_chunks(segments, src_seg, src_row, "codes", "codes"))),
        ("scales", (n * blocks * 2, _gather_chunks(segments, src_seg, src_row, "scales16", "scales"))),
        ("aux", (n * 2, _gather_chunks(segments, src_seg, src_row, "aux16", "aux"))),
    ]
    meta = {
        "segment_id": segment_id,
        "dim": config.dim,
        "rows": n,
        "n_groups": n_groups,
        "scale_blocks": blocks,
        "metric": config.metric,
    }
    rel = segment_filename(segment_id)
    size, header_crc = write_framed_file(os.path.join(root, rel), fmt.FILE_KIND_SEGMENT, meta, sections)
    if created is not None:
        created.append(rel)
    refine = None
    if config.refine is not None:
        fault("segment.refine")  # merged segment in place, its refine file not yet written
        chunks = _gather_chunks(segments, src_seg, src_row, "refine", "rows")
        refine = write_refine(root, segment_id, config, header_crc, chunks, n)
        if created is not None:
            created.append(refine.file)
    return fmt.SegmentRecord(segment_id, rel, n, 0, size, header_crc, refine), ids
