"""Read-only shards on Ray served by a few reader actors, one round trip per actor per call.

A read scatters to every shard. With one actor per shard, a query costs S Ray round
trips, and each round trip is a chain of thread and process wake-ups (driver -> actor's
RPC thread -> its task thread -> back), which on a busy machine costs milliseconds, not
the work of the search. A reader needs no ownership (only a shard's writer must be
unique), so a read-only Ray open groups the shards: ``groups`` actors (default: one per
Ray node), each holding read-only handles of its shards (``LocalShards``: searched on a
thread pool, the numba kernels release the GIL) and answering all of them in one call.
A query then costs one round trip per group -- on one machine, one in all.

Shard ``s`` belongs to group ``s % groups``; the actors are spread over the nodes
(``SPREAD``). They restart when their process dies and Ray retries their calls (every
call is a read). Failures stay per shard: a shard's own error comes back as that shard's
failure; a group actor that died or did not answer in time fails each of its shards.

``compiled=True`` sends reads through a Ray Compiled Graph (``ray.dag``, beta) over the
reader actors instead of ordinary actor calls: a round trip on shared-memory channels
instead of RPC (measured on a 2-vCPU VM: 0.58 ms instead of 2.45 ms for a small call,
docs/scaling.md), at a price: each reader actor's channel loop polls while it waits,
~0.5 core-seconds per second when idle (measured here). So it is opt-in, for a node that
serves latency-bound reads and has the core to spare. Any failure of the graph (an actor
died, no answer in time) tears it down and the call is made again the ordinary way, with
its retries and per-shard failures; the graph is compiled again ``GRAPH_RETRY`` seconds
later. One read at a time uses the graph; a concurrent read takes the ordinary path.
"""

from __future__ import annotations

import os
import threading
import time

from .actor import DEFAULT_ACTOR_OPTIONS, blas_env, close_actors, collect, import_ray
from .calls import Failure, ShardCalls
from .local import LocalShards


class ShardGroupWorker:
    """Read-only handles of some shards (``{shard: path}``) and the calls on them."""

    def __init__(self, paths: dict, verify: bool = True, threads: int | None = None) -> None:
        if threads is not None:
            import numba

            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        self.shards = sorted(paths)
        self.local = LocalShards([paths[s] for s in self.shards], True, verify=verify)

    def call(self, jobs: dict) -> tuple[dict, dict]:
        """Run ``{shard: (method, args)}`` on this group's shards in parallel; returns
        ``({shard: result}, {shard: the exception it raised})``."""
        index = {s: i for i, s in enumerate(self.shards)}
        results, failures = self.local.run({index[s]: job for s, job in jobs.items()})
        return ({self.shards[i]: r for i, r in results.items()},
                {self.shards[i]: f.error for i, f in failures.items()})

    def length(self) -> int:
        """Rows in this group's shards (also a cheap no-op call for round-trip timing)."""
        return int(sum(w.length() for w in self.local.workers))

    def pid(self) -> int:
        return os.getpid()

    def close(self) -> None:
        self.local.close()


class _Job:
    """A call on one shard, sent (with its group's other calls) when gathered."""

    __slots__ = ("method", "args")

    def __init__(self, method: str, args: tuple) -> None:
        self.method, self.args = method, args


def default_groups(ray, shards: int) -> int:
    """One reader actor per alive Ray node (at most one per shard)."""
    nodes = sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0)
    return max(1, min(shards, nodes or 1))


GRAPH_RETRY = 5.0  # seconds after a failed compiled graph before it is compiled again


class ReaderGroups(ShardCalls):
    """``groups`` reader actors over the shards at ``paths`` (see the module docstring)."""

    def __init__(self, paths: list[str], *, groups: int | None = None, threads: int | None = None,
                 verify: bool = True, actor_options: dict | None = None, compiled: bool = False) -> None:
        self.ray = import_ray()
        self.compiled = bool(compiled)
        self._graph = None
        self._graph_lock = threading.Lock()
        self._graph_after = 0.0
        self.shards = len(paths)
        self.groups = groups or default_groups(self.ray, self.shards)
        options = {**DEFAULT_ACTOR_OPTIONS, "max_task_retries": -1, "scheduling_strategy": "SPREAD",
                   **(actor_options or {})}
        if "num_cpus" not in (actor_options or {}):
            total = float(self.ray.cluster_resources().get("CPU", 1.0))
            options["num_cpus"] = round(min(DEFAULT_ACTOR_OPTIONS["num_cpus"], 0.5 * total / self.groups), 4) or 0.0001
        options = blas_env(self.ray, options)
        cls = self.ray.remote(ShardGroupWorker)
        self.members = [{s: os.path.abspath(paths[s]) for s in range(g, self.shards, self.groups)}
                        for g in range(self.groups)]
        self.actors = [cls.options(**options).remote(m, verify, threads) for m in self.members]

    def group_of(self, shard: int) -> int:
        return shard % self.groups

    def submit(self, shard: int, method: str, *args):
        return _Job(method, args)

    def shared(self, value):
        return value  # one copy per group call: nothing to share

    def gather(self, pending: dict, timeout: float | None = None) -> tuple[dict, dict]:
        if not pending:
            return {}, {}
        ray = self.ray
        by_group: dict[int, dict] = {}
        for s, job in pending.items():
            by_group.setdefault(self.group_of(s), {})[s] = (job.method, job.args)
        answers = self._through_graph(by_group, timeout) if self.compiled else None
        down = {}
        if answers is None:
            refs = {g: self.actors[g].call.remote(jobs) for g, jobs in by_group.items()}
            answers, down = collect(ray, refs, timeout, "reader actor")
        results, failures = {}, {}
        for g, jobs in by_group.items():
            if g in down:
                failures.update({s: down[g] for s in jobs})
                continue
            done, raised = answers[g]
            results.update(done)
            failures.update({s: Failure(exc, True) for s, exc in raised.items()})
        return results, failures

    def _through_graph(self, by_group: dict, timeout: float | None) -> dict | None:
        """``{group: answer}`` of ``by_group`` sent through the compiled graph, or None
        (no graph now, another read is using it, or it failed: then it is torn down)."""
        if time.monotonic() < self._graph_after or not self._graph_lock.acquire(blocking=False):
            return None
        try:
            if self._graph is None:
                from ray.dag import InputNode, MultiOutputNode

                with InputNode() as inp:
                    dag = MultiOutputNode([a.call.bind(inp[g]) for g, a in enumerate(self.actors)])
                self._graph = dag.experimental_compile()
            refs = self._graph.execute(*[by_group.get(g, {}) for g in range(self.groups)])
            out = self.ray.get(refs, timeout=timeout)
            return {g: out[g] for g in by_group}
        except Exception:  # noqa: BLE001 - any failure: the ordinary path answers (and says who failed)
            self._drop_graph(GRAPH_RETRY)
            return None
        finally:
            self._graph_lock.release()

    def _drop_graph(self, wait: float) -> None:
        graph, self._graph = self._graph, None
        self._graph_after = time.monotonic() + wait
        if graph is not None:
            try:
                graph.teardown()
            except Exception:  # noqa: BLE001 - its actors may be dead already
                pass

    @property
    def handles(self) -> tuple:
        return tuple(self.actors)

    def close(self) -> None:
        with self._graph_lock:
            self._drop_graph(0.0)
        try:
            close_actors(self.ray, self.actors)
        finally:
            self.actors = []
