"""Integrity: corrupt real store files and catalog records, and require that zenstore
notices -- ``verify()`` reports it and opening/searching raises CorruptStore (or
FormatVersionError for a version field) -- or, where a byte is never read, that every
answer stays exactly what it was. Never a silently wrong answer.

tests/test_format.py covers the framing of a synthetic file; this file works on the
files of a real store (segment sections groups/codes/scales/aux, the base matrix and the
rotation tables, the LMDB catalog's records), systematically. Normal runs flip a sample of
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

from .conftest import scale, slow_run

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
    return every if slow_run() or len(every) <= sample else sorted(rnd.sample(every, sample))


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
    lengths = range(len(raw)) if slow_run() else sorted({0, 1, 8, 31, 32, 33, 100, len(raw) // 2, len(raw) - 64,
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


# --- the catalog ---------------------------------------------------------------------------


def _env(path: Path, readonly: bool = False):
    return lmdb.open(str(path / "catalog.mdb"), subdir=False, max_dbs=8, readonly=readonly, lock=not readonly)


def cat_get(path: Path, db: bytes, key: bytes) -> bytes | None:
    env = _env(path)
    try:
        with env.begin() as txn:
            v = txn.get(key, db=env.open_db(db, txn=txn))
            return None if v is None else bytes(v)
    finally:
        env.close()


def cat_put(path: Path, db: bytes, key: bytes, value: bytes | None) -> None:
    env = _env(path)
    try:
        with env.begin(write=True) as txn:
            handle = env.open_db(db, txn=txn)
            if value is None:
                txn.delete(key, db=handle)
            else:
                txn.put(key, value, db=handle)
    finally:
        env.close()


RECORDS = [
    ("ids column", b"ids", fmt.segment_key(1)),
    ("ids column 2", b"ids", fmt.segment_key(2)),
    ("tombstones", b"tombstones", fmt.segment_key(1)),
    ("payload", b"payloads", fmt.id_key(7)),
    ("manifest", b"meta", b"manifest"),
    ("config", b"meta", b"config"),
    ("format", b"meta", b"format"),
]


@pytest.mark.parametrize("name,db,key", RECORDS, ids=[r[0] for r in RECORDS])
def test_flipped_bits_in_catalog_records(store, name, db, key):
    """Every byte of the record (zstd frames, JSON documents): detected, or harmless
    (e.g. a manifest ``generation`` digit, a config ``seed`` digit only used for training)."""
    path, queries, before = store
    raw = cat_get(path, db, key)
    assert raw is not None
    rnd = random.Random(name)
    detected = harmless = 0
    for off in _offsets(0, len(raw), rnd, 48):
        bad = bytearray(raw)
        bad[off] ^= 1 << rnd.randrange(8)
        cat_put(path, db, key, bytes(bad))
        if check_flip(path, queries, before, f"{name} byte {off}"):
            detected += 1
        else:
            harmless += 1
    cat_put(path, db, key, raw)
    count("catalog flips detected", detected)
    # harmless: e.g. zstd frame bits that do not change the decoded content (reserved
    # header bit, equivalent entropy-table encodings), a manifest generation digit
    count("catalog flips harmless", harmless)
    assert detected > harmless
    assert verify_store(path) == []


def _manifest(path: Path) -> dict:
    return json.loads(cat_get(path, b"meta", b"manifest"))


def _ids(path: Path, seg: int) -> np.ndarray:
    return fmt.decode_column(cat_get(path, b"ids", fmt.segment_key(seg)), "ids")


def _edit_manifest(fn):
    def edit(path):
        m = _manifest(path)
        fn(m)
        cat_put(path, b"meta", b"manifest", json.dumps(m).encode())
    return edit


def _put_ids(fn, seg=1):
    def edit(path):
        cat_put(path, b"ids", fmt.segment_key(seg), fmt.encode_column(fn(_ids(path, seg))))
    return edit


def _put_tombs(rows, deleted=None):
    def edit(path):
        cat_put(path, b"tombstones", fmt.segment_key(1), fmt.encode_column(np.array(rows, np.uint32)))
        if deleted is not None:
            _edit_manifest(lambda m: m["segments"][0].update(deleted=deleted))(path)
    return edit


def _swap_first_two(a):
    a = a.copy()
    a[[0, 1]] = a[[1, 0]]
    return a


def _dup_first(a):
    a = a.copy()
    a[1] = a[0]
    return a


def _as_str(a):
    return np.array([str(v) for v in a], dtype=object)


SEMANTIC = [
    # well-formed records with wrong contents: what a buggy writer or a bad restore leaves
    ("ids reversed", _put_ids(lambda a: a[::-1].copy())),
    ("two ids swapped", _put_ids(_swap_first_two)),
    ("duplicate id in a column", _put_ids(_dup_first)),
    ("str id column in an int store", _put_ids(_as_str)),
    ("ids column one short", _put_ids(lambda a: a[:-1].copy())),
    ("ids column missing", lambda p: cat_put(p, b"ids", fmt.segment_key(2), None)),
    ("tombstone beyond the segment", _put_tombs([3, 500])),
    ("tombstones repeated", _put_tombs([3, 3])),
    ("tombstones unsorted", _put_tombs([4, 3])),
    ("tombstones missing", lambda p: cat_put(p, b"tombstones", fmt.segment_key(1), None)),
    ("tombstones of an unknown segment", lambda p: cat_put(p, b"tombstones", fmt.segment_key(9),
                                                          fmt.encode_column(np.array([1], np.uint32)))),
    ("payload is not JSON", lambda p: cat_put(p, b"payloads", fmt.id_key(7), fmt.compress(b"{nope"))),
    ("payload is a list", lambda p: cat_put(p, b"payloads", fmt.id_key(7), fmt.compress(b"[1, 2]"))),
    ("payload is not zstd", lambda p: cat_put(p, b"payloads", fmt.id_key(7), b'{"i": 7}')),
    ("payload of a deleted id", lambda p: cat_put(p, b"payloads", fmt.id_key(3), fmt.compress(b"{}"))),
    ("manifest is a list", lambda p: cat_put(p, b"meta", b"manifest", b"[]")),
    ("manifest missing", lambda p: cat_put(p, b"meta", b"manifest", None)),
    ("manifest segments is an object", _edit_manifest(lambda m: m.update(segments={}))),
    ("manifest rows is a string", _edit_manifest(lambda m: m["segments"][0].update(rows="100"))),
    ("manifest rows is a float", _edit_manifest(lambda m: m["segments"][0].update(rows=100.0))),
    ("manifest rows is true", _edit_manifest(lambda m: m["segments"][1].update(deleted=True))),
    ("manifest file is null", _edit_manifest(lambda m: m["segments"][0].update(file=None))),
    ("manifest file escapes the store", _edit_manifest(lambda m: m["segments"][0].update(file="../x.zseg"))),
    ("manifest file is another segment's", _edit_manifest(lambda m: m["segments"][0].update(
        file="segments/seg-00000002.zseg"))),
    ("manifest lists a segment twice", _edit_manifest(lambda m: m["segments"].append(m["segments"][0]))),
    ("manifest base file absolute", _edit_manifest(lambda m: m["base"].update(file="/etc/passwd"))),
    ("manifest base is a list", _edit_manifest(lambda m: m.update(base=[1]))),
    ("manifest base size wrong", _edit_manifest(lambda m: m["base"].update(size=m["base"]["size"] + 64))),
    ("manifest header crc wrong", _edit_manifest(lambda m: m["segments"][1].update(header_crc=12345))),
    ("manifest unknown id type", _edit_manifest(lambda m: m.update(id_type="uuid"))),
    ("manifest id type str", _edit_manifest(lambda m: m.update(id_type="str"))),
    ("manifest drops a segment", _edit_manifest(lambda m: m["segments"].pop())),
    ("manifest deleted count low", _edit_manifest(lambda m: m["segments"][0].update(deleted=1))),
    ("config is a list", lambda p: cat_put(p, b"meta", b"config", b"[]")),
    ("config dim changed", lambda p: cat_put(p, b"meta", b"config", json.dumps(
        {**json.loads(cat_get(p, b"meta", b"config")), "dim": 128}).encode())),
    ("config metric changed", lambda p: cat_put(p, b"meta", b"config", json.dumps(
        {**json.loads(cat_get(p, b"meta", b"config")), "metric": "ip"}).encode())),
    ("format version a string", lambda p: cat_put(p, b"meta", b"format",
                                                  b'{"magic":"zenstore","format_version":"1"}')),
]


@pytest.mark.parametrize("name,edit", SEMANTIC, ids=[s[0] for s in SEMANTIC])
def test_wrong_but_well_formed_catalog_records(store, name, edit):
    path, queries, before = store
    edit(path)
    # verify reports it; readers refuse, or answer exactly as before (a stray record of a
    # deleted id or an unknown segment is never read)
    assert check_flip(path, queries, before, name), f"verify missed: {name}"
    count("semantic catalog corruptions detected")


def test_new_writer_refuses_a_corrupt_store(store):
    """A writer must not open (and clean up, or write to) a store it cannot trust."""
    path, _, _ = store
    _put_ids(_dup_first)(path)
    files = sorted(os.listdir(path / "segments"))
    with pytest.raises(zenstore.CorruptStore):
        Store.open(path)
    assert sorted(os.listdir(path / "segments")) == files


def test_catalog_file_replaced_by_garbage(store):
    path, _, _ = store
    cat = path / "catalog.mdb"
    for blob in (b"", os.urandom(100), os.urandom(16384), b"\0" * 16384):
        cat.write_bytes(blob)
        assert verify_store(path)
        with pytest.raises((zenstore.CorruptStore, zenstore.NotAStore)):
            Store.open(path, readonly=True)
        count("garbage catalogs refused")


# --- raw damage to the LMDB file itself ----------------------------------------------------

def test_raw_bit_flips_in_the_catalog_file(store, tmp_path):
    """Bits flipped anywhere in catalog.mdb (LMDB pages have no checksums of their own).
    Each try runs in a process of its own (tests/_integrity_child.py, forked from a
    warmed-up process: tests/_zygote.py). Allowed: the same answers; a ZenstoreError;
    changed answers only if verify() reports the damage. A Python exception of another
    kind fails. LMDB may also die of SIGBUS on a page pointer past the end of the file:
    that is counted and documented (docs/reliability.md), not hidden."""
    from ._zygote import SHARED as zygote

    path, _, _ = store
    raw = (path / "catalog.mdb").read_bytes()
    tries = iter(range(10**6))

    def run(p):
        t = next(tries)
        out, err = tmp_path / f"out-{t}", tmp_path / f"err-{t}"
        rc = zygote.start("integrity_child", [str(p)], dict(os.environ), err, out).wait(120)
        return rc, out.read_text() if out.exists() else "", err.read_text() if err.exists() else ""

    rc, out, err = run(path)
    assert rc == 0, err
    base = json.loads(out)
    rnd = random.Random(3)
    outcomes: dict = {}
    for t in range(scale(8, 300)):
        off = rnd.randrange(len(raw))
        bad = bytearray(raw)
        bad[off] ^= 1 << rnd.randrange(8)
        (path / "catalog.mdb").write_bytes(bytes(bad))
        rc, out, err = run(path)
        if rc < 0:
            kind = f"killed by signal {-rc} (LMDB)"
        else:
            assert rc == 0, f"flip at {off}: a non-zenstore exception escaped:\n{err[-2000:]}"
            got = json.loads(out)
            if "refused" in got:
                kind = "refused"
            elif got["answers"] == base["answers"]:
                kind = "same answers"
            else:
                assert got["verify"], f"flip at {off}: answers changed and verify() saw nothing"
                kind = "changed answers, reported by verify"
        outcomes[kind] = outcomes.get(kind, 0) + 1
    (path / "catalog.mdb").write_bytes(raw)
    for kind, n in outcomes.items():
        count(f"raw catalog flips: {kind}", n)


def test_lmdb_damage_reports_become_corrupt_store(store, monkeypatch):
    """LMDB's own corruption errors reach callers as CorruptStore (and verify() lines)."""
    import lmdb

    from zenstore import catalog

    path, _, _ = store

    def damaged(self, db, key):
        raise lmdb.CorruptedError("mdb_get: MDB_CORRUPTED: Located page was wrong type")

    monkeypatch.setattr(catalog.Txn, "get", damaged)
    with pytest.raises(zenstore.CorruptStore, match="damaged"):
        Store.open(path, readonly=True)
    assert any("damaged" in p for p in verify_store(path))
