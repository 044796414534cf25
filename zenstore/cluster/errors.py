"""Errors of a sharded store: which shards failed a call, and what the others did.

They derive from :class:`zenstore.ZenstoreError` like every deliberate zenstore error.
Bad input is refused in the driver, before any shard is asked, with the same error
classes and messages as :class:`zenstore.Store`; these classes are for what only a
cluster can do -- lose a shard, or commit a batch on some shards and not on others.
"""

from __future__ import annotations

from ..errors import ZenstoreError


def describe_failures(failed: dict) -> str:
    """``{shard: exception or calls.Failure}`` -> one line naming each shard and its error."""
    def one(e):
        e = getattr(e, "error", e)
        return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    return "; ".join(f"shard {s}: {one(e)}" for s, e in sorted(failed.items()))


class ShardError(ZenstoreError):
    """One or more shards failed a call. ``failed`` maps shard number -> the exception
    (the shard's own zenstore error, or the Ray error that says its actor died or did
    not answer); ``answered`` lists the shards that did answer."""

    def __init__(self, message: str, *, failed: dict, answered=()) -> None:
        super().__init__(message)
        self.failed = dict(failed)
        self.answered = tuple(answered)

    def __reduce__(self):  # Ray and multiprocessing pickle errors: keep the attributes
        return (_rebuild, (type(self), self.args[0], self.__dict__))


class ShardUnavailable(ShardError):
    """A read needs shards that are down (actor dead, restarting past the timeout, or a
    shard directory that cannot be read). Nothing was written. A search can be asked
    for the shards that did answer with ``partial=True``."""


class PartialWrite(ShardError):
    """A write committed on some shards and not on others.

    ``committed``: shards whose part of the batch is durable. ``failed``: the others;
    ``unknown``: those of them whose outcome is not known (the actor died or did not
    answer while it held the batch: its part may or may not have committed). Every
    shard's part is atomic, so each id of the batch is either fully written or not at
    all. Retrying the same batch with ``upsert`` makes it whole: it rewrites the
    committed parts with the same values and writes the rest.
    """

    def __init__(self, message: str, *, failed: dict, committed=(), unknown=()) -> None:
        super().__init__(message, failed=failed, answered=committed)
        self.committed = tuple(committed)
        self.unknown = tuple(unknown)


def _rebuild(cls, message, state):
    err = cls.__new__(cls)
    Exception.__init__(err, message)
    err.__dict__.update(state)
    return err


__all__ = ["ShardError", "ShardUnavailable", "PartialWrite"]
