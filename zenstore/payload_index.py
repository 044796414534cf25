"""Payload indexes: one payload field's values -> the rows holding them, per segment.

Why by segment and row, not by external id: a query needs rows, and a segment's rows never
change. Deletes and upserts only tombstone rows (every search skips those already), so a
segment's index is written once, with the segment, and nothing is read back to maintain
it: no old payload is decoded on upsert or delete. A merge writes the merged segment's
index by renumbering its sources' rows (``merge``), again without decoding payloads.
Loaded once per segment and kept with it, an index scan is a slice of an array.
``benchmarks/payload_index_layout.py`` measured this against LMDB posting lists keyed by
id; docs/format.md ("Payload index records") specifies the bytes.

A :class:`SegmentIndex` holds the distinct keys (``payload_keys`` bytes, ascending), for
each key the rows holding it (ascending), and the *unkeyed* rows (numbers the kind cannot
key exactly, ``filters.index_entry``); a scan re-checks those on their payloads.
Pure: no LMDB.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np

from . import format as fmt
from .errors import CorruptStore
from .filters import FLOAT, INT, KEYWORD, And, Filter, Or, Range, Terms, Union, index_keys
from .payload_keys import KEY_SIZE

KIND_CODES = {KEYWORD: 1, INT: 2, FLOAT: 3}
_KINDS_BY_CODE = {v: k for k, v in KIND_CODES.items()}
_HEADER = struct.Struct("<4sBBHQQQQQ")  # tag, kind, encoding, reserved, rows, n_keys, n_refs, n_unkeyed, key_bytes
_TAG = b"ZPIX"
_ENCODING = 1
_EMPTY_U32 = np.zeros(0, dtype=np.uint32)


@dataclass(frozen=True, eq=False)
class SegmentIndex:
    """One field's index over one segment's rows (see the module docstring)."""

    kind: str
    rows: int  # rows of the segment
    key_offsets: np.ndarray  # (n_keys + 1,) int64 offsets of each key in key_data
    key_data: bytes
    starts: np.ndarray  # (n_keys + 1,) int64: refs[starts[i]:starts[i + 1]] hold key i
    refs: np.ndarray  # (n_refs,) uint32 rows, ascending within each key
    unkeyed: np.ndarray  # sorted uint32 rows holding a number the kind cannot key
    numeric: np.ndarray | None = field(default=None, repr=False)  # int/float keys as uint64

    def __post_init__(self) -> None:
        if self.kind != KEYWORD and self.numeric is None:
            nums = np.frombuffer(self.key_data, dtype=">u8").astype(np.uint64)
            object.__setattr__(self, "numeric", nums)

    @property
    def n_keys(self) -> int:
        return len(self.starts) - 1

    @property
    def nbytes(self) -> int:
        """Memory this index takes once loaded."""
        extra = 0 if self.numeric is None or self.kind == KEYWORD else self.numeric.nbytes
        return (self.key_offsets.nbytes + len(self.key_data) + self.starts.nbytes + self.refs.nbytes
                + self.unkeyed.nbytes + extra)

    def key(self, i: int) -> bytes:
        return self.key_data[int(self.key_offsets[i]):int(self.key_offsets[i + 1])]

    def keys(self) -> list[bytes]:
        return [self.key(i) for i in range(self.n_keys)]

    def find(self, key: bytes) -> int:
        """Position of ``key``, or -1 (binary search; keys are ascending bytes)."""
        if self.numeric is not None:
            if len(key) != KEY_SIZE:
                return -1
            v = np.uint64(int.from_bytes(key, "big"))
            i = int(np.searchsorted(self.numeric, v))
            return i if i < len(self.numeric) and self.numeric[i] == v else -1
        lo, hi = 0, self.n_keys
        while lo < hi:
            mid = (lo + hi) // 2
            k = self.key(mid)
            if k < key:
                lo = mid + 1
            elif k > key:
                hi = mid
            else:
                return mid
        return -1

    def rows_of_keys(self, keys) -> np.ndarray:
        """Rows holding any of ``keys`` (may repeat a row that holds several)."""
        parts = []
        for key in keys:
            i = self.find(key)
            if i >= 0:
                parts.append(self.refs[self.starts[i]:self.starts[i + 1]])
        if not parts:
            return _EMPTY_U32
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def rows_in_range(self, lo: bytes, hi: bytes) -> np.ndarray:
        """Rows holding a key in ``[lo, hi]`` (int and float indexes; may repeat rows)."""
        a = int(np.searchsorted(self.numeric, np.uint64(int.from_bytes(lo, "big")), side="left"))
        b = int(np.searchsorted(self.numeric, np.uint64(int.from_bytes(hi, "big")), side="right"))
        if a >= b:
            return _EMPTY_U32
        return self.refs[self.starts[a]:self.starts[b]]

    def entries(self) -> dict[int, set]:
        """``{row: keys}`` for every row holding a key (tests and ``verify``)."""
        out: dict[int, set] = {}
        for i in range(self.n_keys):
            key = self.key(i)
            for r in self.refs[self.starts[i]:self.starts[i + 1]].tolist():
                out.setdefault(r, set()).add(key)
        return out


# --- building ------------------------------------------------------------------------------


def _assemble(kind: str, rows: int, key_list: list[bytes], key_of_ref: np.ndarray, ref_rows: np.ndarray,
              unkeyed: np.ndarray) -> SegmentIndex:
    """An index from (key position, row) pairs; ``key_list`` ascending and distinct, each key
    used by at least one pair, pairs distinct."""
    order = np.lexsort((ref_rows, key_of_ref))
    refs = ref_rows[order].astype(np.uint32)
    starts = np.zeros(len(key_list) + 1, dtype=np.int64)
    np.cumsum(np.bincount(key_of_ref, minlength=len(key_list)), out=starts[1:])
    offsets = np.zeros(len(key_list) + 1, dtype=np.int64)
    np.cumsum([len(k) for k in key_list], out=offsets[1:])
    return SegmentIndex(kind, rows, offsets, b"".join(key_list), starts, refs,
                        np.asarray(unkeyed, dtype=np.uint32))


class Builder:
    """Builds one segment's index from its payloads, a chunk of rows at a time (memory:
    the distinct keys plus 16 bytes per (key, row) entry, never the payloads)."""

    def __init__(self, field_name: str, kind: str, rows: int) -> None:
        self.field = field_name
        self.kind = kind
        self.rows = rows
        self._position: dict = {}  # key -> first-seen number
        self._keys: list = []
        self._rows: list = []
        self._unkeyed: list = []

    def add(self, rows: np.ndarray, docs: list) -> Builder:
        """Add the payloads ``docs`` of ``rows`` (None: no payload, holds nothing)."""
        pairs, unkeyed = index_keys(docs, self.field, self.kind)
        position = self._position
        numbers = []
        for _, key in pairs:
            p = position.get(key)
            if p is None:
                p = position[key] = len(position)
            numbers.append(p)
        rows = np.asarray(rows, dtype=np.int64)
        self._keys.append(np.asarray(numbers, dtype=np.int64))
        self._rows.append(rows[np.fromiter((i for i, _ in pairs), dtype=np.int64, count=len(pairs))])
        self._unkeyed.append(rows[np.asarray(unkeyed, dtype=np.int64)])
        return self

    def finish(self) -> SegmentIndex:
        first_seen = list(self._position)  # keys by their number
        if self.kind == KEYWORD:
            key_list = sorted(first_seen)
            rank = np.empty(len(key_list), dtype=np.int64)
            for r, key in enumerate(key_list):
                rank[self._position[key]] = r
        else:  # 8-byte big-endian keys: sort them as numbers
            nums = np.frombuffer(b"".join(first_seen), dtype=">u8")
            order = np.argsort(nums, kind="stable")
            rank = np.empty(len(order), dtype=np.int64)
            rank[order] = np.arange(len(order))
            key_list = [first_seen[i] for i in order.tolist()]
        keys = np.concatenate(self._keys) if self._keys else np.zeros(0, np.int64)
        rows = np.concatenate(self._rows) if self._rows else np.zeros(0, np.int64)
        unkeyed = np.unique(np.concatenate(self._unkeyed)) if self._unkeyed else np.zeros(0, np.int64)
        return _assemble(self.kind, self.rows, key_list, rank[keys], rows, unkeyed)


def build(docs: list, field_name: str, kind: str) -> SegmentIndex:
    """The index of ``field_name`` over rows whose payloads are ``docs`` (row order; None
    for a row without payload, or a deleted row whose entries must not be kept)."""
    return Builder(field_name, kind, len(docs)).add(np.arange(len(docs)), docs).finish()


def merge(parts: list[tuple[SegmentIndex, np.ndarray]], rows: int) -> SegmentIndex:
    """The index of a merged segment of ``rows`` rows from its sources' indexes:
    ``parts[i] = (index, new_row)``, ``new_row[r]`` the merged row of source row ``r``
    (-1: dropped, a deleted row). No payload is read."""
    kind = parts[0][0].kind
    key_bytes, ref_keys, ref_rows, unkeyed = [], [], [], []
    base = 0
    for idx, new_row in parts:
        counts = np.diff(idx.starts)
        moved = new_row[idx.refs.astype(np.int64)] if len(idx.refs) else np.zeros(0, np.int64)
        keep = moved >= 0
        ref_keys.append(np.repeat(np.arange(idx.n_keys, dtype=np.int64), counts)[keep] + base)
        ref_rows.append(moved[keep])
        key_bytes.extend(idx.keys())
        base += idx.n_keys
        if len(idx.unkeyed):
            u = new_row[idx.unkeyed.astype(np.int64)]
            unkeyed.append(u[u >= 0])
    ref_keys = np.concatenate(ref_keys) if ref_keys else np.zeros(0, np.int64)
    ref_rows = np.concatenate(ref_rows) if ref_rows else np.zeros(0, np.int64)
    # distinct keys of the surviving pairs, ascending; each source key -> its merged position
    used = np.unique(ref_keys)
    new_pos = np.full(len(key_bytes), -1, dtype=np.int64)
    if kind == KEYWORD:
        distinct = sorted({key_bytes[i] for i in used.tolist()})
        position = {k: i for i, k in enumerate(distinct)}
        for i in used.tolist():
            new_pos[i] = position[key_bytes[i]]
    else:  # numeric keys: unique as numbers
        nums = np.frombuffer(b"".join(key_bytes[i] for i in used.tolist()), dtype=">u8").astype(np.uint64)
        values, inverse = np.unique(nums, return_inverse=True)
        new_pos[used] = inverse.ravel()
        distinct = [bytes(b) for b in values.astype(">u8").view(np.dtype((np.void, KEY_SIZE))).tolist()] \
            if len(values) else []
    unk = np.unique(np.concatenate(unkeyed)) if unkeyed else np.zeros(0, np.int64)
    return _assemble(kind, rows, distinct, new_pos[ref_keys], ref_rows, unk)


def new_rows_of(n_sources: int, source_rows: list[int], src_seg: np.ndarray, src_row: np.ndarray) -> list[np.ndarray]:
    """For a merge plan (``merge.merge_plan``: merged row i comes from row ``src_row[i]`` of
    source ``src_seg[i]``): per source, the merged row of each of its rows (-1: dropped)."""
    out = [np.full(n, -1, dtype=np.int64) for n in source_rows]
    positions = np.arange(len(src_seg), dtype=np.int64)
    for s in range(n_sources):
        sel = src_seg == s
        out[s][src_row[sel]] = positions[sel]
    return out


# --- the record ----------------------------------------------------------------------------------


def _shuffled(values: np.ndarray, dtype: str) -> bytes:
    """Delta (wrapping) + byte-shuffle, as the catalog's integer columns (docs/format.md)."""
    arr = np.ascontiguousarray(values, dtype=dtype)
    if arr.size == 0:
        return b""
    delta = np.diff(arr, prepend=arr.dtype.type(0))
    return np.ascontiguousarray(delta).view(np.uint8).reshape(-1, arr.itemsize).T.tobytes()


