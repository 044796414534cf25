"""Checking a store without trusting it: every file's framing and checksums, and the
catalog's consistency (id columns, tombstones, counts, payloads).

``verify_store`` reports problems, one line each, and never raises for corruption; it
works on a store that cannot be opened. It reads one committed state: it opens every
file that state lists before checking any (an open file stays readable when a merging
writer unlinks it), and when a file vanished even before that, it starts again on the
newer state instead of reporting a healthy store as damaged.
"""

from __future__ import annotations

import os

import numpy as np

from . import format as fmt
from . import payload_index, records
from .basefile import load_base

from .codec import Codec
from .errors import CorruptStore, FileMissing, FormatVersionError, NotAStore, ReadOnlyStore, StoreIOError
from .files import open_data_file
from .segment import load_segment
from .view import RETRIES


def verify_store(path) -> list[str]:
    """The problems found in the store at ``path``; an empty list means healthy."""
    path = os.fspath(path)
    try:
        catalog = records.open_catalog(path, readonly=True)
    except (NotAStore, CorruptStore, ReadOnlyStore) as exc:
        return [str(exc)]
    try:
        with catalog.read() as txn:
            config = records.read_config(txn, path)
        catalog.open_optional(records.PINDEX)  # this process may have opened the catalog before it existed
        for _ in range(RETRIES):
            with catalog.read() as txn:
                gen = records.read_generation(txn)
                problems, vanished = _check_state(txn, path, config)
            if not vanished:
                return problems
            with catalog.read() as txn:
                if records.read_generation(txn) == gen:  # missing for good, not merged away
                    return problems + vanished
        return problems + vanished
    except (CorruptStore, FormatVersionError, NotAStore) as exc:
        return [str(exc)]
    finally:
        catalog.close()


def _check_state(txn, path: str, config: fmt.StoreConfig) -> tuple[list[str], list[str]]:
    """(problems, missing files) of the committed state ``txn`` reads; the caller retries
    on a newer state when files are missing because the writer moved on."""
    problems: list[str] = []
    vanished: list[str] = []
    manifest = records.read_manifest(txn, path)
    codec = None
    if manifest.base is not None:
        base, rotation = load_base(path, manifest.base, config)
        codec = Codec(config, base, rotation)
    elif manifest.segments:
        problems.append("manifest lists segments but no base matrix")
    seen: dict = {}
    columns = []  # (record, ids, dead rows) of every segment that loaded
    fds = _open_all(path, manifest.segments, problems, vanished) if codec is not None else {}
    try:
        for rec in manifest.segments:
            if codec is not None and rec.id not in fds:
                continue  # missing or unopenable, already reported
            try:
                ids = records.read_id_column(txn, rec, manifest.id_type, path)
                dead = records.read_tombstones(txn, rec, path)
                if codec is not None:
                    load_segment(path, rec, config, codec, ids, dead, verify=True, fd=fds[rec.id][0],
                                 refine_fd=fds[rec.id][1])
            except (CorruptStore, FormatVersionError, StoreIOError) as exc:  # e.g. a file it may not read
                problems.append(str(exc))
                continue
            columns.append((rec, ids, dead))
            alive = np.ones(len(ids), bool)
            alive[dead] = False
            for v in ids[alive].tolist():
                if v in seen:
                    problems.append(f"id {v!r} is live in segments {seen[v]} and {rec.id}")
                seen[v] = rec.id
    finally:
        for pair in fds.values():
            for fd in pair:
                if fd is not None:
                    os.close(fd)
    want = {records.segment_key(r.id) for r in manifest.segments}
    id_keys = records.id_column_keys(txn)
    if id_keys != want:
        problems.append(f"id columns exist for {len(id_keys)} segments, manifest lists {len(want)}")
    if not records.tombstone_keys(txn) <= want:
        problems.append("tombstones recorded for segments not in the manifest")
    live_keys = {records.payload_key(v) for v in seen}
    stray = unreachable = 0
    for key, raw, looked_up in records.iter_payload_records(txn):
        if looked_up != raw:
            unreachable += 1
        if key not in live_keys:
            stray += 1
            continue
        try:
            fmt.decode_payload(raw, f"payload under key {key!r}")
        except CorruptStore as exc:
            problems.append(str(exc))
    if unreachable:
        problems.append(f"catalog file is damaged: {unreachable} payload(s) cannot be looked up")
    if stray and not problems and not vanished:
        problems.append(f"{stray} payload(s) belong to no live id")
    if not problems and not vanished and manifest.count != len(seen):
        problems.append(f"manifest counts {manifest.count} live rows, segments hold {len(seen)}")
    problems += _check_payload_indexes(txn, path, config, manifest, columns)
    return problems, vanished


