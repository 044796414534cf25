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
from contextlib import contextmanager

import lmdb

from .errors import CorruptStore, NotAStore

CATALOG_FILE = "catalog.mdb"
DB_NAMES = ("meta", "ids", "tombstones", "payloads", "jobs")
DEFAULT_MAP_SIZE = int(os.environ.get("ZENSTORE_MAP_SIZE", 1 << 40))


class Catalog:
    def __init__(self, root: str, *, readonly: bool, create: bool = False) -> None:
        path = os.path.join(root, CATALOG_FILE)
        if not create and not os.path.isfile(path):
            raise NotAStore(f"{root}: not a zenstore store (no {CATALOG_FILE})")
        self.path = path
        self.readonly = readonly
        try:
            self.env = lmdb.open(
                path,
                subdir=False,
                map_size=DEFAULT_MAP_SIZE,
                max_dbs=len(DB_NAMES) + 1,
                readonly=readonly,
                create=create,
                lock=True,
                readahead=False,
                max_readers=256,
            )
        except lmdb.Error as exc:
            raise CorruptStore(f"{path}: cannot open catalog ({exc})") from exc
        try:
            self.dbs = {n: self.env.open_db(n.encode(), create=not readonly) for n in DB_NAMES}
        except lmdb.Error as exc:
            self.env.close()
            raise CorruptStore(f"{path}: catalog lacks zenstore tables ({exc})") from exc

    @contextmanager
    def read(self):
        with self.env.begin(write=False, buffers=False) as txn:
            yield Txn(txn, self.dbs)

    @contextmanager
    def write(self):
        with self.env.begin(write=True, buffers=False) as txn:
            yield Txn(txn, self.dbs)

    def size_bytes(self) -> int:
        """Bytes of the catalog file in use (LMDB pages up to the last one written)."""
        info = self.env.info()
        return (info["last_pgno"] + 1) * self.env.stat()["psize"]

    def db_bytes(self, name: str) -> int:
        with self.env.begin() as txn:
            st = txn.stat(self.dbs[name])
        return (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]

    def close(self) -> None:
        self.env.close()


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

    def keys(self, db: str) -> list[bytes]:
        with self.txn.cursor(db=self.dbs[db]) as cur:
            return [bytes(k) for k in cur.iternext(keys=True, values=False)]

    def items(self, db: str):
        with self.txn.cursor(db=self.dbs[db]) as cur:
            for k, v in cur:
                yield bytes(k), bytes(v)
