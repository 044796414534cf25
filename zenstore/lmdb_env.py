"""One LMDB environment per catalog file and process: opening, sizing, growing, closing.

What LMDB needs from its environment, and what happens here when it is missing
(docs/reliability.md, "Hostile environments"):
- **Reader slots.** A read transaction holds a slot of the lock table
  (``catalog.mdb-lock``, 256 slots). A process killed inside one leaves the slot behind
  with its snapshot pinned: the writer can reuse no page, so the file grows with every
  write, and once every slot is lost all reads fail. ``reader_check`` (about a
  microsecond) frees the slots of dead processes when an environment is opened, before
  every write transaction, and when the table is full (the transaction is retried).
- **The map.** LMDB maps the whole file. The map is sized from the file (``4 x``, at
  least ``MAP_STEP``) instead of 1 TiB, which ``ulimit -v`` refused; the writer grows it
  before a write once the file passes half of it, and when a write fills it anyway,
  grows it and replays the transaction's logged puts and deletes on a fresh transaction
  (``Txn``), so callers never see it. Readers remap when the writer outgrew their map.
  ``ZENSTORE_MAP_SIZE`` caps the map (``StorageFull`` at the cap). Remapping waits until
  no transaction of this process is open on the environment.
- **Readers without write permission** cannot register in the lock table, and a writer
  does not see unregistered readers (it may reuse pages they read). They open without
  the table (``lock=False``) and hold a shared flock on ``writer.lock`` -- which every
  writer takes exclusively -- while open: a running writer keeps them out, and they keep
  writers out (both get ``StoreLocked``).
- **Closing** never breaks a transaction still open in another thread (or an unfinished
  iteration): the environment is closed when the last of them ends; new transactions on
  a closed Catalog raise ``StoreClosed``.
"""


from __future__ import annotations

import errno
import fcntl
import mmap
import os
import resource
import threading
import time

import lmdb

from .errors import (
    CorruptStore,
    InvalidArgument,
    ResourceExhausted,
    StorageFull,
    StoreIOError,
    StoreLocked,
    StorePermissionError,
    ZenstoreError,
    from_os_error,
)

LOCK_SUFFIX = "-lock"  # LMDB's reader table (LMDB names it, for subdir=False)
WRITER_LOCK = "writer.lock"  # the store's writer lock: writers flock it exclusively
MAX_READERS = 256
MAP_SIZE_ENV = "ZENSTORE_MAP_SIZE"
MAP_STEP = 64 << 20  # the map's minimum size and granularity (address space, not memory)
MIN_PAGE = 4096  # LMDB's page size is the OS page size, at least 4 KiB
# Seconds a needed remap waits for this process's other transactions to end (new ones
# wait meanwhile). Growing early, before a write, never waits: it happens only when no
# transaction is open, else it is tried again at the next write.
REMAP_TIMEOUT = 10.0
# LMDB's own reports of a damaged file (bad page type, page beyond the end, ...)
_DAMAGED = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.IncompatibleError,
            lmdb.VersionMismatchError)


def map_limit() -> int | None:
    """The cap ``ZENSTORE_MAP_SIZE`` (bytes) puts on a catalog's map; None: no cap."""
    raw = os.environ.get(MAP_SIZE_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise InvalidArgument(f"{MAP_SIZE_ENV}={raw!r}: must be a positive number of bytes")
    return value


def _round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def _map_plan(used: int, need: int = 0) -> int:
    """The map for a file of ``used`` bytes about to take ``need`` more: four times the
    file, room for four times ``need``, at least ``MAP_STEP``, a multiple of it."""
    return _round_up(max(MAP_STEP, 4 * used, used + 4 * need), MAP_STEP)


def _address_space_free(nbytes: int) -> bool:
    """Whether ``nbytes`` more address space can be mapped now. Only an address-space
    limit (``ulimit -v``) refuses that in practice: reserve it, release it at once."""
    if nbytes <= 0 or resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY:
        return True
    try:
        probe = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)
    except OSError:
        return False
    probe.close()
    return True


def _address_space_note() -> str:
    soft = resource.getrlimit(resource.RLIMIT_AS)[0]
    if soft == resource.RLIM_INFINITY:
        return "no address-space limit is set"
    return f"the address-space limit (ulimit -v) is {soft} bytes; raise it"