def _open_all(path: str, segments, problems: list[str], vanished: list[str]) -> dict[int, tuple]:
    """(segment, refine file or None) descriptors per listed segment, opened back to back:
    checking one file takes long enough for a merge to remove the next, an open
    descriptor outlives the unlink."""
    fds: dict[int, tuple] = {}
    for rec in segments:
        opened = []
        try:
            for rel in rec.files:  # the segment, then its refine file
                opened.append(open_data_file(os.path.join(path, rel)))
        except FileMissing as exc:
            vanished.append(str(exc))
        except (CorruptStore, StoreIOError) as exc:
            problems.append(str(exc))
        else:
            fds[rec.id] = (opened[0], opened[1] if len(opened) > 1 else None)
            continue
        for fd in opened:
            os.close(fd)
    return fds


def _check_payload_indexes(txn, path: str, config: fmt.StoreConfig, manifest: fmt.Manifest, columns: list) -> list[str]:
    """The format version says whether there are indexes; every indexed field has one
    record per segment and no other record exists; each record decodes and holds, for
    every live row, exactly the keys (and unkeyed flag) its payload gives."""
    problems = []
    version = records.read_format_version(txn, path)
    want = fmt.store_format_version(config, manifest)
    if version != want:
        problems.append(f"format version {version}, but the manifest lists {len(manifest.payload_indexes)} "
                        f"payload index(es) (expected version {want})")
    specs = manifest.payload_indexes
    if specs and not records.has_payload_index_db(txn):
        return problems + ["the manifest lists payload indexes, the catalog has no index table"]
    expected = {(rec.id, spec.field) for rec in manifest.segments for spec in specs}
    stray = [(seg, name) for seg, name, _ in records.iter_payload_index_records(txn) if (seg, name) not in expected]
    if stray:
        problems.append(f"{len(stray)} payload index record(s) belong to no indexed field of a listed segment, "
                        f"e.g. segment {stray[0][0]} field {stray[0][1]!r}")
    for rec, ids, dead in columns:
        if not specs:
            break
        live = np.setdiff1d(np.arange(rec.rows), dead)
        try:
            docs = records.read_payloads(txn, ids[live].tolist())
        except CorruptStore:
            continue  # reported with the payloads
        for spec in specs:
            what = f"payload index of {spec.field!r} in segment {rec.id}"
            blob = records.read_payload_index(txn, rec.id, spec.field)
            if blob is None:
                problems.append(f"{what}: missing")
                continue
            try:
                got = payload_index.decode(blob, spec.kind, rec.rows, what)
            except CorruptStore as exc:
                problems.append(str(exc))
                continue
            truth = payload_index.Builder(spec.field, spec.kind, rec.rows).add(live, docs).finish()
            alive = set(live.tolist())
            held = {r: keys for r, keys in got.entries().items() if r in alive}
            unkeyed = set(got.unkeyed.tolist()) & alive
            if held != truth.entries() or unkeyed != set(truth.unkeyed.tolist()):
                wrong = sorted(set(held) ^ set(truth.entries())
                               | {r for r in held if held[r] != truth.entries().get(r)}
                               | (unkeyed ^ set(truth.unkeyed.tolist())))
                problems.append(f"{what} disagrees with the payloads of {len(wrong)} live row(s), "
                                f"e.g. id {ids[wrong[0]]!r}" if wrong else f"{what} disagrees with the payloads")
    return problems
