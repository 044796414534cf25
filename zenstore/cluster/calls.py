"""Calls on many shards at once, and what came back: results, or failures.

Both backends (``local.py``: shards in this process, ``actor.py``: one Ray actor per
shard) submit a method call per shard and gather the answers into ``{shard: result}``
and ``{shard: Failure}``. A :class:`Failure` says whether the shard itself raised (its
store refused the call: nothing of it was written, since every store call is atomic) or
whether the outcome is unknown (the actor died, or did not answer in time).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    error: BaseException
    raised_by_shard: bool  # False: the process died / timed out; a write's outcome is unknown

    def __str__(self) -> str:
        return f"{type(self.error).__name__}: {self.error}"


class ShardCalls:
    """What a backend offers (see the module docstring)."""

    shards: int

    def submit(self, shard: int, method: str, *args):
        raise NotImplementedError

    def gather(self, pending: dict, timeout: float | None = None) -> tuple[dict, dict]:
        raise NotImplementedError

    def shared(self, value):
        """``value`` in the form that is cheapest to pass to several shards."""
        return value

    def call_all(self, method: str, *args, shards=None, timeout: float | None = None) -> tuple[dict, dict]:
        targets = range(self.shards) if shards is None else shards
        return self.gather({s: self.submit(s, method, *args) for s in targets}, timeout)

    @property
    def handles(self) -> tuple:
        return ()

    def close(self) -> None:
        raise NotImplementedError
