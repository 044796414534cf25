"""Calls on many shards at once, and what came back: results, or failures.

Both backends (``local.py``: shards in this process, ``actor.py``: one Ray actor per
shard) submit a method call per shard and gather the answers into ``{shard: result}``
and ``{shard: Failure}``. A :class:`Failure` says whether the shard itself raised (its
store refused the call: nothing of it was written, since every store call is atomic) or
whether the outcome is unknown (the actor died, or did not answer in time), and whether
the shard is coming back (a Ray actor restarting), so that the call can be sent again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

RETRY_FIRST_DELAY = 0.05
RETRY_MAX_DELAY = 1.0


@dataclass(frozen=True)
class Failure:
    error: BaseException
    raised_by_shard: bool  # False: the process died / timed out; a write's outcome is unknown
    retryable: bool = False  # the shard is restarting: the same (idempotent) call may be sent again

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

    def run(self, jobs: dict, *, timeout: float | None = None, retry_jobs: dict | None = None,
            restart_wait: float = 0.0) -> tuple[dict, dict]:
        """Run ``{shard: (method, args)}`` in parallel. Shards that fail because they are
        restarting get ``retry_jobs[shard]`` (default: the same job) again, with backoff,
        for up to ``restart_wait`` seconds. Only pass idempotent retry jobs."""
        pending = {s: self.submit(s, m, *a) for s, (m, a) in jobs.items()}
        return self.settle(pending, jobs, timeout=timeout, retry_jobs=retry_jobs, restart_wait=restart_wait)

    def settle(self, pending: dict, jobs: dict, *, timeout: float | None = None, retry_jobs: dict | None = None,
               restart_wait: float = 0.0) -> tuple[dict, dict]:
        """Gather calls already submitted for ``jobs`` and retry them as :meth:`run` does."""
        results, failures = self.gather(pending, timeout)
        deadline = time.monotonic() + restart_wait
        delay = RETRY_FIRST_DELAY
        while True:
            again = sorted(s for s, f in failures.items() if f.retryable)
            if not again or time.monotonic() + delay > deadline:
                return results, failures
            time.sleep(delay)
            delay = min(2 * delay, RETRY_MAX_DELAY)
            todo = retry_jobs or jobs
            more, still = self.gather({s: self.submit(s, todo[s][0], *todo[s][1]) for s in again}, timeout)
            results.update(more)
            failures = {**{s: f for s, f in failures.items() if s not in again}, **still}

    def call_all(self, method: str, *args, shards=None, timeout: float | None = None,
                 restart_wait: float = 0.0) -> tuple[dict, dict]:
        targets = range(self.shards) if shards is None else shards
        return self.run({s: (method, args) for s in targets}, timeout=timeout, restart_wait=restart_wait)

    @property
    def handles(self) -> tuple:
        return ()

    def close(self) -> None:
        raise NotImplementedError
