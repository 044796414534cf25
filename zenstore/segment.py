"""Segment files: encoded vectors grouped by base row, written once, mapped to read.

A segment holds rows sorted by (base row, id): the rows of base row ``g`` are
``group_offsets[g] .. group_offsets[g + 1]``, so a vector's base row costs no bytes and
search can scan just the groups nearest a query. Segments are immutable; deletes live in
the catalog as tombstones and merging writes a new segment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from . import format as fmt
from .codec import Codec, EncodedBatch
from .errors import CorruptStore
from .faults import fault
from .files import MappedFile, check_digest, open_framed_file, write_framed_file
from .refinefile import RefineData, load_refine, write_refine

SEGMENT_DIR = "segments"


def segment_filename(segment_id: int) -> str:
    return fmt.SEGMENT_FILE.format(segment_id)  # the manifest checks names against this


def order_rows(groups: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Permutation sorting rows by (group, id)."""
    by_id = np.argsort(ids, kind="stable")
    return by_id[np.argsort(groups[by_id], kind="stable")]


def write_segment(root: str, segment_id: int, config: fmt.StoreConfig, n_groups: int,
                  batch: EncodedBatch, refine_rows: np.ndarray | None = None,
                  created: list[str] | None = None) -> fmt.SegmentRecord:
    """Write an already (group, id)-ordered batch as a segment file, and with a refine
    tier its refine file (``refine_rows``, same order) after it; return its record.
    ``created`` collects the files written, so a caller can remove them if it fails."""
    counts = np.bincount(batch.groups, minlength=n_groups)
    if counts.shape[0] != n_groups or np.any(np.diff(batch.groups) < 0):
        raise ValueError("segment rows must be sorted by group and groups < n_groups")
    offsets = np.zeros(n_groups + 1, dtype="<u8")
    np.cumsum(counts, out=offsets[1:])
    sections = [
        ("groups", offsets),
        ("codes", np.ascontiguousarray(batch.codes, dtype="<u8")),
        ("scales", np.ascontiguousarray(batch.scales, dtype="<f2")),
        ("aux", np.ascontiguousarray(batch.aux, dtype="<f2")),
    ]
    meta = {
        "segment_id": segment_id,
        "dim": config.dim,
        "rows": len(batch),
        "n_groups": n_groups,
        "scale_blocks": config.scale_blocks,
        "metric": config.metric,
    }
    rel = segment_filename(segment_id)
    size, header_crc = write_framed_file(os.path.join(root, rel), fmt.FILE_KIND_SEGMENT, meta, sections)
    if created is not None:
        created.append(rel)
    refine = None
    if config.refine is not None:
        if refine_rows is None or refine_rows.shape[0] != len(batch):
            raise ValueError("a store with a refine tier needs a refine row for every segment row")
        fault("segment.refine")  # segment in place, its refine file not yet written
        refine = write_refine(root, segment_id, config, header_crc, refine_rows)
        if created is not None:
            created.append(refine.file)
    return fmt.SegmentRecord(segment_id, rel, len(batch), 0, size, header_crc, refine)


