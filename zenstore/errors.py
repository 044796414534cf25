"""One exception tree for everything zenstore raises on purpose.

Every class derives from :class:`ZenstoreError`, and where a built-in exception
means the same thing the class inherits it too, so ``except KeyError`` around
``store.get(...)`` keeps working for callers who do not know zenstore.
"""

from __future__ import annotations


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


class StoreLocked(ZenstoreError):
    """Another writer (thread or process) holds the store's write lock."""


class ReadOnlyStore(ZenstoreError, PermissionError):
    """A write was attempted on a store opened with ``readonly=True``."""


class StoreClosed(ZenstoreError):
    """The store has been closed."""


# --- bulk loading ------------------------------------------------------------------------------


class IngestError(ZenstoreError):
    """An input file cannot be read, or has a bad row under ``on_error="fail"``."""


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
    "StoreLocked",
    "ReadOnlyStore",
    "StoreClosed",
    "IngestError",
    "InvalidFilter",
]
