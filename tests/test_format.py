"""The on-disk contract: framing, checksums, versions, records, and corrupted files."""

import json
import os
import struct
from pathlib import Path

import lmdb
import numpy as np
import pytest

import zenstore
from zenstore import Store
from zenstore import format as fmt
from zenstore.files import open_framed_file, write_framed_file
from zenstore.store import verify_store

from .conftest import clustered


def test_framed_file_roundtrip(tmp_path):
    path = str(tmp_path / "f.zseg")
    a = np.arange(10, dtype="<u8")
    b = np.arange(7, dtype="<f2")
    size, _ = write_framed_file(path, fmt.FILE_KIND_SEGMENT, {"x": 1}, [("a", a), ("bb", b)])
    assert os.path.getsize(path) == size
    m = open_framed_file(path, fmt.FILE_KIND_SEGMENT)
    assert m.header.meta == {"x": 1}
    np.testing.assert_array_equal(m.array("a", "<u8", (10,)), a)
    np.testing.assert_array_equal(m.array("bb", "<f2", (7,)), b)
    assert all(e.offset % 64 == 0 for e in m.header.sections.values())
    with pytest.raises(zenstore.CorruptStore, match="expected base"):
        open_framed_file(path, fmt.FILE_KIND_BASE)
    with pytest.raises(zenstore.CorruptStore, match="shape"):
        m.array("a", "<u8", (11,))


def test_streamed_sections_equal_in_memory(tmp_path):
    data = np.arange(1000, dtype="<u8")
    write_framed_file(str(tmp_path / "a"), 1, {}, [("s", data)])
    chunks = (data[i : i + 64] for i in range(0, 1000, 64))
    write_framed_file(str(tmp_path / "b"), 1, {}, [("s", (data.nbytes, chunks))])
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def _flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))


def test_every_byte_of_a_framed_file_is_protected(tmp_path):
    path = str(tmp_path / "f")
    write_framed_file(path, 1, {"k": "v"}, [("a", np.arange(40, dtype="<u8"))])
    raw = Path(path).read_bytes()
    header_len = fmt.FILE_HEADER_SIZE + fmt.SECTION_ENTRY_SIZE + len(b'{"k":"v"}')
    section = open_framed_file(path, 1).header.sections["a"]
    protected = list(range(header_len)) + list(range(section.offset, section.offset + section.length))
    for off in protected:
        with open(path, "wb") as f:
            f.write(raw)
        _flip(path, off)
        with pytest.raises((zenstore.CorruptStore, zenstore.FormatVersionError)):
            open_framed_file(path, 1)


def test_truncated_and_newer_files(tmp_path):
    path = str(tmp_path / "f")
    write_framed_file(path, 1, {}, [("a", np.arange(40, dtype="<u8"))])
    raw = Path(path).read_bytes()
    for cut in (0, 10, 40, len(raw) - 1):
        Path(path).write_bytes(raw[:cut])
        with pytest.raises(zenstore.CorruptStore):
            open_framed_file(path, 1)
    newer = bytearray(raw)
    struct.pack_into("<H", newer, 8, fmt.FORMAT_VERSION + 1)
    Path(path).write_bytes(bytes(newer))
    with pytest.raises(zenstore.FormatVersionError, match=f"version {fmt.FORMAT_VERSION + 1}"):
        open_framed_file(path, 1)


@pytest.mark.parametrize("values", [
    np.array([], dtype=np.int64),
    np.array([5, -3, 2**62, -(2**63), 2**63 - 1, 0], dtype=np.int64),
    np.arange(1000, dtype=np.int64) * 7,
    np.array(["a", "ünï", "x" * 256], dtype=object),
])
def test_column_roundtrip(values):
    out = fmt.decode_column(fmt.encode_column(values), "col")
    assert out.tolist() == values.tolist()


def test_column_compresses_sequential_ids():
    ids = np.arange(100_000, dtype=np.int64)
    assert len(fmt.encode_column(ids)) < 100_000 * 0.05


def test_corrupt_column_is_detected():
    blob = bytearray(fmt.encode_column(np.arange(100, dtype=np.int64)))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(zenstore.CorruptStore):
        fmt.decode_column(bytes(blob), "col")


def test_id_keys_sort_like_ids():
    ints = [-(2**63), -5, -1, 0, 1, 7, 2**63 - 1]
    assert sorted(ints, key=fmt.id_key) == ints
    assert fmt.id_key("a") != fmt.id_key(0)


def test_config_roundtrip_and_validation():
    cfg = fmt.StoreConfig(dim=256, metric="l2", n_base=7)
    assert fmt.StoreConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(zenstore.FormatVersionError):
        fmt.StoreConfig.from_dict({**cfg.to_dict(), "future_field": 1})
    assert fmt.StoreConfig.from_dict({**cfg.to_dict(), "x-note": 1}) == cfg
    with pytest.raises(zenstore.CorruptStore):
        fmt.StoreConfig.from_dict({**cfg.to_dict(), "dim": 0})