@dataclass
class Segment:
    """One loaded segment: mapped arrays plus the catalog's ids and tombstones for it."""

    record: fmt.SegmentRecord
    mapped: MappedFile
    group_offsets: np.ndarray  # (n_groups + 1,) int64
    codes: np.ndarray  # (rows, words) uint64, read-only view of the file
    scales16: np.ndarray  # (rows, blocks) float16 view
    scales: np.ndarray  # (rows, blocks) float32 copy for the kernels
    aux16: np.ndarray  # (rows,) float16 view
    rowlam: np.ndarray  # (rows,) float32 coefficient of q . base[g] (codec.row_terms)
    rowterm: np.ndarray  # (rows,) float32 additive term of the ranking value
    groups: np.ndarray  # (rows,) int64 base row of each row
    ids: np.ndarray  # (rows,) int64 or object (str)
    sorted_ids: np.ndarray = field(repr=False, default=None)
    sorted_rows: np.ndarray = field(repr=False, default=None)
    dead: np.ndarray = field(default=None)  # (rows,) uint8, or empty when nothing deleted
    refine: RefineData | None = field(default=None)  # the mapped refine records (refine tier only)
    # payload indexes loaded for this segment, {(field, kind): payload_index.SegmentIndex}:
    # one dict shared by every copy (with_tombstones, restricted) -- a live row's entries
    # never change, and rows that die are hidden by ``dead`` (selection.py)
    payload_indexes: dict = field(default=None, repr=False)

    def __post_init__(self) -> None:
        order = np.argsort(self.ids, kind="stable")
        self.sorted_ids = self.ids[order]
        self.sorted_rows = order.astype(np.int64)
        if self.dead is None:
            self.dead = np.zeros(0, dtype=np.uint8)
        if self.payload_indexes is None:
            self.payload_indexes = {}

    @property
    def rows(self) -> int:
        return self.codes.shape[0]

    def with_tombstones(self, dead_rows: np.ndarray, record: fmt.SegmentRecord) -> Segment:
        """A copy sharing the mapped data, with a new tombstone set."""
        dead = np.zeros(0, dtype=np.uint8)
        if dead_rows.size:
            dead = np.zeros(self.rows, dtype=np.uint8)
            dead[dead_rows] = 1
        clone = Segment.__new__(Segment)
        clone.__dict__.update(self.__dict__)
        clone.record = record
        clone.dead = dead
        return clone

    def restricted(self, ids: np.ndarray) -> Segment:
        """A view in which only the rows of ``ids`` (and not deleted) are searchable."""
        rows = self.lookup(ids)
        return self.only_rows(rows[rows >= 0])

    def only_rows(self, rows: np.ndarray) -> Segment:
        """A view in which only ``rows`` (live rows) are searchable: the others are hidden
        in the dead-row mask the coarse pass skips."""
        hidden = np.ones(self.rows, dtype=np.uint8)
        hidden[rows] = 0
        clone = Segment.__new__(Segment)
        clone.__dict__.update(self.__dict__)
        clone.dead = hidden
        return clone

    def live_rows(self) -> np.ndarray:
        """Rows not deleted, ascending (int64)."""
        return np.arange(self.rows, dtype=np.int64) if self.dead.size == 0 else np.flatnonzero(self.dead == 0)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in this segment, or -1 (deleted rows count as absent)."""
        if self.rows == 0 or len(ids) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.searchsorted(self.sorted_ids, ids)
        pos = np.minimum(pos, self.rows - 1)
        hit = self.sorted_ids[pos] == ids
        rows = np.where(hit, self.sorted_rows[pos], -1)
        if self.dead.size:
            rows = np.where((rows >= 0) & (self.dead[np.maximum(rows, 0)] == 0), rows, -1)
        return rows


def load_segment(root: str, record: fmt.SegmentRecord, config: fmt.StoreConfig, codec: Codec,
                 ids: np.ndarray, dead_rows: np.ndarray, *, verify: bool = True,
                 fd: int | None = None, refine_fd: int | None = None) -> Segment:
    """Map (and with ``verify`` checksum) a segment and its refine file. ``fd`` /
    ``refine_fd``: descriptors of them opened earlier (``files.open_data_file``)."""
    path = os.path.join(root, record.file)
    mapped = open_framed_file(path, fmt.FILE_KIND_SEGMENT, verify=verify, fd=fd)
    meta = mapped.header.meta
    expect = {
        "segment_id": record.id,
        "dim": config.dim,
        "rows": record.rows,
        "n_groups": codec.n_base,
        "scale_blocks": config.scale_blocks,
        "metric": config.metric,
    }
    for key, want in expect.items():
        if meta.get(key) != want:
            raise CorruptStore(f"{path}: header field {key}={meta.get(key)!r}, catalog expects {want!r}")
    if mapped.header.file_size != record.size:
        raise CorruptStore(f"{path}: size {mapped.header.file_size} differs from catalog {record.size}")
    check_digest(path, mapped, record.header_crc)
    n, g = record.rows, codec.n_base
    offsets = mapped.array("groups", "<u8", (g + 1,)).astype(np.int64)
    if offsets[0] != 0 or offsets[-1] != n or np.any(np.diff(offsets) < 0):
        raise CorruptStore(f"{path}: group offsets are inconsistent")
    codes = mapped.array("codes", "<u8", (n, config.words))
    scales16 = mapped.array("scales", "<f2", (n, config.scale_blocks))
    if len(ids) != n:
        raise CorruptStore(f"{path}: catalog lists {len(ids)} ids for {n} rows")
    groups = np.repeat(np.arange(g, dtype=np.int64), np.diff(offsets))
    # rows are sorted by (base row, id) and ids are unique: a damaged or mismatched id
    # column (swapped, repeated, shifted ids) would otherwise attach vectors to wrong ids
    if n > 1 and np.any((groups[1:] == groups[:-1]) & ~(ids[1:] > ids[:-1])):
        raise CorruptStore(f"{path}: the catalog's id column is not in (base row, id) order")
    aux16 = mapped.array("aux", "<f2", (n,))
    rowlam, rowterm = codec.row_terms(groups, scales16, aux16)
    scales = scales16.astype(np.float32)
    if not (np.all(np.isfinite(scales)) and np.all(np.isfinite(rowlam)) and np.all(np.isfinite(rowterm))):
        raise CorruptStore(f"{path}: non-finite scale or aux values")
    if (record.refine is None) != (config.refine is None):
        raise CorruptStore(f"{path}: the catalog {'lists no' if record.refine is None else 'lists a'} refine "
                           f"file for it, the store config has {'a' if config.refine else 'no'} refine tier")
    refine = None if record.refine is None else load_refine(root, record, config, verify=verify, fd=refine_fd)
    seg = Segment(record, mapped, offsets, codes, scales16, scales, aux16, rowlam, rowterm, groups, ids,
                  refine=refine)
    if dead_rows.size:
        seg = seg.with_tombstones(dead_rows, record)
    return seg