def _unshuffled(body: memoryview, n: int, dtype: str) -> np.ndarray:
    dt = np.dtype(dtype)
    if n == 0:
        return np.zeros(0, dtype=dt.newbyteorder("="))
    delta = np.frombuffer(bytes(body), dtype=np.uint8).reshape(dt.itemsize, n).T.copy().view(dt)
    return np.cumsum(delta.ravel(), dtype=dt).astype(dt.newbyteorder("="))


def encode(idx: SegmentIndex) -> bytes:
    """The catalog value of a segment's index (docs/format.md, "Payload index records")."""
    parts = [_HEADER.pack(_TAG, KIND_CODES[idx.kind], _ENCODING, 0, idx.rows, idx.n_keys, len(idx.refs),
                          len(idx.unkeyed), len(idx.key_data))]
    if idx.kind == KEYWORD:
        parts.append(_shuffled(idx.key_offsets, "<u8"))
    parts += [idx.key_data, _shuffled(idx.starts, "<u8"), _shuffled(idx.refs, "<u4"),
              _shuffled(idx.unkeyed, "<u4")]
    return fmt.compress(b"".join(parts))


def _bad(what: str, why: str) -> CorruptStore:
    return CorruptStore(f"{what}: payload index record is corrupt ({why})")


def decode(blob: bytes, kind: str, rows: int, what: str) -> SegmentIndex:
    """A stored index, validated against its field's kind and its segment's row count."""
    raw = memoryview(fmt.decompress(blob, what))
    if len(raw) < _HEADER.size:
        raise _bad(what, "too short")
    tag, code, enc, _, n_rows, n_keys, n_refs, n_unk, key_bytes = _HEADER.unpack_from(raw, 0)
    if tag != _TAG or enc != _ENCODING:
        raise _bad(what, "not a payload index record")
    if _KINDS_BY_CODE.get(code) != kind:
        raise _bad(what, f"holds a {_KINDS_BY_CODE.get(code, code)!r} index, the manifest says {kind!r}")
    if n_rows != rows:
        raise _bad(what, f"indexes {n_rows} rows, the segment has {rows}")
    sizes = ([8 * (n_keys + 1)] if kind == KEYWORD else []) + [key_bytes, 8 * (n_keys + 1), 4 * n_refs, 4 * n_unk]
    if len(raw) != _HEADER.size + sum(sizes):
        raise _bad(what, "sizes disagree with its length")
    pos = _HEADER.size
    if kind == KEYWORD:
        offsets = _unshuffled(raw[pos:pos + sizes[0]], n_keys + 1, "<u8").astype(np.int64)
        pos += sizes[0]
    else:
        if key_bytes != KEY_SIZE * n_keys:
            raise _bad(what, "numeric keys are not 8 bytes each")
        offsets = np.arange(n_keys + 1, dtype=np.int64) * KEY_SIZE
    key_data = bytes(raw[pos:pos + key_bytes])
    pos += key_bytes
    starts = _unshuffled(raw[pos:pos + 8 * (n_keys + 1)], n_keys + 1, "<u8").astype(np.int64)
    pos += 8 * (n_keys + 1)
    refs = _unshuffled(raw[pos:pos + 4 * n_refs], n_refs, "<u4")
    pos += 4 * n_refs
    unkeyed = _unshuffled(raw[pos:pos + 4 * n_unk], n_unk, "<u4")
    if offsets[0] != 0 or offsets[-1] != key_bytes or np.any(np.diff(offsets) <= 0):
        raise _bad(what, "key offsets are not increasing")
    if starts[0] != 0 or starts[-1] != n_refs or np.any(np.diff(starts) <= 0):
        raise _bad(what, "every key must hold rows, in order")
    if n_refs and int(refs.max()) >= rows or n_unk and int(unkeyed.max()) >= rows:
        raise _bad(what, "a row beyond the segment")
    if n_unk > 1 and np.any(np.diff(unkeyed.astype(np.int64)) <= 0):
        raise _bad(what, "unkeyed rows are not distinct and sorted")
    if n_refs > 1:
        step = np.diff(refs.astype(np.int64))
        step[starts[1:-1] - 1] = 1  # across a key boundary rows start again
        if np.any(step <= 0):
            raise _bad(what, "a key's rows are not distinct and sorted")
    idx = SegmentIndex(kind, rows, offsets, key_data, starts, refs, unkeyed)
    if kind == KEYWORD:
        keys = idx.keys()
        if any(a >= b for a, b in zip(keys, keys[1:])):
            raise _bad(what, "keys are not distinct and ascending")
        if not all(_keyword_key_ok(k) for k in keys):
            raise _bad(what, "a key is not a keyword key")
    elif n_keys > 1 and not np.all(idx.numeric[1:] > idx.numeric[:-1]):
        raise _bad(what, "keys are not distinct and ascending")
    elif kind == FLOAT and n_keys and not _float_keys_ok(idx.numeric):
        raise _bad(what, "a key is not a float key (NaN, or -0.0)")
    return idx


