"""The catalog schema: which record lives in which LMDB sub-database, and its encoding.

This module is the only one that names sub-databases and keys (``catalog.py`` is a
generic LMDB wrapper; ``format.py`` encodes values). Every function takes an open
catalog transaction (``catalog.Txn``); readers validate what they decode and raise
:class:`CorruptStore` naming the record. The bytes are specified in ``docs/format.md``.

==============  ==========================  =========================================
sub-database    key                         value
==============  ==========================  =========================================
``meta``        ``format``                  JSON: magic, format version, writer
``meta``        ``config``                  JSON: :class:`format.StoreConfig`
``meta``        ``manifest``                JSON: :class:`format.Manifest`
``meta``        ``generation``              uint64 LE, the manifest's generation
``meta``        ``calibration``             JSON: :class:`calibration.Calibration` (optional)
``ids``         segment key (uint64 BE)     id column of the segment (row order)
``tombstones``  segment key                 sorted uint32 deleted rows
``payloads``    id key                      zstd JSON object
``jobs``        checkpoint name (UTF-8)     JSON progress record
``pindex``      segment key + field UTF-8   payload index record (``payload_index``);
                                            optional: only stores that had indexes
==============  ==========================  =========================================
"""

from __future__ import annotations

import json
import logging
import struct

import numpy as np

from . import format as fmt
from .catalog import Catalog
from .errors import CorruptStore, FormatVersionError, InvalidArgument, NotAStore

log = logging.getLogger("zenstore")

META, IDS, TOMBSTONES, PAYLOADS, JOBS = "meta", "ids", "tombstones", "payloads", "jobs"
SUB_DATABASES = (META, IDS, TOMBSTONES, PAYLOADS, JOBS)
PINDEX = "pindex"  # optional: created with the first payload index
OPTIONAL_SUB_DATABASES = (PINDEX,)


def open_catalog(root: str, *, readonly: bool, create: bool = False) -> Catalog:
    """The catalog of the store at ``root``, with the schema's sub-databases (the
    optional ones opened if they exist)."""
    return Catalog(root, SUB_DATABASES, optional=OPTIONAL_SUB_DATABASES, readonly=readonly, create=create)


_FORMAT_KEY = b"format"
_CONFIG_KEY = b"config"
_MANIFEST_KEY = b"manifest"
_GENERATION_KEY = b"generation"
_CALIBRATION_KEY = b"calibration"
MAX_CHECKPOINT_NAME_BYTES = 400


# --- format and config records -------------------------------------------------------------


def put_format_and_config(txn, config: fmt.StoreConfig, created_by: str) -> None:
    txn.put(META, _FORMAT_KEY, fmt.dumps_json({
        "magic": fmt.STORE_MAGIC,
        # a new store has no payload index: 1 unless dim is not a multiple of 64
        "format_version": config.format_version,
        "created_by": created_by,
    }))
    txn.put(META, _CONFIG_KEY, fmt.dumps_json(config.to_dict()))


def _format_record(txn, path: str) -> dict:
    raw_format = txn.get(META, _FORMAT_KEY)
    if raw_format is None:
        raise NotAStore(f"{path}: catalog has no zenstore format record")
    info = fmt.loads_json(raw_format, "format record")
    if not isinstance(info, dict) or info.get("magic") != fmt.STORE_MAGIC:
        raise NotAStore(f"{path}: not a zenstore store (format record has no zenstore magic)")
    version = info.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CorruptStore(f"{path}: invalid format version {version!r}")
    if version > fmt.FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: store has format version {version}; this zenstore reads up to "
            f"version {fmt.FORMAT_VERSION}"
        )
    return info


def read_format_version(txn, path: str) -> int:
    """The store's format version (checked as ``read_config`` checks it)."""
    return _format_record(txn, path)["format_version"]


def put_format_version(txn, version: int, path: str) -> None:
    """Rewrite the format record with ``version``, keeping its other fields: a store gets
    version 3 with its first payload index and its config's version (1 or 2) back with
    its last one dropped (``format.store_format_version``), so older zenstore refuses
    exactly the stores whose indexes it would leave stale."""
    info = _format_record(txn, path)
    if info["format_version"] != version:
        txn.put(META, _FORMAT_KEY, fmt.dumps_json({**info, "format_version": version}))


