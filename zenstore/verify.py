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
from . import records
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
    fds = _open_all(path, manifest.segments, problems, vanished) if codec is not None else {}
    try:
        for rec in manifest.segments:
            if codec is not None and rec.id not in fds:
                continue  # missing or unopenable, already reported
            try:
                ids = records.read_id_column(txn, rec, manifest.id_type, path)
                dead = records.read_tombstones(txn, rec, path)
                if codec is not None:
                    load_segment(path, rec, config, codec, ids, dead, verify=True, fd=fds[rec.id])
            except (CorruptStore, FormatVersionError, StoreIOError) as exc:  # e.g. a file it may not read
                problems.append(str(exc))
                continue
            alive = np.ones(len(ids), bool)
            alive[dead] = False
            for v in ids[alive].tolist():
                if v in seen:
                    problems.append(f"id {v!r} is live in segments {seen[v]} and {rec.id}")
                seen[v] = rec.id
    finally:
        for fd in fds.values():
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
    return problems, vanished


def _open_all(path: str, segments, problems: list[str], vanished: list[str]) -> dict[int, int]:
    """A descriptor per listed segment file, opened back to back: checking one file takes
    long enough for a merge to remove the next, an open descriptor outlives the unlink."""
    fds: dict[int, int] = {}
    for rec in segments:
        try:
            fds[rec.id] = open_data_file(os.path.join(path, rec.file))
        except FileMissing as exc:
            vanished.append(str(exc))
        except (CorruptStore, StoreIOError) as exc:
            problems.append(str(exc))
    return fds
