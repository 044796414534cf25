"""Where a store's bytes go: the counts and byte split that ``stats()`` reports."""

from __future__ import annotations

import os

from . import format as fmt
from . import records
from .view import StoreView


def store_stats(view: StoreView) -> dict:
    """Counts and bytes. ``bytes_per_vector`` is the hot vector data only (codes + scales +
    aux term); a refine tier's bytes are apart (``refine_bytes_per_vector``, per row of its
    files, and ``refine_file_bytes``, their size); ``bytes_on_disk`` splits every byte of
    the directory by part."""
    snap = view.current()
    cfg = view.config
    catalog = view.catalog
    rows = snap.stored_rows
    seg_bytes = sum(s.record.size for s in snap.segments)
    refine_bytes = sum(s.record.refine.size for s in snap.segments if s.record.refine is not None)
    codes = rows * cfg.words * 8
    scales = rows * cfg.scale_blocks * 2
    aux = rows * 2
    base = snap.manifest.base.size if snap.manifest.base else 0
    catalog_file = os.path.getsize(catalog.path)
    parts = {
        "codes": codes,
        "scales": scales,
        "aux": aux,
        "segment_headers": seg_bytes - codes - scales - aux,
        "refine_files": refine_bytes,
        "base": base,
        "ids": catalog.db_bytes(records.IDS),
        "payloads": catalog.db_bytes(records.PAYLOADS),
        "tombstones": catalog.db_bytes(records.TOMBSTONES),
        "payload_indexes": catalog.db_bytes(records.PINDEX),
        "catalog_file": catalog_file,
    }
    total = seg_bytes + refine_bytes + base + catalog_file
    return {
        "count": snap.count,
        "dim": cfg.dim,
        "metric": cfg.metric,
        "id_type": snap.id_type,
        "n_base": snap.codec.n_base if snap.codec else 0,
        "segments": len(snap.segments),
        "stored_rows": rows,
        "deleted_rows": rows - snap.count,
        "bytes_per_vector": cfg.bytes_per_vector,
        "compression_ratio": cfg.dim * 4 / cfg.bytes_per_vector,
        "refine": cfg.refine_tier.name if cfg.refine_tier else None,
        "refine_bytes_per_vector": cfg.refine_bytes_per_vector,
        "refine_file_bytes": refine_bytes,
        "bytes_on_disk": {**parts, "total": total},
        "bytes_per_vector_all_in": total / snap.count if snap.count else None,
        "format_version": fmt.store_format_version(cfg, snap.manifest),
        "payload_indexes": payload_index_sizes(view, snap),
        "generation": snap.generation,
        "catalog_map_bytes": catalog.map_size(),  # address space the catalog's map takes here
        "config": cfg.to_dict(),
    }


def payload_index_sizes(view: StoreView, snap) -> dict:
    """``{field: {"kind", "record_bytes", "keys"}}`` of every payload index: the compressed
    bytes of its records in the catalog, and the distinct keys of its loaded segments."""
    specs = snap.manifest.payload_indexes
    if not specs:
        return {}
    out = {p.field: {"kind": p.kind, "record_bytes": 0} for p in specs}
    view.catalog.open_optional(records.PINDEX)
    with view.catalog.read() as txn:
        for _seg, name, size in records.iter_payload_index_records(txn):
            if name in out:
                out[name]["record_bytes"] += size
    return out