def read_config(txn, path: str) -> fmt.StoreConfig:
    """The store's config, after checking the format record (magic, version)."""
    version = _format_record(txn, path)["format_version"]
    raw_config = txn.get(META, _CONFIG_KEY)
    if raw_config is None:
        raise CorruptStore(f"{path}: catalog has no store config")
    config = fmt.StoreConfig.from_dict(fmt.loads_json(raw_config, "store config"))
    if version < config.format_version:
        raise CorruptStore(f"{path}: store says format version {version}, but its dim "
                           f"{config.dim} needs version {config.format_version}")
    return config


# --- the manifest and its generation ---------------------------------------------------------


def read_generation(txn) -> int:
    """The committed manifest's generation (-1 if the record is missing or malformed)."""
    raw = txn.get(META, _GENERATION_KEY)
    return struct.unpack("<Q", raw)[0] if raw and len(raw) == 8 else -1


def read_manifest(txn, path: str) -> fmt.Manifest:
    raw = txn.get(META, _MANIFEST_KEY)
    if raw is None:
        raise CorruptStore(f"{path}: catalog has no manifest")
    return fmt.Manifest.from_dict(fmt.loads_json(raw, "manifest"))


def put_manifest(txn, manifest: fmt.Manifest) -> None:
    txn.put(META, _MANIFEST_KEY, fmt.dumps_json(manifest.to_dict()))
    txn.put(META, _GENERATION_KEY, struct.pack("<Q", manifest.generation))


# --- per-segment columns: ids and tombstones ---------------------------------------------------


def count_id_columns(txn) -> int:
    return txn.count(IDS)


def id_column_keys(txn) -> set[bytes]:
    return set(txn.keys(IDS))


def tombstone_keys(txn) -> set[bytes]:
    return set(txn.keys(TOMBSTONES))


def segment_key(segment_id: int) -> bytes:
    return fmt.segment_key(segment_id)


def put_id_column(txn, segment_id: int, ids: np.ndarray) -> None:
    txn.put(IDS, fmt.segment_key(segment_id), fmt.encode_column(ids))


def read_id_column(txn, rec: fmt.SegmentRecord, id_type: str | None, path: str) -> np.ndarray:
    """A segment's id column, checked against the manifest's id kind."""
    raw = txn.get(IDS, fmt.segment_key(rec.id))
    if raw is None:
        raise CorruptStore(f"{path}: catalog has no id column for segment {rec.id}")
    ids = fmt.decode_column(raw, f"id column of segment {rec.id}")
    kind = "str" if ids.dtype == object else "int"
    if kind != id_type or (kind == "int" and ids.dtype != np.int64):
        raise CorruptStore(f"{path}: id column of segment {rec.id} holds {kind} ids, the store has {id_type} ids")
    return ids


def put_tombstones(txn, segment_id: int, dead_rows: np.ndarray) -> None:
    txn.put(TOMBSTONES, fmt.segment_key(segment_id), fmt.encode_column(dead_rows.astype(np.uint32)))


def read_tombstones(txn, rec: fmt.SegmentRecord, path: str) -> np.ndarray:
    """A segment's deleted rows: exactly ``rec.deleted`` distinct rows, sorted, in range
    (a repeated row would make the live count wrong, one out of range would crash)."""
    raw = txn.get(TOMBSTONES, fmt.segment_key(rec.id))
    dead = np.zeros(0, dtype=np.int64)
    if raw is not None:
        col = fmt.decode_column(raw, f"tombstones of segment {rec.id}")
        if col.dtype != np.uint32:
            raise CorruptStore(f"{path}: tombstones of segment {rec.id} are not a row column")
        dead = col.astype(np.int64)
    if len(dead) != rec.deleted or (len(dead) and (dead[0] < 0 or dead[-1] >= rec.rows
                                                   or np.any(np.diff(dead) <= 0))):
        raise CorruptStore(
            f"{path}: segment {rec.id} tombstones ({len(dead)}) disagree with the "
            f"manifest ({rec.deleted} deleted of {rec.rows}), or are not distinct sorted rows"
        )
    return dead


def delete_segment_columns(txn, segment_id: int) -> None:
    """Drop a segment's id column and tombstones (it was merged away or emptied)."""
    key = fmt.segment_key(segment_id)
    txn.delete(IDS, key)
    txn.delete(TOMBSTONES, key)


# --- payloads --------------------------------------------------------------------------------


