"""Which rows a search may return: ``filter_ids`` and a payload filter, resolved to the
live rows of each segment of one snapshot, inside the read transaction of that state.

Payload indexes answer the parts of the filter their plan covers (``Filter.index_plan``):
each scan is a slice of a segment's index (``payload_index``), and the few *unkeyed* rows
of the fields involved are re-checked on their payloads. The rest of the filter (the
residual) is checked on the payloads of the rows the scans left. With no usable index the
whole filter is checked on every candidate row's payload. Payloads are decoded
``CHUNK_ROWS`` at a time (bounded memory), through one zstd context per thread
(``format.decompress``). Decoding dominates that path: tens of microseconds per payload
against well under one for an index scan (docs/api.md, "Filtered search"). Either way the
rows are the same; ``tests/test_filtered_search.py`` holds the two paths equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import payload_index
from . import records
from .errors import CorruptStore, IdTypeMismatch
from .filters import Filter
from .segment import Segment
from .snapshot import Snapshot
from .validation import normalize_ids

CHUNK_ROWS = 4096  # payloads decoded at a time


@dataclass(frozen=True)
class Selection:
    """Per segment of one snapshot, the sorted live rows (int64) a search may return."""

    rows: tuple
    indexed: bool  # whether payload indexes answered (part of) the filter

    @property
    def count(self) -> int:
        return sum(len(r) for r in self.rows)


def select_rows(snap: Snapshot, txn, flt: Filter | None, filter_ids=None, *, root: str = "") -> Selection | None:
    """The rows of ``snap`` that ``filter_ids`` (ids, unknown ones ignored) and ``flt``
    allow; None when neither restricts anything. ``txn`` reads the same committed state."""
    if filter_ids is None and (flt is None or not flt.fields()):
        return None
    if filter_ids is not None:
        ids, kind = normalize_ids(filter_ids, allow_duplicates=True)
        if not snap.accepts(kind):
            raise IdTypeMismatch(f"this store uses {snap.id_type} ids; filter_ids are {kind}")
        bases = [_id_rows(seg, ids) for seg in snap.segments]
    else:
        bases = [None] * len(snap.segments)  # every live row
    if flt is None or not flt.fields():
        return Selection(tuple(bases), False)
    indexed = snap.manifest.indexed if records.has_payload_index_db(txn) else {}
    plan = flt.index_plan(indexed) if indexed else None
    out = []
    for seg, base in zip(snap.segments, bases):
        if plan is not None and plan.scans:
            rows = _scanned(seg, txn, plan.scans, base, root)
            if plan.residual is not None:
                rows = _matching(seg, txn, plan.residual, rows)
        else:
            rows = _matching(seg, txn, flt, seg.live_rows() if base is None else base)
        out.append(rows)
    return Selection(tuple(out), plan is not None and bool(plan.scans))


def _id_rows(seg: Segment, ids: np.ndarray) -> np.ndarray:
    rows = seg.lookup(ids)
    return np.unique(rows[rows >= 0])


def _matching(seg: Segment, txn, flt: Filter, rows: np.ndarray) -> np.ndarray:
    """The ``rows`` whose payloads ``flt`` matches, decoded a chunk at a time."""
    if len(rows) == 0:
        return rows
    keep = np.zeros(len(rows), dtype=bool)
    for a in range(0, len(rows), CHUNK_ROWS):
        chunk = rows[a : a + CHUNK_ROWS]
        keep[a : a + len(chunk)] = flt.mask(records.read_payloads(txn, seg.ids[chunk].tolist()))
    return rows[keep]


def index_of(seg: Segment, txn, field: str, kind: str, root: str = "") -> payload_index.SegmentIndex:
    """The segment's index of ``field``, loaded from ``txn`` the first time and kept with
    the segment (every snapshot sharing it shares the loaded index)."""
    idx = seg.payload_indexes.get((field, kind))
    if idx is None:
        what = f"{root}: payload index of {field!r} in segment {seg.record.id}"
        blob = records.read_payload_index(txn, seg.record.id, field)
        if blob is None:
            raise CorruptStore(f"{what}: the manifest lists the index, the catalog has no record")
        idx = payload_index.decode(blob, kind, seg.rows, what)
        seg.payload_indexes[(field, kind)] = idx
    return idx


def _scanned(seg: Segment, txn, scans: tuple, base: np.ndarray | None, root: str) -> np.ndarray:
    """The ``base`` rows (None: the live rows) every scan selects, sorted; exact: rows
    unkeyed in a scanned index are re-checked on their payloads."""
    def get(field, kind):
        return index_of(seg, txn, field, kind, root)

    keep = None  # rows every scan so far selects (bool per row)
    for scan in scans:
        mask = payload_index.scan_mask(scan, get, seg.rows)
        unkeyed = payload_index.unkeyed_rows(scan, get)
        if len(unkeyed):
            if keep is not None:
                unkeyed = unkeyed[keep[unkeyed]]
            if base is not None:
                unkeyed = np.intersect1d(unkeyed, base, assume_unique=True)
            elif seg.dead.size:
                unkeyed = unkeyed[seg.dead[unkeyed] == 0]
            mask[unkeyed] = False
            mask[_matching(seg, txn, payload_index.scan_filter(scan), unkeyed)] = True
        keep = mask if keep is None else keep & mask
    if base is not None:
        return base[keep[base]]
    if seg.dead.size:
        keep &= seg.dead == 0
    return np.flatnonzero(keep)
