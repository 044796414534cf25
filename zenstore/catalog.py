"""The transactional catalog of a store: one LMDB environment, typed transactions.

A generic LMDB wrapper: the sub-databases it opens and what lives in them are the
catalog schema's business (``records.py``; encodings in ``format.py`` and
``docs/format.md``). LMDB gives atomic, durable (fsync on commit) multi-key
transactions and lets any number of reader processes see consistent snapshots while one
writer commits. Values read from LMDB are copied (``bytes(...)``) before the read
transaction ends. The environment itself -- sharing per process, map sizing and growth,
reader slots, permissions, OS errors -- is ``lmdb_env.py``'s.

**Optional sub-databases** exist only once a writer created them: a store without them
is byte for byte what older zenstore wrote. They are opened when the environment opens
if present; a process that opened the environment earlier opens them later
(``open_optional``), and a write transaction creates one (``Txn.ensure_db``). LMDB
forbids two concurrent ``mdb_dbi_open`` calls in a process: one lock guards them.
"""


from __future__ import annotations

import os
import stat

import lmdb

from .errors import CorruptStore, NotAStore, ReadOnlyStore, StoreClosed, StorePermissionError, ZenstoreError, from_os_error
from .faults import fault
from .lmdb_env import LOCK_SUFFIX, MIN_PAGE, WRITER_LOCK, Environment, acquire, may_access, release, translate

__all__ = ["CATALOG_FILE", "LOCK_TABLE", "WRITER_LOCK", "Catalog", "Txn"]

CATALOG_FILE = "catalog.mdb"
LOCK_TABLE = CATALOG_FILE + LOCK_SUFFIX  # LMDB's reader table (LMDB names it, for subdir=False)


def _check_catalog_file(root: str, path: str) -> None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise NotAStore(f"{root}: not a zenstore store (no {CATALOG_FILE})") from None
    except OSError as exc:
        raise from_os_error(exc, path, "looking for the catalog") from exc
    if not stat.S_ISREG(st.st_mode):
        raise NotAStore(f"{root}: not a zenstore store ({CATALOG_FILE} is not a regular file)")
    # LMDB initialises an empty (or too short) file as a new environment -- it would
    # write to the store even for a read-only open or verify. A real catalog holds at
    # least its two meta pages; refuse anything shorter untouched.
    if st.st_size < 2 * MIN_PAGE:
        raise CorruptStore(f"{path}: catalog file is truncated ({st.st_size} bytes)")
    if not may_access(path, os.R_OK):
        raise StorePermissionError(f"{path}: permission denied: reading a store needs read "
                                   "permission on its files")


class Catalog:
    """The catalog of one store: read and write transactions over its LMDB environment."""

    def __init__(self, root: str, databases: tuple[str, ...], *, optional: tuple[str, ...] = (),
                 readonly: bool, create: bool = False) -> None:
        path = os.path.join(root, CATALOG_FILE)
        if not create:
            _check_catalog_file(root, path)
        self.path = path
        self.readonly = readonly
        self._closed = True
        self._shared = acquire(path, create, tuple(databases), tuple(optional))
        if not readonly and not self._shared.writable:
            release(self._shared)
            raise ReadOnlyStore(f"{path}: catalog is not writable")
        self._closed = False
        self.dbs = self._shared.dbs

    @property
    def env(self) -> lmdb.Environment:
        return self._shared.env

    def map_size(self) -> int:
        """Bytes of address space the catalog's map takes in this process."""
        return self._shared.map_size()

    def read(self) -> _Transaction:
        """A read transaction (``with catalog.read() as txn``): one committed state."""
        return _Transaction(self, False)

    def write(self) -> _Transaction:
        """One write transaction, committed when the body returns. The body must write
        only through the ``Txn`` (it is replayed if the map has to grow)."""
        return _Transaction(self, True)

    def _error(self, exc: lmdb.Error, write: bool, pending: int = 0) -> ZenstoreError:
        if self._closed:
            return StoreClosed(f"{os.path.dirname(self.path)}: store is closed")
        return translate(exc, self.path, "writing the catalog" if write else "reading the catalog", pending)

    def open_optional(self, name: str) -> bool:
        """Whether optional sub-database ``name`` exists (its handle is then open for
        transactions begun from now on)."""
        if self._closed:
            raise StoreClosed(f"{os.path.dirname(self.path)}: store is closed")
        try:
            return self._shared.open_optional(name)
        except lmdb.Error as exc:
            raise self._error(exc, False) from exc

    def size_bytes(self) -> int:
        """Bytes of the catalog file in use (LMDB pages up to the last one written)."""
        return self._shared.used()

    def db_bytes(self, name: str) -> int:
        """Bytes of the pages of sub-database ``name`` (0 for an absent optional one)."""
        if name not in self.dbs:
            return 0
        with self.read() as txn:
            st = txn.txn.stat(self.dbs[name])
        return (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]

    def close(self) -> None:
        """Release the environment; transactions still open elsewhere finish first."""
        if not self._closed:
            self._closed = True
            release(self._shared)