def put_payload(txn, ext_id, blob: bytes) -> None:
    txn.put(PAYLOADS, fmt.id_key(ext_id), blob)


def delete_payload(txn, ext_id) -> None:
    txn.delete(PAYLOADS, fmt.id_key(ext_id))


def read_payloads(txn, ids) -> list[dict | None]:
    """Payloads of ``ids`` (None where an id has none), decoded and validated."""
    out = []
    for ext_id in ids:
        raw = txn.get(PAYLOADS, fmt.id_key(ext_id))
        out.append(None if raw is None else fmt.decode_payload(raw, f"payload of {ext_id!r}"))
    return out


def iter_payload_records(txn):
    """``(key, raw, looked_up)`` of every stored payload; ``looked_up`` is the value a
    key lookup returns (LMDB pages carry no checksum: a damaged branch page can leave a
    record visible to iteration but not to lookup)."""
    for key, raw in txn.items(PAYLOADS):
        yield key, raw, txn.get(PAYLOADS, key)


def payload_key(ext_id) -> bytes:
    return fmt.id_key(ext_id)


# --- payload indexes ------------------------------------------------------------------------------


def payload_index_key(segment_id: int, field: str) -> bytes:
    return fmt.segment_key(segment_id) + field.encode("utf-8")


def has_payload_index_db(txn) -> bool:
    return txn.has(PINDEX)


def ensure_payload_index_db(txn) -> None:
    txn.ensure_db(PINDEX)


def put_payload_index(txn, segment_id: int, field: str, record: bytes) -> None:
    txn.put(PINDEX, payload_index_key(segment_id, field), record)


def read_payload_index(txn, segment_id: int, field: str) -> bytes | None:
    if not txn.has(PINDEX):
        return None
    return txn.get(PINDEX, payload_index_key(segment_id, field))


def delete_payload_indexes(txn, segment_id: int, fields) -> None:
    """Drop a segment's index records of ``fields`` (it was merged away or emptied)."""
    for name in fields:
        txn.delete(PINDEX, payload_index_key(segment_id, name))


def iter_payload_index_records(txn):
    """``(segment id, field or None if not UTF-8, value length)`` of every index record."""
    if not txn.has(PINDEX):
        return
    for key, raw in txn.items(PINDEX):
        seg = int.from_bytes(key[:8], "big") if len(key) > 8 else -1
        try:
            name = key[8:].decode("utf-8")
        except UnicodeDecodeError:
            name = None
        yield seg, name, len(raw)


# --- checkpoints (resumable jobs) -----------------------------------------------------------------


def checkpoint_key(name) -> bytes:
    if not isinstance(name, str) or not 0 < len(name.encode("utf-8")) <= MAX_CHECKPOINT_NAME_BYTES:
        raise InvalidArgument(f"checkpoint name must be a str of 1..{MAX_CHECKPOINT_NAME_BYTES} UTF-8 bytes")
    return name.encode("utf-8")


def encode_checkpoint(checkpoint) -> tuple[bytes, bytes] | None:
    """``(name, JSON record)`` -> ``(key, value)``, validated before anything is written."""
    if checkpoint is None:
        return None
    try:
        name, record = checkpoint
        value = json.dumps(record, allow_nan=False, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"checkpoint must be (name, JSON-serializable record): {exc}") from exc
    return checkpoint_key(name), value


def put_checkpoint(txn, encoded: tuple[bytes, bytes]) -> None:
    txn.put(JOBS, *encoded)


def read_checkpoint(txn, name: str) -> dict | None:
    raw = txn.get(JOBS, checkpoint_key(name))
    return None if raw is None else fmt.loads_json(raw, f"checkpoint {name!r}")


# --- the default search setting (calibration.py) --------------------------------------------------


def put_calibration(txn, cal) -> None:
    txn.put(META, _CALIBRATION_KEY, fmt.dumps_json(cal.to_dict()))


def read_calibration(txn):
    """The store's calibration, or None (none recorded, or a version this reader does not
    know, or a damaged record: the search default is then a full scan)."""
    from .calibration import Calibration

    raw = txn.get(META, _CALIBRATION_KEY)
    if raw is None:
        return None
    try:
        return Calibration.from_dict(json.loads(bytes(raw)))
    except ValueError:
        log.warning("ignoring a malformed calibration record")
        return None
