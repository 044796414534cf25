"""What each write does to the payload indexes, inside that write's LMDB transaction.

The writer (``writer.py``) calls these with its open transaction, so an index changes
atomically with the rows it describes (docs/reliability.md: a crash at any point leaves
the indexes agreeing with the payloads):

- a batch (add/upsert) writes one record per index for its new segment, from the payloads
  it stores; replaced and deleted rows need nothing (their tombstones hide them);
- a delete that empties a segment drops that segment's records with its id column;
- a merge (and ``compact``) writes the merged segment's records by renumbering its
  sources' rows, and drops the sources' records;
- ``create_payload_index`` builds every segment's record from the stored payloads, a
  chunk at a time; ``drop_payload_index`` deletes them.

Each function returns the indexes it wrote, which the writer keeps with the new segments
(``Segment.payload_indexes``) so the next search does not read them back.
"""

from __future__ import annotations

import numpy as np

from . import format as fmt
from . import payload_index, records
from .merge import merge_plan
from .segment import Segment
from .selection import CHUNK_ROWS, index_of

Indexes = dict  # {(field, kind): payload_index.SegmentIndex}


def stored_docs(blobs: list | None, order: np.ndarray) -> list:
    """The payloads a batch stores, as readers will decode them, in segment row order."""
    if blobs is None:
        return [None] * len(order)
    return [None if blobs[i] is None else fmt.decode_payload(blobs[i], "new payload") for i in order.tolist()]


def index_batch(txn, specs, segment_id: int, docs: list) -> Indexes:
    """Records for a new segment whose rows hold ``docs`` (row order)."""
    out = {}
    rows = np.arange(len(docs))
    for spec in specs:
        idx = payload_index.Builder(spec.field, spec.kind, len(docs)).add(rows, docs).finish()
        records.put_payload_index(txn, segment_id, spec.field, payload_index.encode(idx))
        out[(spec.field, spec.kind)] = idx
    return out


def drop_segment(txn, specs, segment_id: int) -> None:
    records.delete_payload_indexes(txn, segment_id, [s.field for s in specs])


def index_merge(txn, specs, victims: list[Segment], segment_id: int, rows: int, n_groups: int,
                root: str) -> Indexes:
    """Records for the segment merging ``victims`` (``merge.merge_segments`` order), which
    has ``rows`` rows (0: none written); the victims' records are dropped."""
    out = {}
    if specs and rows:
        src_seg, src_row, _, _ = merge_plan(victims, n_groups)
        new_rows = payload_index.new_rows_of(len(victims), [v.rows for v in victims], src_seg, src_row)
        for spec in specs:
            parts = [(index_of(v, txn, spec.field, spec.kind, root), nr) for v, nr in zip(victims, new_rows)]
            idx = payload_index.merge(parts, rows)
            records.put_payload_index(txn, segment_id, spec.field, payload_index.encode(idx))
            out[(spec.field, spec.kind)] = idx
    for v in victims:
        drop_segment(txn, specs, v.record.id)
    return out


def build_index(txn, segments, field: str, kind: str) -> dict[int, payload_index.SegmentIndex]:
    """A new index of ``field`` over every segment's live rows, from the stored payloads
    (decoded ``CHUNK_ROWS`` at a time); returns {segment id: index}."""
    out = {}
    for seg in segments:
        builder = payload_index.Builder(field, kind, seg.rows)
        live = seg.live_rows()
        for a in range(0, len(live), CHUNK_ROWS):
            chunk = live[a : a + CHUNK_ROWS]
            builder.add(chunk, records.read_payloads(txn, seg.ids[chunk].tolist()))
        idx = builder.finish()
        records.put_payload_index(txn, seg.record.id, field, payload_index.encode(idx))
        out[seg.record.id] = idx
    return out


def drop_index(txn, segments, field: str) -> None:
    for seg in segments:
        records.delete_payload_indexes(txn, seg.record.id, [field])