def _float_keys_ok(nums: np.ndarray) -> bool:
    """No NaN and no -0.0 (keyed as 0.0): the keys ``payload_keys.float_key`` makes."""
    sign = np.uint64(1 << 63)
    bits = np.where(nums & sign, nums ^ sign, ~nums)  # undo the key transform
    values = bits.view(np.float64)
    return not (np.isnan(values).any() or np.any((values == 0) & np.signbit(values)))


def _keyword_key_ok(key: bytes) -> bool:
    tag = key[:1]
    if tag == b"s":
        return len(key) <= 257
    if tag == b"h":
        return len(key) == 33
    return key in (b"b\x00", b"b\x01")


# --- scans -----------------------------------------------------------------------------------------


def scan_fields(scan) -> set[tuple[str, str]]:
    """(field, kind) of every index a scan reads."""
    if isinstance(scan, (Terms, Range)):
        return {(scan.field, scan.kind)}
    out = set()
    for part in scan.parts:
        out |= scan_fields(part)
    return out


def scan_filter(scan) -> Filter:
    """A filter selecting exactly the rows ``scan`` stands for (re-checks unkeyed rows)."""
    def node(s):
        if isinstance(s, (Terms, Range)):
            return s.as_filter().root
        kids = tuple(node(p) for p in s.parts)
        return Or(kids) if isinstance(s, Union) else And(kids)
    return Filter(node(scan))