class _Transaction:
    """The context manager of ``Catalog.read()`` / ``write()`` (a class: a generator-based
    one costs a microsecond more per transaction)."""

    __slots__ = ("catalog", "write", "txn")

    def __init__(self, catalog: Catalog, write: bool) -> None:
        self.catalog = catalog
        self.write = write
        self.txn: Txn | None = None

    def __enter__(self) -> Txn:
        catalog = self.catalog
        if catalog._closed:
            raise StoreClosed(f"{os.path.dirname(catalog.path)}: store is closed")
        shared = catalog._shared
        try:
            if self.write:
                shared.env.reader_check()  # dead readers' snapshots would keep every page in use
                shared.make_room()
            self.txn = Txn(shared, self.write)
        except lmdb.Error as exc:
            raise catalog._error(exc, self.write) from exc
        return self.txn

    def __exit__(self, kind, exc, tb) -> bool:
        txn = self.txn
        try:
            try:
                if kind is None and self.write:
                    txn.commit()
            finally:
                txn.end()
        except lmdb.Error as err:
            raise self.catalog._error(err, self.write, txn.pending) from err
        if kind is not None and issubclass(kind, lmdb.Error):  # raised by a lookup in the body
            raise self.catalog._error(exc, self.write, txn.pending) from exc
        if kind is None and self.write:
            # durable; the caller's code has not run yet. A signal that arrives while the
            # commit is in fsync is raised here by Python: callers must not treat an
            # exception from the block as proof that nothing was committed (the writer
            # checks the catalog's generation before it removes any file)
            fault("catalog.committed")
        return False


class Txn:
    """Typed access to the sub-databases within one LMDB transaction.

    A write transaction logs its puts and deletes. If the map fills, the environment is
    grown and the log replayed on a fresh LMDB transaction, which the body goes on
    with: it runs once and never sees MapFullError (there is one writer, so the fresh
    transaction starts from the same committed state).
    """

    def __init__(self, shared: Environment, write: bool) -> None:
        self._shared = shared
        self._log: list | None = [] if write else None
        self.pending = 0  # bytes of keys and values written so far
        self._ident: int | None = None
        self._ident, self.txn = shared.begin(write)
        self.dbs = shared.dbs
        self._created: dict = {}  # optional sub-databases this transaction created
        self._committed = False

    def has(self, db: str) -> bool:
        """Whether sub-database ``db`` can be used in this transaction (optional ones
        may be absent)."""
        return db in self.dbs

    def ensure_db(self, name: str) -> None:
        """Create optional sub-database ``name`` in this write transaction if it is absent
        (it exists for others once this transaction commits)."""
        if name not in self.dbs:
            self._write(("open_db", name, b"", None))

    def get(self, db: str, key: bytes) -> bytes | None:
        value = self.txn.get(key, db=self.dbs[db])
        return None if value is None else bytes(value)

    def put(self, db: str, key: bytes, value: bytes) -> None:
        self._write(("put", db, key, value))

    def delete(self, db: str, key: bytes) -> bool:
        return self._write(("delete", db, key, None))

    def count(self, db: str) -> int:
        return self.txn.stat(self.dbs[db])["entries"]

    def keys(self, db: str) -> list[bytes]:
        with self.txn.cursor(db=self.dbs[db]) as cur:
            return [bytes(k) for k in cur.iternext(keys=True, values=False)]

    def items(self, db: str):
        with self.txn.cursor(db=self.dbs[db]) as cur:
            for k, v in cur:
                yield bytes(k), bytes(v)

    # --- writes, replayed when the map grows -------------------------------------------------

    def _apply(self, op):
        kind, db, key, value = op
        if kind == "put":
            return self.txn.put(key, value, db=self.dbs[db])
        if kind == "open_db":
            with self._shared.dbi_lock:
                handle = self._shared.env.open_db(db.encode(), txn=self.txn, create=True)
            self.dbs = {**self.dbs, db: handle}  # shared once committed (commit())
            self._created[db] = handle
            return None
        return self.txn.delete(key, db=self.dbs[db])

    def _write(self, op):
        if self._log is None:
            return self._apply(op)  # LMDB refuses writes in a read transaction
        self._log.append(op)
        self.pending += len(op[2]) + (len(op[3]) if op[3] is not None else 0)
        while True:
            try:
                return self._apply(op)
            except lmdb.MapFullError:
                self._restart(len(self._log) - 1)

    def _restart(self, upto: int) -> None:
        """Drop the full transaction, grow the map, replay ``log[:upto]`` on a new one."""
        while True:
            self._drop()
            self._shared.grow(self.pending)
            self._ident, self.txn = self._shared.begin(True)
            self.dbs, self._created = self._shared.dbs, {}  # handles of the dropped one are gone
            try:
                for op in self._log[:upto]:
                    self._apply(op)
                return
            except lmdb.MapFullError:
                continue

    def commit(self) -> None:
        while True:
            try:
                self.txn.commit()
                self._committed = True
                self._shared.dbs.update(self._created)
                return
            except lmdb.MapFullError:
                self._restart(len(self._log))

    def _drop(self) -> None:
        try:
            self.txn.abort()
        except lmdb.Error:
            pass  # already ended by a failed commit
        if self._ident is not None:
            ident, self._ident = self._ident, None
            self._shared.leave(ident)

    def end(self) -> None:
        """Abort unless committed, and stop counting the transaction as open."""
        if not self._committed:
            self._drop()
        elif self._ident is not None:
            ident, self._ident = self._ident, None
            self._shared.leave(ident)