def may_access(path: str, mode: int) -> bool:
    try:
        return os.access(path, mode, effective_ids=os.access in os.supports_effective_ids)
    except OSError:
        return False


def _may_write_lock_table(path: str) -> bool:
    """Whether this process can register readers in LMDB's lock table (or create it)."""
    table = path + "-lock"
    if os.path.lexists(table):
        return may_access(table, os.R_OK | os.W_OK)
    return may_access(os.path.dirname(path) or ".", os.W_OK | os.X_OK)


def _keep_writers_out(root: str, path: str) -> int:
    """A reader that cannot write the lock table is invisible to a writer, which may then
    reuse the pages it reads: hold a shared flock on ``writer.lock`` (which every writer
    takes exclusively) while open, so that the two exclude each other. Returns the fd."""
    table = path + "-lock"
    lock = os.path.join(root, WRITER_LOCK)
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise StorePermissionError(
            f"{path}: cannot read safely: this user may not write {table} (LMDB's reader table) "
            f"and the store has no {WRITER_LOCK} that would keep a writer out meanwhile; give "
            f"this user write access to {table} (or to {root} while it does not exist)") from None
    except OSError as exc:
        raise from_os_error(exc, lock, "taking the readers' shared lock") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(
            f"{root}: a writer has this store open, and this user may not write {table}, the "
            f"table through which readers run beside a writer: read when no writer runs, or "
            f"give this user write access to {table}") from None
    except OSError as exc:
        os.close(fd)
        raise from_os_error(exc, lock, "taking the readers' shared lock") from exc
    return fd


def _errno_of(exc: lmdb.Error) -> int:
    """The OS error number behind an LMDB error, 0 for LMDB's own error codes."""
    if isinstance(exc, lmdb.MemoryError):
        return errno.ENOMEM
    if isinstance(exc, lmdb.DiskError):
        return errno.ENOSPC
    code = getattr(exc, "code", 0)
    if isinstance(code, int) and 0 < code < 4096:
        return code
    text = str(exc)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EACCES, errno.EPERM, errno.EROFS):
        if os.strerror(code) in text:
            return code
    return 0