def _store(tmp_path, rng, n=200, **opts):
    path = str(tmp_path / "s")
    x = clustered(rng, n, 64)
    with Store.create(path, dim=64, n_base=4, **opts) as store:
        store.add(list(range(n)), x)
    return path, x


def test_flipped_bits_in_segment_detected_on_open_and_verify(tmp_path, rng):
    path, x = _store(tmp_path, rng)
    seg = os.path.join(path, "segments", sorted(os.listdir(os.path.join(path, "segments")))[0])
    raw = Path(seg).read_bytes()
    for off in (3, 40, 200, len(raw) // 2, len(raw) - 1):
        Path(seg).write_bytes(raw)
        _flip(seg, off)
        with pytest.raises((zenstore.CorruptStore, zenstore.FormatVersionError)):
            Store.open(path, readonly=True)
        problems = verify_store(path)
        assert problems and ("checksum" in problems[0] or "magic" in problems[0]
                             or "header" in problems[0] or "version" in problems[0])
    Path(seg).write_bytes(raw)
    with Store.open(path, readonly=True) as ok:
        assert ok.verify() == []


def test_truncated_or_missing_segment_detected(tmp_path, rng):
    path, _ = _store(tmp_path, rng)
    seg = os.path.join(path, "segments", os.listdir(os.path.join(path, "segments"))[0])
    raw = Path(seg).read_bytes()
    Path(seg).write_bytes(raw[:-100])
    with pytest.raises(zenstore.CorruptStore, match="truncated"):
        Store.open(path)
    os.unlink(seg)
    with pytest.raises(zenstore.CorruptStore, match="missing"):
        Store.open(path, readonly=True)


def test_corrupt_base_file_detected(tmp_path, rng):
    path, _ = _store(tmp_path, rng)
    base = os.path.join(path, [f for f in os.listdir(path) if f.startswith("base-")][0])
    _flip(base, os.path.getsize(base) - 5)
    with pytest.raises(zenstore.CorruptStore, match="checksum"):
        Store.open(path, readonly=True)


def _edit_catalog(path, db, key, value):
    env = lmdb.open(os.path.join(path, "catalog.mdb"), subdir=False, max_dbs=8)
    with env.begin(write=True) as txn:
        txn.put(key, value, db=env.open_db(db, txn=txn))
    env.close()


def test_newer_store_format_is_refused(tmp_path, rng):
    path, _ = _store(tmp_path, rng)
    _edit_catalog(path, b"meta", b"format", json.dumps(
        {"magic": "zenstore", "format_version": fmt.FORMAT_VERSION + 1}).encode())
    with pytest.raises(zenstore.FormatVersionError,
                       match=f"version {fmt.FORMAT_VERSION + 1}.*up to version {fmt.FORMAT_VERSION}"):
        Store.open(path)


def test_foreign_magic_is_not_a_store(tmp_path, rng):
    path, _ = _store(tmp_path, rng)
    _edit_catalog(path, b"meta", b"format", b'{"magic": "other"}')
    with pytest.raises(zenstore.NotAStore):
        Store.open(path, readonly=True)


def test_inconsistent_catalog_detected(tmp_path, rng):
    path, _ = _store(tmp_path, rng)
    env = lmdb.open(os.path.join(path, "catalog.mdb"), subdir=False, max_dbs=8)
    with env.begin() as txn:
        manifest = json.loads(txn.get(b"manifest", db=env.open_db(b"meta", txn=txn)))
    env.close()
    manifest["segments"][0]["deleted"] = 3  # but no tombstones recorded
    _edit_catalog(path, b"meta", b"manifest", json.dumps(manifest).encode())
    with pytest.raises(zenstore.CorruptStore, match="tombstones"):
        Store.open(path, readonly=True)
    _edit_catalog(path, b"meta", b"manifest", b"{not json")
    with pytest.raises(zenstore.CorruptStore, match="JSON"):
        Store.open(path, readonly=True)


def test_orphaned_files_are_removed_by_the_next_writer(tmp_path, rng):
    path, _ = _store(tmp_path, rng)
    seg_dir = os.path.join(path, "segments")
    Path(os.path.join(seg_dir, "seg-00000099.zseg")).write_bytes(b"partial")
    Path(os.path.join(seg_dir, "seg-00000100.zseg.tmp")).write_bytes(b"partial")
    with Store.open(path, readonly=True) as ro:  # readers never delete
        assert len(ro) == 200
    assert len(os.listdir(seg_dir)) == 3
    with Store.open(path) as store:
        assert len(store) == 200 and store.verify() == []
    assert len(os.listdir(seg_dir)) == 1
