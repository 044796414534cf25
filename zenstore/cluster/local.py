"""The ``local`` backend: every shard opened in this process, calls run on a thread pool.

Used for in-process reads of a Ray-backed store (read-only handles beside the writer
actors: no inter-process hop per query) and, with writable handles, as a backend of its
own for sharded stores on one machine without Ray. The numba kernels release the GIL,
so shards searched on different threads run in parallel.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor, wait

from .calls import Failure, ShardCalls
from .union import UnionSearch, union_jobs
from .worker import ShardWorker


class LocalShards(ShardCalls):
    def __init__(self, paths: list[str], readonly: bool, *, verify: bool = True, threads: int | None = None) -> None:
        self.shards = len(paths)
        self.workers: list[ShardWorker] = []
        try:
            for p in paths:
                self.workers.append(ShardWorker(p, readonly, verify=verify))
        except BaseException:
            self.close()
            raise
        n = threads or min(self.shards, 2 * (os.cpu_count() or 1))
        self.union = UnionSearch([w.store for w in self.workers])
        self.pool = None
        if self.shards > 1:
            self.pool = ThreadPoolExecutor(max_workers=max(1, n), thread_name_prefix="zenstore-shard")

    def run(self, jobs: dict, **kwargs) -> tuple[dict, dict]:
        """As ``ShardCalls.run``; a search of several shards runs as one search of their
        union (``union.py``): its answer is given as the first shard's, the others answer
        empty, so the caller's merge is unchanged."""
        united = union_jobs(jobs)
        if united is not None:
            method, args, filter_ids = united
            members = sorted(jobs)
            try:
                answer = self.union.run(members, method, args, filter_ids)
            except BaseException as exc:  # noqa: BLE001 - each shard's failure, as per shard
                return {}, {s: Failure(exc, True) for s in members}
            if answer is not None:
                return {s: answer if s == members[0] else _empty(method, answer) for s in members}, {}
        return super().run(jobs, **kwargs)

    def submit(self, shard: int, method: str, *args):
        fn = getattr(self.workers[shard], method)
        if self.pool is None:  # one shard: call inline, no thread hop
            fut: Future = Future()
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to gather
                fut.set_exception(exc)
            return fut
        return self.pool.submit(fn, *args)

    def gather(self, pending: dict, timeout: float | None = None) -> tuple[dict, dict]:
        if not pending:
            return {}, {}
        done, _ = wait(list(pending.values()), timeout=timeout)
        results, failures = {}, {}
        for shard, fut in pending.items():
            if fut not in done:
                failures[shard] = Failure(TimeoutError(f"no answer within {timeout} s"), False)
                continue
            exc = fut.exception()
            if exc is None:
                results[shard] = fut.result()
            else:
                failures[shard] = Failure(exc, True)
        return results, failures

    def close(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown(wait=True)
            self.pool = None
        for w in self.workers:
            w.close()
        self.workers = []


def _empty(method: str, answer):
    """An answer with no hits, shaped like ``answer``."""
    if method == "search":
        return []
    ids, scores = answer
    return ids[:, :0], scores[:, :0]
