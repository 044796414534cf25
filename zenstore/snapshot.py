"""An immutable view of a store at one catalog generation, and the candidate-tag encoding.

A :class:`Snapshot` is what every read works from: the manifest, the codec built from its
base file, and the loaded segments (mapped codes plus their ids and tombstones). It is a
plain value -- building one from the catalog is ``view.py``'s job -- so the query pipeline
(``search.py``) runs on snapshots without LMDB.

A candidate in the query pipeline is a *tag*, one int64: ``(segment ordinal << ROW_BITS) |
row``, the ordinal being the segment's position in ``Snapshot.segments``. Tags are made and
taken apart only by the functions here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from . import format as fmt
from .codec import Codec
from .segment import Segment

ROW_BITS = 40  # a segment holds at most 2^40 rows
ROW_MASK = (1 << ROW_BITS) - 1


def make_tags(ordinal, rows) -> np.ndarray:
    """Tags of ``rows`` of the segment at ``ordinal`` (either may be an array)."""
    return (np.asarray(ordinal, dtype=np.int64) << ROW_BITS) | np.asarray(rows, dtype=np.int64)


def tag_base(ordinal: int) -> np.int64:
    """The tag of row 0 of the segment at ``ordinal`` (kernels add the row to it)."""
    return np.int64(ordinal << ROW_BITS)


def split_tags(tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(segment ordinals, rows) of ``tags``."""
    tags = np.asarray(tags, dtype=np.int64)
    return tags >> ROW_BITS, tags & ROW_MASK


def by_segment(ords: np.ndarray):
    """(ordinal, positions) of each segment present in ``ords`` (``split_tags``' first
    result), in ordinal order; positions are None when every tag is in the one segment
    present, so the caller can use its whole arrays without a gather."""
    present = np.unique(ords).tolist()
    if len(present) == 1:
        yield present[0], None
        return
    for ordinal in present:
        yield ordinal, np.flatnonzero(ords == ordinal)


@dataclass(frozen=True)
class Snapshot:
    """The store at one generation: manifest, codec (None before training), segments."""

    manifest: fmt.Manifest
    codec: Codec | None
    segments: tuple[Segment, ...]

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def count(self) -> int:
        return self.manifest.count

    @property
    def id_type(self) -> str | None:
        return self.manifest.id_type

    @property
    def stored_rows(self) -> int:
        return sum(s.rows for s in self.segments)

    def accepts(self, id_kind: str) -> bool:
        """Whether ids of ``id_kind`` ("int"/"str") can be stored in (or found in) this store."""
        return self.manifest.id_type in (None, id_kind)

    def locate(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(segment ordinal, row) of each live id, -1 where absent."""
        seg_ord = np.full(len(ids), -1, dtype=np.int64)
        rows = np.full(len(ids), -1, dtype=np.int64)
        for ordinal, seg in enumerate(self.segments):
            r = seg.lookup(ids)
            found = r >= 0
            seg_ord[found] = ordinal
            rows[found] = r[found]
        return seg_ord, rows

    def tags_to_ids(self, tags: np.ndarray) -> np.ndarray:
        """External ids of candidate tags, as an array (int64, or object for str ids)."""
        ordinals, rows = split_tags(tags)
        out = np.empty(len(ordinals), dtype=object if self.id_type == "str" else np.int64)
        for ordinal in np.unique(ordinals):
            sel = ordinals == ordinal
            out[sel] = self.segments[int(ordinal)].ids[rows[sel]]
        return out

    def live_ids(self) -> np.ndarray:
        """Every live id, in storage order."""
        parts = [s.ids if s.dead.size == 0 else s.ids[s.dead == 0] for s in self.segments]
        if not parts:
            return np.zeros(0, dtype=object if self.id_type == "str" else np.int64)
        return np.concatenate(parts)

    def decode_rows(self, seg: Segment, rows) -> np.ndarray:
        """Dequantized vectors (original space) of ``rows`` of ``seg``: the refined vectors
        where the store has a refine tier, else the hot code's."""
        if seg.refine is not None:
            return self.codec.decode_refined(self.codec.config.refine_tier, seg.groups[rows], seg.codes[rows],
                                             seg.scales16[rows], seg.aux16[rows], seg.refine.rows[rows])
        return self.codec.decode(seg.groups[rows], seg.codes[rows], seg.scales16[rows], seg.aux16[rows])

    def without_segments(self) -> Snapshot:
        """The same manifest with nothing mapped (what a closed store keeps)."""
        return Snapshot(self.manifest, None, ())


EMPTY = Snapshot(fmt.Manifest(), None, ())


def tombstone_updates(snap: Snapshot, seg_ord: np.ndarray, rows: np.ndarray):
    """Deleting ``rows`` (of the segments at ``seg_ord``) from ``snap``: the new segment
    records, and ``{segment id: (new record, all its dead rows)}`` for the touched ones."""
    tombs = {}
    seg_records = []
    for ordinal, seg in enumerate(snap.segments):
        new_rows = rows[seg_ord == ordinal]
        if len(new_rows) == 0:
            seg_records.append(seg.record)
            continue
        old = np.flatnonzero(seg.dead) if seg.dead.size else np.zeros(0, np.int64)
        dead = np.union1d(old, new_rows).astype(np.int64)
        rec = replace(seg.record, deleted=len(dead))
        seg_records.append(rec)
        tombs[seg.record.id] = (rec, dead)
    return seg_records, tombs
