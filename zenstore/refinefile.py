"""Refine files: a segment's refine-tier records, one fixed-size record per row, in the
segment's row order, written once beside it and mapped to read only shortlisted rows.

A refine file is a framed file (``files.py``: checksummed sections, atomic creation) of
kind ``FILE_KIND_REFINE`` with one section, ``rows``: ``rows x row_bytes`` bytes, row i
the ``refine.to_rows`` record of row i of segment N (``segments/seg-N.zref`` beside
``seg-N.zseg``). Its header names the segment and that segment's header crc32, so a
refine file can never be paired with another segment's rows, and the manifest records
the refine file's own size and header crc32 (``format.RefineRecord``). Search reads a few
records per query: the mapping is advised ``MADV_RANDOM`` so the kernel does not read
ahead (one int8 record at 7680-d is 7,684 bytes: two or three 4-KiB pages).
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass

import numpy as np

from . import format as fmt
from .errors import CorruptStore
from .files import MappedFile, check_digest, open_framed_file, write_framed_file


def refine_filename(segment_id: int) -> str:
    return fmt.REFINE_FILE.format(segment_id)  # the manifest checks names against this


def refine_meta(config: fmt.StoreConfig, segment_id: int, rows: int, segment_crc: int) -> dict:
    tier = config.refine_tier
    return {
        "segment_id": segment_id,
        "segment_crc": segment_crc,
        "dim": config.dim,
        "rows": rows,
        "metric": config.metric,
        "refine": tier.to_dict(),
        "row_bytes": tier.row_bytes(config.coded_dim, config.metric),
    }


def write_refine(root: str, segment_id: int, config: fmt.StoreConfig, segment_crc: int,
                 rows, n: int | None = None) -> fmt.RefineRecord:
    """Write the refine file of segment ``segment_id``; return its manifest record.

    ``rows``: an (n, row_bytes) uint8 array in segment row order, or an iterable of such
    chunks totalling ``n`` rows (merges stream them).
    """
    row_bytes = config.refine_bytes_per_vector
    if isinstance(rows, np.ndarray):
        if rows.ndim != 2 or rows.shape[1] != row_bytes:
            raise ValueError(f"refine rows must be (n, {row_bytes}), got {rows.shape}")
        n, payload = rows.shape[0], np.ascontiguousarray(rows, dtype=np.uint8)
    else:
        payload = (n * row_bytes, rows)
    rel = refine_filename(segment_id)
    meta = refine_meta(config, segment_id, n, segment_crc)
    size, header_crc = write_framed_file(os.path.join(root, rel), fmt.FILE_KIND_REFINE, meta,
                                         [("rows", payload)], version=fmt.REFINE_FORMAT_VERSION)
    return fmt.RefineRecord(rel, size, header_crc)


@dataclass(frozen=True)
class RefineData:
    """A segment's mapped refine records."""

    mapped: MappedFile
    rows: np.ndarray  # (rows, row_bytes) uint8, read-only view of the file


def load_refine(root: str, record: fmt.SegmentRecord, config: fmt.StoreConfig, *,
                verify: bool = True, fd: int | None = None) -> RefineData:
    """Map (and with ``verify`` checksum) the refine file of the segment ``record``;
    ``fd``: a descriptor of it opened earlier (it stays the caller's)."""
    rec = record.refine
    path = os.path.join(root, rec.file)
    mapped = open_framed_file(path, fmt.FILE_KIND_REFINE, verify=verify, fd=fd)
    meta = mapped.header.meta
    if mapped.header.version != fmt.REFINE_FORMAT_VERSION:
        raise CorruptStore(f"{path}: a refine file of format version {mapped.header.version} "
                           f"(refine files are version {fmt.REFINE_FORMAT_VERSION})")
    for key, want in refine_meta(config, record.id, record.rows, record.header_crc).items():
        if meta.get(key) != want:
            raise CorruptStore(f"{path}: header field {key}={meta.get(key)!r}, catalog expects {want!r}")
    if mapped.header.file_size != rec.size:
        raise CorruptStore(f"{path}: size {mapped.header.file_size} differs from catalog {rec.size}")
    check_digest(path, mapped, rec.header_crc)
    rows = mapped.array("rows", np.uint8, (record.rows, config.refine_bytes_per_vector))
    if hasattr(mapped.buf, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapped.buf.madvise(mmap.MADV_RANDOM)  # a query reads a few records: no read-ahead
    return RefineData(mapped, rows)
