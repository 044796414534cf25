"""Integrity: corrupt real store files and catalog records, and require that zenstore
notices -- ``verify()`` reports it and opening/searching raises CorruptStore (or
FormatVersionError for a version field) -- or, where a byte is never read, that every
answer stays exactly what it was. Never a silently wrong answer.

tests/test_format.py covers the framing of a synthetic file; this file works on the
files of a real store (segment sections groups/codes/scales/aux, the base matrix and the
rotation tables), systematically. Normal runs flip a sample of
offsets; ``--runslow`` flips every byte and truncates at every length.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import struct
from pathlib import Path

import lmdb
import numpy as np
import pytest

import zenstore
from zenstore import Store, verify_store
from zenstore import format as fmt
from zenstore.files import open_framed_file

SLOW = os.environ.get("ZENSTORE_SLOW") == "1"
DIM = 64
DETECTED = (zenstore.CorruptStore, zenstore.FormatVersionError)
COUNTS: dict = {}


def count(kind: str, n: int = 1) -> None:
    COUNTS[kind] = COUNTS.get(kind, 0) + n


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nintegrity counts: {COUNTS}")


def build(path: Path, metric: str = "l2", seed: int = 0, ids_offset: int = 0) -> np.ndarray:
    """Two segments (one with tombstones), payloads on most rows."""
    x = np.random.default_rng(seed).standard_normal((150, DIM)).astype(np.float32)
    with Store.create(path, dim=DIM, metric=metric, n_base=4) as s:
        s.add([ids_offset + i for i in range(100)], x[:100],
              payloads=[{"i": i} if i % 5 else None for i in range(100)])
        s.add([ids_offset + i for i in range(100, 150)], x[100:], payloads=[{"i": i} for i in range(100, 150)])
        s.delete([ids_offset + 3, ids_offset + 4, ids_offset + 120])
    return x


def answers(path: Path, queries: np.ndarray):
    """Everything a reader can observe, to compare before and after a corruption."""
    with Store.open(path, readonly=True) as s:
        ids = sorted(s.ids().tolist())
        payloads = [s.get(i).payload for i in ids]
        vectors = np.stack([s.get(i).vector for i in ids[::7]])
        found, scores = s.search_batch(queries, k=20, shortlist=200)
        return len(s), ids, payloads, vectors.tobytes(), found.tolist(), scores.tobytes()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("integrity")
    path = root / "store.zen"
    x = build(path)
    return path, x[:6] + 0.1, answers(path, x[:6] + 0.1)


@pytest.fixture
def store(pristine, tmp_path):
    path, queries, before = pristine
    copy = tmp_path / "store.zen"
    shutil.copytree(path, copy)
    return copy, queries, before


def expect_detected(path: Path, what: str, version_field: bool = False) -> None:
    problems = verify_store(path)
    assert problems, f"verify missed: {what}"
    with pytest.raises(DETECTED) as info:
        with Store.open(path, readonly=True) as s:
            s.search_batch(np.ones((1, DIM), np.float32), k=5)
    if version_field:
        assert isinstance(info.value, zenstore.FormatVersionError), what


def check_flip(path: Path, queries, before, what: str) -> bool:
    """After a corruption that may be harmless: readers either refuse (and then verify
    must report it too) or give exactly the answers they gave before. Returns True if
    the corruption was detected, False if it was harmless (unread or unused bytes)."""
    problems = verify_store(path)
    try:
        got = answers(path, queries)
    except (*DETECTED, zenstore.NotAStore) as exc:
        assert problems, f"readers refused ({exc}) but verify() found nothing: {what}"
        return True
    assert got == before, f"readers gave changed answers ({what}); verify says {problems}"
    return bool(problems)


# --- framed files: flipped bits ----------------------------------------------------------


def _regions(path: Path, kind: int):
    """(name, first, end) byte ranges of a framed file: header parts, sections, gaps."""
    h = open_framed_file(str(path), kind).header
    n = len(h.sections)
    table_end = fmt.FILE_HEADER_SIZE + fmt.SECTION_ENTRY_SIZE * n
    out = [("fixed header", 0, fmt.FILE_HEADER_SIZE), ("section table", fmt.FILE_HEADER_SIZE, table_end),
           ("metadata", table_end, h.header_size)]
    pos = h.header_size
    for e in sorted(h.sections.values(), key=lambda e: e.offset):
        if e.offset > pos:
            out.append((f"padding before {e.name}", pos, e.offset))
        out.append((f"section {e.name}", e.offset, e.offset + e.length))
        pos = e.offset + e.length
    return out


def _offsets(first: int, end: int, rnd: random.Random, sample: int) -> list[int]:
    every = list(range(first, end))
    return every if SLOW or len(every) <= sample else sorted(rnd.sample(every, sample))


@pytest.mark.parametrize("target", ["segment", "base"])
def test_flipped_bits_in_every_region_of_real_files(store, target):
    path, queries, before = store
    if target == "segment":
        rel, kind = "segments/seg-00000001.zseg", fmt.FILE_KIND_SEGMENT
    else:
        rel, kind = "base-000001.zbase", fmt.FILE_KIND_BASE
    f = path / rel
    raw = f.read_bytes()
    rnd = random.Random(target)
    regions = _regions(f, kind)
    assert {r[0] for r in regions} >= ({"section codes", "section scales", "section aux", "section groups"}
                                       if target == "segment" else
                                       {"section base", "section rsigns", "section rperms"})
    for name, first, end in regions:
        for off in _offsets(first, end, rnd, 24):
            bad = bytearray(raw)
            bad[off] ^= 1 << rnd.randrange(8)
            f.write_bytes(bytes(bad))
            what = f"{rel} {name} byte {off}"
            if name.startswith("padding"):
                # never read: must not change a single answer (verify need not notice)
                check_flip(path, queries, before, what)
                count("padding flips harmless")
            else:
                expect_detected(path, what, version_field=off in (8, 9))
                count(f"{target} flips detected")
    f.write_bytes(raw)
    assert verify_store(path) == [] and answers(path, queries) == before


@pytest.mark.parametrize("target", ["segments/seg-00000002.zseg", "base-000001.zbase"])
def test_truncated_and_extended_files(store, target):
    path, queries, before = store
    f = path / target
    raw = f.read_bytes()
    lengths = range(len(raw)) if SLOW else sorted({0, 1, 8, 31, 32, 33, 100, len(raw) // 2, len(raw) - 64,
                                                   len(raw) - 2, len(raw) - 1}
                                                  | set(random.Random(1).sample(range(len(raw)), 20)))
    for n in lengths:
        f.write_bytes(raw[:n])
        expect_detected(path, f"{target} truncated to {n} bytes")
        count("truncations detected")
    for extra in (b"\0", b"\0" * 64, os.urandom(100)):
        f.write_bytes(raw + extra)
        expect_detected(path, f"{target} extended by {len(extra)} bytes")
        count("extensions detected")
    f.write_bytes(raw)
    assert verify_store(path) == []


def test_missing_files(store):
    path, _, _ = store
    for rel in ("segments/seg-00000001.zseg", "base-000001.zbase"):
        raw = (path / rel).read_bytes()
        os.unlink(path / rel)
        expect_detected(path, f"{rel} missing")
        (path / rel).write_bytes(raw)
        count("missing files detected")


def test_foreign_file_of_the_same_shape_is_refused(store, tmp_path):
    """A valid segment (or base) file from another store, with the same id, rows, sizes:
    every check inside the file passes; the manifest's header crc32 must catch it."""
    path, queries, before = store
    other = tmp_path / "other.zen"
    build(other, seed=99)
    for rel in ("segments/seg-00000001.zseg", "base-000001.zbase"):
        mine = (path / rel).read_bytes()
        theirs = (other / rel).read_bytes()
        assert len(mine) == len(theirs) and mine != theirs
        (path / rel).write_bytes(theirs)
        expect_detected(path, f"{rel} swapped for another store's file")
        (path / rel).write_bytes(mine)
        count("foreign files detected")
    assert answers(path, queries) == before


def test_file_of_the_wrong_kind(store):
    path, _, _ = store
    seg = path / "segments/seg-00000002.zseg"
    raw = seg.read_bytes()
    shutil.copy(path / "base-000001.zbase", seg)
    expect_detected(path, "base file in place of a segment")
    seg.write_bytes(raw)