def _disk_looks_full(directory: str, pending: int) -> bool:
    """LMDB reports a write cut short by a full disk as EIO: tell the two apart."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    return free < max(1 << 20, 2 * pending)


def translate(exc: lmdb.Error, path: str, doing: str, pending: int = 0) -> ZenstoreError:
    """The zenstore error for an LMDB error raised while ``doing`` (never a raw lmdb.Error)."""
    if isinstance(exc, _DAMAGED):
        return CorruptStore(f"{path}: catalog file is damaged ({exc})")
    if isinstance(exc, lmdb.ReadersFullError):
        return _readers_full(path)
    if isinstance(exc, lmdb.MapFullError):
        return StorageFull(f"{path}: the catalog's map is full while {doing}; nothing was committed")
    if isinstance(exc, lmdb.PanicError):
        return StoreIOError(f"{path}: the catalog cannot be used after an earlier failed write ({exc}); "
                            "close every Store on this store and open it again (committed data is intact)")
    if isinstance(exc, lmdb.BadValsizeError):
        return InvalidArgument(f"{path}: a key or value is too large for the catalog ({exc})")
    code = _errno_of(exc)
    if code == errno.EIO and pending and _disk_looks_full(os.path.dirname(path) or ".", pending):
        code = errno.ENOSPC
    if code == errno.EIO:
        err = StoreIOError(f"{path}: input/output error while {doing}: the device reported a failure"
                           + ("; nothing of this write was committed" if pending else ""))
        err.errno = code
        return err
    if code:
        return from_os_error(OSError(code, os.strerror(code)), path, doing)
    return StoreIOError(f"{path}: {doing} failed: {exc}")


def _readers_full(path: str) -> ResourceExhausted:
    return ResourceExhausted(
        f"{path}: all {MAX_READERS} catalog reader slots are held by live readers (open read "
        "transactions: searches in progress, unfinished iter_records(), reader processes); "
        "finish or close some")


class Environment:
    """The LMDB environment of one catalog file in this process, shared by every Catalog
    on it (LMDB forbids opening a file twice in a process), with a count of the
    transactions open on it: remapping and closing need none to be open."""

    def __init__(self, path: str, env: lmdb.Environment, dbs: dict, writable: bool,
                 flock_fd: int | None, limit: int | None) -> None:
        self.path = path
        self.env = env
        self.dbs = dbs
        self.writable = writable
        self.lockless = flock_fd is not None
        self.flock_fd = flock_fd
        self.limit = limit
        self.psize = env.stat()["psize"]
        self.pid = os.getpid()
        self.refs = 0  # Catalogs holding it (changed under _REGISTRY_LOCK)
        self.broken: str | None = None  # why it cannot be used any more
        self.closed = False
        # Entered as ``with self._lock`` (a C lock), never ``with self._cond``: Condition's
        # __enter__ is Python code, and a Ctrl-C raised in it after the acquire leaves the
        # lock held -- the next transaction of the thread then waits forever (seen by
        # tests/test_signals.py with a Store kept in use after interrupts).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._open: dict[int, int] = {}  # thread ident -> transactions it has open
        self._count = 0
        self._exclusive = False
        self.dbi_lock = threading.Lock()  # LMDB: no two mdb_dbi_open at once in a process

    # --- transactions open on the environment ----------------------------------------------

    def enter(self) -> int:
        ident = threading.get_ident()
        with self._lock:
            held = self._open.get(ident, 0)
            if not held:  # a thread that has one open must not wait (deadlock)
                while self._exclusive:
                    self._cond.wait()
            self._open[ident] = held + 1
            self._count += 1
        return ident

    def leave(self, ident: int) -> None:
        with self._lock:
            left = self._open[ident] - 1
            if left:
                self._open[ident] = left
            else:
                del self._open[ident]
            self._count -= 1
            idle = self._count == 0
            if idle:
                self._cond.notify_all()
        if idle and self.refs == 0:  # the last Catalog closed while this transaction ran
            _close_if_unused(self)

    def idle(self) -> bool:
        with self._lock:
            return self._count == 0

    def alone(self, fn, timeout: float) -> bool:
        """Run ``fn()`` while no transaction of this process is open on the environment;
        False if this thread has one open, or the others did not end within ``timeout``."""
        ident = threading.get_ident()
        deadline = time.monotonic() + timeout
        with self._lock:
            if self._open.get(ident):
                return False
            while self._exclusive:  # another thread is remapping
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            self._exclusive = True
            try:
                while self._count:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
                fn()
                return True
            finally:
                self._exclusive = False
                self._cond.notify_all()

    def begin(self, write: bool) -> tuple[int, lmdb.Transaction]:
        """A new LMDB transaction, counted as open: ``(ident, txn)``. Frees the slots of
        dead readers when the table is full; follows a writer that outgrew the map."""
        checked = False
        for _attempt in range(8):
            ident = self.enter()
            try:
                return ident, self.env.begin(write=write, buffers=False)
            except lmdb.ReadersFullError:
                self.leave(ident)
                if checked or not self.env.reader_check():
                    raise _readers_full(self.path) from None
                checked = True
            except lmdb.MapResizedError:
                self.leave(ident)
                self.follow()
            except BaseException:
                self.leave(ident)
                raise
        raise ResourceExhausted(f"{self.path}: the catalog keeps outgrowing this process's map")

    def open_optional(self, name: str) -> bool:
        """Open the handle of an optional sub-database if it exists now; whether it is open.
        Only transactions begun afterwards can use a handle opened here."""
        if name in self.dbs:
            return True
        with self.dbi_lock:
            if name in self.dbs:
                return True
            ident = self.enter()  # counted as open: a remap must not run meanwhile
            try:
                handle = _open_optional_db(self.env, name)
            finally:
                self.leave(ident)
            if handle is None:
                return False
            self.dbs[name] = handle
            return True

    # --- the map ------------------------------------------------------------------------------

    def used(self) -> int:
        """Bytes of the file in use (up to the last page of the latest committed state)."""
        return (self.env.info()["last_pgno"] + 1) * self.psize

    def map_size(self) -> int:
        return self.env.info()["map_size"]

    def _remap(self, sizes: list[int], why: str) -> None:
        """Inside ``alone``: remap to the first of ``sizes`` the address space allows."""
        current = self.map_size()
        for size in sizes:
            if size <= current:
                return
            if _address_space_free(size - current):
                try:
                    self.env.set_mapsize(size)
                except lmdb.Error as exc:
                    self.broken = f"remapping the catalog to {size} bytes failed ({exc})"
                    raise StoreIOError(f"{self.path}: {self.broken}; close every Store on it and "
                                       "open it again") from exc
                return
        raise ResourceExhausted(f"{self.path}: cannot map {sizes[-1]} bytes of the catalog ({why}): "
                                f"not enough address space ({_address_space_note()})")

    def make_room(self) -> None:
        """Before a write: grow the map once the file has passed half of it."""
        info = self.env.info()
        used = (info["last_pgno"] + 1) * self.psize
        if 2 * used <= info["map_size"] or (self.limit is not None and info["map_size"] >= self.limit):
            return
        target = _map_plan(used) if self.limit is None else min(_map_plan(used), self.limit)
        try:
            self.alone(lambda: self._remap([target], "growing ahead of the writes"), 0.0)
        except ResourceExhausted:
            pass  # the write may still fit; if it does not, grow() says why

    def grow(self, need: int) -> None:
        """A write of about ``need`` bytes filled the map: at least double it, or raise
        StorageFull at ``ZENSTORE_MAP_SIZE`` / ResourceExhausted without address space."""
        current = self.map_size()
        if self.limit is not None and current >= self.limit:
            raise StorageFull(f"{self.path}: the catalog reached {MAP_SIZE_ENV}={self.limit} bytes; "
                              f"the write was not applied: raise or unset {MAP_SIZE_ENV}")

        def remap() -> None:
            now, used = self.map_size(), self.used()
            if now > current:  # another thread grew it meanwhile
                return
            sizes = [max(_map_plan(used, need), 2 * now), _round_up(max(used + 2 * need, now) + MAP_STEP, MIN_PAGE)]
            if self.limit is not None:
                sizes = [min(s, self.limit) for s in sizes]
            self._remap(sorted(set(sizes), reverse=True), f"a write of {need} bytes")

        if not self.alone(remap, REMAP_TIMEOUT):
            raise ResourceExhausted(
                f"{self.path}: the catalog's map is full and cannot grow while this thread (or, for "
                f"{REMAP_TIMEOUT:.0f} s, another) keeps a read open on it, such as an unfinished "
                "iter_records(); the write was not applied")

    def follow(self) -> None:
        """A writer grew the file beyond this process's map: remap to cover it."""
        def remap() -> None:
            used = self.used()
            if used > self.map_size():
                self._remap([_map_plan(used), _round_up(used, MIN_PAGE)], "following the writer")

        if not self.alone(remap, REMAP_TIMEOUT):
            raise ResourceExhausted(
                f"{self.path}: the catalog grew beyond this process's map, which cannot be remapped "
                f"while this thread (or, for {REMAP_TIMEOUT:.0f} s, another) keeps a read open on it, "
                "such as an unfinished iter_records()")

    def close(self) -> None:
        self.closed = True
        try:
            self.env.close()
        finally:
            if self.flock_fd is not None:
                os.close(self.flock_fd)
                self.flock_fd = None


