"""Hostile environments whose fixes belong in store.py (issue 9, item 10 and neighbours).

Each test fails at 2ccd506; the docstrings say what was wrong and what the fix is.
"""

from __future__ import annotations

import glob
import os

import pytest

import zenstore
from zenstore import InvalidArgument, Store, verify_store

from ._hostile import (
    as_reader_without_write_access,
    make_store,
    readonly_tree,
    remount,
    shared_dir,
    start_unprivileged,
    tiny_mount,
    unprivileged_result,
    vectors,
)



def test_directory_writer_lock_is_a_clear_error(tmp_path):
    """``_take_writer_lock``: ``os.open(writer.lock, O_RDWR)`` on a directory raises a raw
    IsADirectoryError. Map OSErrors there through ``errors.from_os_error`` (and refuse a
    non-regular writer.lock as CorruptStore naming it)."""
    path = str(tmp_path / "s.zen")
    make_store(path).close()
    os.unlink(os.path.join(path, "writer.lock"))
    os.mkdir(os.path.join(path, "writer.lock"))
    with pytest.raises(zenstore.ZenstoreError, match="writer.lock"):
        Store.open(path)


def test_writable_open_on_a_read_only_file_system_is_read_only_store(tmp_path):
    """``_take_writer_lock``: O_RDWR|O_CREAT on a read-only file system raises a raw
    ``OSError: [Errno 30]``; it should be ReadOnlyStore ("the file system is read-only;
    open it with readonly=True")."""
    with tiny_mount(str(tmp_path / "mnt"), "4m") as mnt:
        path = os.path.join(mnt, "s.zen")
        make_store(path).close()
        remount(mnt, "ro")
        with pytest.raises(zenstore.ReadOnlyStore):
            Store.open(path)


def test_writable_open_without_write_permission_is_read_only_store():
    """``_take_writer_lock``: a user who may read but not write the store gets a raw
    PermissionError from opening writer.lock; it should be ReadOnlyStore (a PermissionError
    too) saying to open with readonly=True."""
    with shared_dir() as d:
        path = os.path.join(d, "s.zen")
        make_store(path).close()
        readonly_tree(path)
        out = as_reader_without_write_access("return len(Store.open(path))", path)
        assert out[:2] == ["error", "ReadOnlyStore"], out


def test_store_locked_by_a_reader_without_write_permission_says_so():
    """A reader that may not write the LMDB lock table holds a shared flock on
    writer.lock (catalog.py) so that no writer reuses pages under it. ``_take_writer_lock``
    then says "another writer has this store open"; it should say that a writer or such a
    reader holds it (e.g. "another process holds this store's lock: a writer, or a reader
    that may not write catalog.mdb-lock")."""
    if os.geteuid() != 0:
        pytest.skip("needs a writer with more rights than the reader (run the suite as root)")
    with shared_dir() as d:
        path = os.path.join(d, "s.zen")
        make_store(path).close()
        readonly_tree(path)
        reader = start_unprivileged("""
with Store.open(path, readonly=True) as s:
    print("ready", flush=True)
    sys.stdin.readline()
    return len(s)
""", path)
        try:
            assert reader.stdout.readline().strip() == "ready"
            with pytest.raises(zenstore.StoreLocked, match="reader"):
                Store.open(path)
        finally:
            reader.stdin.write("go\n")
            reader.stdin.flush()
            unprivileged_result(reader)


def test_create_on_an_empty_mount_point(tmp_path):
    """``Store.create`` builds the store in ``PATH.creating-PID`` next to PATH and renames
    it over PATH: onto an empty mount point that fails with a raw OSError (EBUSY/EXDEV).
    When PATH is an existing empty directory, build inside it instead (e.g. in
    ``PATH/.creating-PID`` and rename the entries, or write the catalog in place last)."""
    with tiny_mount(str(tmp_path / "mnt"), "4m") as mnt:
        with Store.create(mnt, dim=64, n_base=4) as s:
            s.add([1, 2], vectors(2))
        with Store.open(mnt, readonly=True) as r:
            assert len(r) == 2


def test_symlinked_segments_dir_never_deletes_files_outside_the_store(tmp_path):
    """``_remove_orphans`` lists ``segments/`` through a symlink and deletes ``*.tmp``,
    ``*.zseg`` it finds: files of another directory. Refuse a ``segments`` that is not a
    real directory of the store (``os.lstat``), or never delete through a symlink."""
    path = str(tmp_path / "s.zen")
    make_store(path).close()
    outside = str(tmp_path / "elsewhere")
    os.rename(os.path.join(path, "segments"), outside)
    os.symlink(outside, os.path.join(path, "segments"))
    victims = [os.path.join(outside, "seg-99999999.zseg"), os.path.join(outside, "notes.tmp")]
    for v in victims:
        with open(v, "w") as f:
            f.write("not the store's")
    try:
        Store.open(path).close()
    except zenstore.ZenstoreError:
        pass  # refusing such a store is fine; deleting someone else's files is not
    assert all(os.path.exists(v) for v in victims)


def test_deeply_nested_payload_reads_back(tmp_path):
    """A payload nested close to the recursion limit was accepted by ``add`` (json.dumps
    at the caller's stack depth) but the read path decodes it deeper in the stack and
    reported CorruptStore. Nesting is capped at 256 levels (InvalidArgument), well below
    the interpreter's limit, so what is stored reads back."""
    with make_store(str(tmp_path / "s.zen"), n=1) as s:
        def nested(depth):
            payload = cur = {}
            for _ in range(depth):
                cur["a"] = {}
                cur = cur["a"]
            return payload

        from zenstore.validation import MAX_PAYLOAD_DEPTH

        deepest = MAX_PAYLOAD_DEPTH - 1  # nested() adds one level: the outer dict
        s.add([deepest], vectors(1, seed=deepest), payloads=[nested(deepest)])
        for too_deep in (MAX_PAYLOAD_DEPTH, 900, 5000):  # the encoder's own limit may come first
            with pytest.raises(InvalidArgument, match="nested more than|recursion depth"):
                s.add([too_deep], vectors(1, seed=too_deep), payloads=[nested(too_deep)])
        assert s.get(deepest).payload == nested(deepest)
        hits = s.search(vectors(1, seed=deepest)[0], k=len(s))
        assert {h.id: h.payload for h in hits}[deepest] == nested(deepest)
        assert s.verify() == []


def test_missing_segment_is_reported_as_missing(tmp_path):
    """``Store._load_snapshot`` retries while ``_generation_moved(prev)``, comparing the
    catalog with the *previous* snapshot, which at open (or after any write) always
    differs: a missing file becomes "store keeps changing underneath the reader". Retry
    only if the generation moved past the one of the transaction whose manifest listed
    the missing file (as ``_reading`` does), else raise the "missing" error itself."""
    path = str(tmp_path / "s.zen")
    make_store(path).close()
    seg = sorted(glob.glob(os.path.join(path, "segments", "*.zseg")))[0]
    os.unlink(seg)
    with pytest.raises(zenstore.CorruptStore, match="listed in the catalog is missing") as info:
        Store.open(path, readonly=True)
    assert seg in str(info.value)
    assert any("missing" in p for p in verify_store(path))

