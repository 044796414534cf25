"""One exception tree for everything zenstore raises on purpose.

Every class derives from :class:`ZenstoreError`, and where a built-in exception
means the same thing the class inherits it too, so ``except KeyError`` around
``store.get(...)`` keeps working for callers who do not know zenstore.
"""

from __future__ import annotations

import errno as _errno
import os as _os


class ZenstoreError(Exception):
    """Base class of every error zenstore raises deliberately."""


# --- bad arguments -------------------------------------------------------------------------


class InvalidArgument(ZenstoreError, ValueError):
    """An argument has the wrong type, shape, range or value."""


class DimensionMismatch(InvalidArgument):
    """Vectors (or a query) do not have the store's dimension."""


class InvalidVector(InvalidArgument):
    """A vector contains NaN or infinity (or is all zeros under the cosine metric)."""


class EmptyBatch(InvalidArgument):
    """A call that needs at least one item got none."""


class DuplicateId(InvalidArgument):
    """An id appears twice in a batch, or ``add`` got an id that is already stored."""


class IdTypeMismatch(InvalidArgument):
    """Ids of the wrong kind (str given to a store of int ids, or the reverse)."""


class IdNotFound(ZenstoreError, KeyError):
    """An id is not stored (or has been deleted)."""

    def __str__(self) -> str:  # KeyError's repr-quoting makes messages hard to read
        return str(self.args[0]) if self.args else "id not found"


# --- the store on disk ---------------------------------------------------------------------


class NotAStore(ZenstoreError, FileNotFoundError):
    """The path is missing or is not a zenstore directory."""


class StoreExists(ZenstoreError, FileExistsError):
    """``Store.create`` was pointed at a path that already holds something."""


class FormatVersionError(ZenstoreError):
    """The store was written by a newer (or unknown) on-disk format version."""


class CorruptStore(ZenstoreError):
    """A file or catalog record fails validation: bad magic, checksum, size or contents."""


class FileMissing(CorruptStore):
    """A file the catalog lists is not there. Readers that meet it while a writer merges
    retry on the newer manifest; when the catalog has not moved, the store is damaged."""


class StoreLocked(ZenstoreError):
    """Another writer (thread or process) holds the store's write lock."""


class ReadOnlyStore(ZenstoreError, PermissionError):
    """A write was attempted on a store opened with ``readonly=True``."""


class StoreClosed(ZenstoreError):
    """The store has been closed."""


# --- the operating system ------------------------------------------------------------------


class StoreIOError(ZenstoreError, OSError):
    """The operating system failed an operation on a store file (an I/O error, a missing
    permission, an exhausted resource). Not corruption: the message names the file and
    the cause, and nothing committed is lost. ``errno`` is set when the OS gave one."""


class StorePermissionError(StoreIOError, PermissionError):
    """This process lacks a permission a store file needs (read permission for readers)."""


class ResourceExhausted(StoreIOError):
    """A system resource ran out: address space (``ulimit -v``) for the memory maps, the
    catalog's 256 reader slots, the catalog's map at ``ZENSTORE_MAP_SIZE``, disk space."""


class StorageFull(ResourceExhausted):
    """No space for a write: the device or quota is full, or the catalog reached
    ``ZENSTORE_MAP_SIZE``. The write was not applied; free space (or raise the limit) and
    retry."""


# --- bulk loading ------------------------------------------------------------------------------


class IngestError(ZenstoreError):
    """An input file cannot be read, or has a bad row under ``on_error="fail"``."""


# --- embedders -------------------------------------------------------------------------------


class EmbedderError(ZenstoreError):
    """An embedder cannot be loaded, its server failed or refused, or it returned vectors
    that are not a finite (n, dim) matrix. HTTP failures carry ``url``, ``status`` (None
    when no answer came) and ``server_message``."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None,
                 server_message: str | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status
        self.server_message = server_message


# --- payload filters -----------------------------------------------------------------------------


class InvalidFilter(InvalidArgument):
    """A payload filter is malformed; the message names the offending part by its path."""


__all__ = [
    "ZenstoreError",
    "InvalidArgument",
    "DimensionMismatch",
    "InvalidVector",
    "EmptyBatch",
    "DuplicateId",
    "IdTypeMismatch",
    "IdNotFound",
    "NotAStore",
    "StoreExists",
    "FormatVersionError",
    "CorruptStore",
    "FileMissing",
    "StoreLocked",
    "ReadOnlyStore",
    "StoreClosed",
    "StoreIOError",
    "StorePermissionError",
    "ResourceExhausted",
    "StorageFull",
    "IngestError",
    "EmbedderError",
    "InvalidFilter",
]


def from_os_error(exc: OSError, path: str, doing: str) -> ZenstoreError:
    """The zenstore error for an OS failure on ``path`` while ``doing`` (e.g. "writing a
    data file"), naming the file and the real cause (never CorruptStore)."""
    code = exc.errno
    cause = _os.strerror(code) if code else str(exc)
    if code in (_errno.ENOSPC, _errno.EDQUOT):
        what = "on the device" if code == _errno.ENOSPC else "(disk quota exceeded)"
        err: ZenstoreError = StorageFull(f"{path}: no space left {what} while {doing}; nothing "
                                         "was committed: free space and retry")
    elif code in (_errno.EACCES, _errno.EPERM):
        err = StorePermissionError(f"{path}: permission denied while {doing}")
    elif code == _errno.EROFS:
        err = ReadOnlyStore(f"{path}: the file system is read-only ({doing})")
    elif code == _errno.ENOMEM:
        err = ResourceExhausted(f"{path}: out of memory or address space while {doing} "
                                "(a memory limit such as ulimit -v?)")
    else:
        err = StoreIOError(f"{path}: {cause} while {doing}")
    err.errno = code
    return err