_REGISTRY_LOCK = threading.Lock()
_REGISTRY: dict[str, Environment] = {}


def acquire(path: str, create: bool, databases: tuple[str, ...], optional: tuple[str, ...] = ()) -> Environment:
    key = os.path.realpath(path)
    with _REGISTRY_LOCK:
        shared = _REGISTRY.get(key)
        if shared is not None and (shared.pid != os.getpid() or shared.closed):
            del _REGISTRY[key]  # inherited through fork: unusable here, and not ours to close
            shared = None
        if shared is None:
            shared = _open_environment(path, create, databases, optional)
            _REGISTRY[key] = shared
        if shared.broken:
            raise StoreIOError(f"{path}: {shared.broken}; close every Store on it and open it again")
        shared.refs += 1
        return shared


def release(shared: Environment) -> None:
    with _REGISTRY_LOCK:
        shared.refs -= 1
    _close_if_unused(shared)


def _close_if_unused(shared: Environment) -> None:
    with _REGISTRY_LOCK:
        if shared.refs or shared.closed or not shared.idle():
            return
        key = os.path.realpath(shared.path)
        if _REGISTRY.get(key) is shared:
            del _REGISTRY[key]
        shared.close()


def _open_environment(path: str, create: bool, databases: tuple[str, ...],
                      optional: tuple[str, ...] = ()) -> Environment:
    root = os.path.dirname(path) or "."
    limit = map_limit()
    registers = create or _may_write_lock_table(path)  # can take a slot in the reader table
    writable = create or (registers and may_access(path, os.W_OK))
    flock_fd = None if registers else _keep_writers_out(root, path)
    try:
        try:
            used = 0 if create else os.path.getsize(path)
        except OSError as exc:
            raise from_os_error(exc, path, "opening the catalog") from exc
        env = _open_lmdb(path, create=create, writable=writable, lock=flock_fd is None, used=used, limit=limit,
                         n_databases=len(databases) + len(optional))
        try:
            dbs = {n: env.open_db(n.encode(), create=create) for n in databases}
            for name in optional:
                handle = _open_optional_db(env, name)
                if handle is not None:
                    dbs[name] = handle
            if flock_fd is None:
                env.reader_check()  # slots left by readers that died
        except lmdb.Error as exc:
            env.close()
            if isinstance(exc, (lmdb.NotFoundError, lmdb.IncompatibleError, lmdb.BadDbiError) + _DAMAGED):
                raise CorruptStore(f"{path}: catalog lacks zenstore tables ({exc})") from exc
            raise translate(exc, path, "opening the catalog") from exc
    except BaseException:
        if flock_fd is not None:
            os.close(flock_fd)
        raise
    return Environment(path, env, dbs, writable, flock_fd, limit)


