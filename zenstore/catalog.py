"""The transactional catalog: one LMDB environment per store.

Sub-databases (all keys and values are bytes; encodings in ``format.py`` and
``docs/format.md``):

``meta``        ``format`` / ``config`` / ``manifest`` JSON documents
``ids``         segment key -> compressed id column (row order of the segment)
``tombstones``  segment key -> compressed sorted uint32 deleted rows
``payloads``    id key -> zstd-compressed JSON payload
``jobs``        job name -> JSON progress record (resumable ingest)

LMDB gives atomic, durable (fsync on commit) multi-key transactions and lets any number
of reader processes see consistent snapshots while one writer commits. Values read from
LMDB are copied (``bytes(...)``) before the read transaction ends.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

import lmdb

from .errors import CorruptStore, NotAStore, ReadOnlyStore
from .faults import fault

CATALOG_FILE = "catalog.mdb"
DB_NAMES = ("meta", "ids", "tombstones", "payloads", "jobs")
DEFAULT_MAP_SIZE = int(os.environ.get("ZENSTORE_MAP_SIZE", 1 << 40))
MIN_PAGE = 4096  # LMDB's page size is the OS page size, at least 4 KiB
# LMDB's own reports of a damaged file (bad page type, page beyond the end, ...)
_DAMAGED = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.IncompatibleError,
            lmdb.VersionMismatchError)


class _SharedEnv:
    """LMDB forbids opening one environment twice in a process, so every Store on the
    same directory in this process shares one handle (reference counted)."""

    _lock = threading.Lock()
    _open: dict = {}

    @classmethod
    def acquire(cls, path: str, create: bool):
        key = os.path.realpath(path)
        with cls._lock:
            entry = cls._open.get(key)
            if entry is None:
                writable = create or os.access(path, os.W_OK)
                env = lmdb.open(
                    path,
                    subdir=False,
                    map_size=DEFAULT_MAP_SIZE,
                    max_dbs=len(DB_NAMES) + 1,
                    readonly=not writable,
                    create=create,
                    lock=True,
                    readahead=False,
                    max_readers=256,
                )
                entry = cls._open[key] = [env, 0, writable]
            entry[1] += 1
            return entry[0], entry[2]

    @classmethod
    def release(cls, path: str) -> None:
        key = os.path.realpath(path)
        with cls._lock:
            entry = cls._open.get(key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] == 0:
                del cls._open[key]
                entry[0].close()


class Catalog:
    def __init__(self, root: str, *, readonly: bool, create: bool = False) -> None:
        path = os.path.join(root, CATALOG_FILE)
        if not create and not os.path.isfile(path):
            raise NotAStore(f"{root}: not a zenstore store (no {CATALOG_FILE})")
        # LMDB initialises an empty (or too short) file as a new environment -- it would
        # write to the store even for a read-only open or verify. A real catalog holds at
        # least its two meta pages; refuse anything shorter untouched.
        if not create and os.path.getsize(path) < 2 * MIN_PAGE:
            raise CorruptStore(f"{path}: catalog file is truncated ({os.path.getsize(path)} bytes)")
        self.path = path
        self.readonly = readonly
        try:
            self.env, writable = _SharedEnv.acquire(path, create)
        except lmdb.Error as exc:
            raise CorruptStore(f"{path}: cannot open catalog ({exc})") from exc
        if not readonly and not writable:
            _SharedEnv.release(path)
            raise ReadOnlyStore(f"{path}: catalog is not writable")
        self._closed = False
        try:
            self.dbs = {n: self.env.open_db(n.encode(), create=create) for n in DB_NAMES}
        except lmdb.Error as exc:
            self.close()
            raise CorruptStore(f"{path}: catalog lacks zenstore tables ({exc})") from exc

    @contextmanager
    def read(self):
        try:
            with self.env.begin(write=False, buffers=False) as txn:
                yield Txn(txn, self.dbs)
        except _DAMAGED as exc:  # raised by any lookup in the body, too
            raise CorruptStore(f"{self.path}: catalog file is damaged ({exc})") from exc

    @contextmanager
    def write(self):
        """One write transaction, committed (fsync) when the block ends without an error.

        A signal that arrives while the commit is in fsync is raised by Python at the
        first bytecode after it returns -- here, after the commit: callers must not treat
        an exception from this block as proof that nothing was committed (the store's
        writer checks the catalog's generation before it removes any file).
        """
        try:
            with self.env.begin(write=True, buffers=False) as txn:
                yield Txn(txn, self.dbs)
            fault("catalog.committed")  # durable; the caller's code has not run yet
        except _DAMAGED as exc:
            raise CorruptStore(f"{self.path}: catalog file is damaged ({exc})") from exc

    def size_bytes(self) -> int:
        """Bytes of the catalog file in use (LMDB pages up to the last one written)."""
        info = self.env.info()
        return (info["last_pgno"] + 1) * self.env.stat()["psize"]

    def db_bytes(self, name: str) -> int:
        with self.env.begin() as txn:
            st = txn.stat(self.dbs[name])
        return (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _SharedEnv.release(self.path)


class Txn:
    """Thin typed access to the sub-databases within one LMDB transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict) -> None:
        self.txn = txn
        self.dbs = dbs

    def get(self, db: str, key: bytes) -> bytes | None:
        value = self.txn.get(key, db=self.dbs[db])
        return None if value is None else bytes(value)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self.txn.put(key, value, db=self.dbs[db])

    def delete(self, db: str, key: bytes) -> bool:
        return self.txn.delete(key, db=self.dbs[db])

    def count(self, db: str) -> int:
        return self.txn.stat(self.dbs[db])["entries"]

    def keys(self, db: str) -> list[bytes]:
        with self.txn.cursor(db=self.dbs[db]) as cur:
            return [bytes(k) for k in cur.iternext(keys=True, values=False)]

    def items(self, db: str):
        with self.txn.cursor(db=self.dbs[db]) as cur:
            for k, v in cur:
                yield bytes(k), bytes(v)