def scan_mask(scan, index_of, rows: int) -> np.ndarray:
    """Rows a scan selects by keys alone (bool, ``rows``); ``index_of(field, kind)`` gives
    the segment's index. Unkeyed rows of the fields involved must be re-checked."""
    if isinstance(scan, Terms):
        out = np.zeros(rows, dtype=bool)
        out[index_of(scan.field, scan.kind).rows_of_keys(scan.keys())] = True
        return out
    if isinstance(scan, Range):
        out = np.zeros(rows, dtype=bool)
        bounds = scan.key_bounds()
        if bounds is not None:
            out[index_of(scan.field, scan.kind).rows_in_range(*bounds)] = True
        return out
    masks = [scan_mask(p, index_of, rows) for p in scan.parts]
    out = masks[0]
    for m in masks[1:]:
        if isinstance(scan, Union):
            out |= m
        else:
            out &= m
    return out


def unkeyed_rows(scan, index_of) -> np.ndarray:
    """Rows unkeyed in any index the scan reads (sorted, distinct)."""
    parts = [index_of(f, k).unkeyed for f, k in sorted(scan_fields(scan))]
    parts = [p for p in parts if len(p)]
    if not parts:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(parts)).astype(np.int64)


__all__ = ["SegmentIndex", "Builder", "build", "merge", "new_rows_of", "encode", "decode", "scan_fields", "scan_filter",
           "scan_mask", "unkeyed_rows", "KIND_CODES"]