def _open_optional_db(env: lmdb.Environment, name: str):
    """The handle of optional sub-database ``name``, or None if it does not exist. Its
    name is a key of LMDB's main database, looked up first in a read transaction; only
    an existing one is opened: in a writable environment py-lmdb opens handles in a write
    transaction (one opened in a read transaction dies with it), which commits nothing."""
    with env.begin(write=False) as txn:
        if txn.get(name.encode()) is None:
            return None
    try:
        return env.open_db(name.encode(), create=False)
    except lmdb.NotFoundError:
        return None


def _open_lmdb(path: str, *, create: bool, writable: bool, lock: bool, used: int,
               limit: int | None, n_databases: int) -> lmdb.Environment:
    floor = _round_up(max(used, 1 << 20), MIN_PAGE)
    sizes = {_map_plan(used), max(floor, _round_up(2 * used, MIN_PAGE)), floor}
    if limit is not None:
        sizes = {min(s, limit) for s in sizes}  # LMDB raises a map below the file's size to it
    for size in sorted(sizes, reverse=True):
        try:
            return lmdb.open(path, subdir=False, map_size=size, max_dbs=n_databases + 1,
                             readonly=not writable, create=create, lock=lock, readahead=False,
                             max_readers=MAX_READERS)
        except lmdb.MemoryError:
            continue  # try a smaller map
        except lmdb.Error as exc:
            code = _errno_of(exc)
            if code in (errno.EACCES, errno.EPERM):
                raise StorePermissionError(
                    f"{path}: permission denied opening the catalog (a reader needs read permission "
                    "on the store's files)") from exc
            if code in (errno.EIO, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EAGAIN):
                raise translate(exc, path, "opening the catalog") from exc
            if "already open" in str(exc):  # py-lmdb: the environment came through fork()
                raise StoreIOError(
                    f"{path}: this process inherited the store's catalog from its parent (opened "
                    "before fork()), and LMDB cannot open it again here: open stores after forking, "
                    "or start workers with the 'spawn' method") from exc
            raise CorruptStore(f"{path}: cannot open catalog ({exc})") from exc
    raise ResourceExhausted(f"{path}: cannot map the catalog ({used} bytes): not enough address "
                            f"space ({_address_space_note()})")


