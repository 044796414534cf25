"""The ``ray`` backend: one Ray actor per shard, the shard's single writer.

Actors take a fraction of a CPU (``num_cpus=0.25`` by default, and all the actors of a
store together at most half the cluster's CPUs): a Ray Data pipeline needs whole CPUs for
its read tasks, and with whole-CPU actors on a 2-core machine the pipeline waits forever
for a CPU the shard actors hold. (Ray reserves an actor's ``num_cpus`` for its lifetime;
the shard's work is not limited by it.) They restart when their process
dies (``max_restarts``); the new process reopens the shard from disk, where every
acknowledged batch is durable. Calls are not retried by Ray (``max_task_retries=0``): a
write whose actor died mid-call is reported as of unknown outcome, and the caller
retries it with ``upsert`` (idempotent) -- see docs/scaling.md, "Failures".

Ray is imported lazily, so ``zenstore.cluster`` imports (and reads sharded stores with
the ``local`` backend) without it.
"""

from __future__ import annotations

import os

from ..errors import ZenstoreError
from .calls import Failure, ShardCalls
from .worker import ShardWorker

DEFAULT_ACTOR_OPTIONS = {"num_cpus": 0.25, "max_restarts": -1, "max_task_retries": 0}
INLINE_BYTES = 64 << 10  # larger arguments sent to several shards are put in the object store once


class RayNotInstalled(ZenstoreError, ImportError):
    """The ``ray`` backend needs Ray: ``pip install 'zenstore[ray]'``."""


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise RayNotInstalled("sharded stores on Ray need Ray: pip install 'zenstore[ray]'") from exc
    return ray


_started_here = 0  # ShardedStores using a Ray runtime that this module started


def ensure_ray(address: str | None) -> bool:
    """Connect to Ray (``address``: a running cluster, e.g. ``"auto"`` or ``"ray://h:10001"``),
    or start a local one when none is running and no address is given. Returns whether
    this call started (or joined) a runtime that :func:`release_ray` should stop."""
    global _started_here
    ray = import_ray()
    if ray.is_initialized():
        return False
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
    else:
        ray.init(address=address, log_to_driver=False)
    _started_here += 1
    return True


def release_ray(started: bool) -> None:
    global _started_here
    if not started:
        return
    _started_here -= 1
    if _started_here == 0:
        import_ray().shutdown()


def actor_cpus(ray, shards: int) -> float:
    """CPUs each shard actor reserves: 0.25, but the actors of one store together at most
    half the cluster's CPUs, so Ray Data's whole-CPU read tasks always find one."""
    total = float(ray.cluster_resources().get("CPU", 1.0))
    return round(min(DEFAULT_ACTOR_OPTIONS["num_cpus"], 0.5 * total / shards), 4) or 0.0001


def blas_env(ray, options: dict) -> dict:
    """``options`` with ``OMP_NUM_THREADS`` set to the node's CPU count on a one-node
    cluster (unless the caller set it). Ray sets it to an actor's whole ``num_cpus``
    (at least 1) in every worker, so OpenBLAS in a shard actor would run one thread --
    half the speed of the query products on 2 cores, and a different summation order
    than the in-process store's (scores then differ in the last bit). On several nodes
    their CPU counts may differ, and Ray's default is kept."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    env = dict((options.get("runtime_env") or {}).get("env_vars") or {})
    if len(nodes) != 1 or "OMP_NUM_THREADS" in env:
        return options
    cpus = int(nodes[0].get("Resources", {}).get("CPU", 1)) or 1
    env["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or str(cpus)
    return {**options, "runtime_env": {**(options.get("runtime_env") or {}), "env_vars": env}}


def close_actors(ray, actors) -> None:
    """Ask every actor to close its stores (30 s at most), then end them for good."""
    if not actors:
        return
    refs = [a.close.remote() for a in actors]
    try:
        ray.wait(refs, num_returns=len(refs), timeout=30)
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass


def collect(ray, refs: dict, timeout: float | None, what: str) -> tuple[dict, dict]:
    """({key: answer}, {key: Failure}) of Ray calls ``{key: ref}``: one ``ray.get`` for all
    in the common case (no timeout, no failure), else each sorted out by itself -- a call
    without an answer within ``timeout`` fails as "<what> <key>: no answer"."""
    if timeout is None:
        try:
            return dict(zip(refs, ray.get(list(refs.values())))), {}
        except ray.exceptions.RayError:
            pass  # some call failed: sort out which, below
    ready, _ = ray.wait(list(refs.values()), num_returns=len(refs), timeout=timeout)
    ready = set(ready)
    answers, failures = {}, {}
    for key, ref in refs.items():
        if ref not in ready:
            failures[key] = Failure(ray.exceptions.GetTimeoutError(f"{what} {key}: no answer within {timeout} s"), False)
            continue
        try:
            answers[key] = ray.get(ref)
        except ray.exceptions.RayError as exc:
            failures[key] = _unwrap(ray, exc)
    return answers, failures


def _unwrap(ray, exc: BaseException) -> Failure:
    """A Ray error -> the shard's own exception (it raised), or the system error (it died)."""
    if isinstance(exc, ray.exceptions.RayTaskError) and not isinstance(exc, ray.exceptions.RayActorError):
        cause = getattr(exc, "cause", None)
        if isinstance(cause, BaseException):
            return Failure(cause, True)
        return Failure(exc, True)
    # ActorUnavailableError: the process died and Ray is restarting it (ActorDiedError: for good)
    return Failure(exc, False, retryable=isinstance(exc, ray.exceptions.ActorUnavailableError))


class ActorShards(ShardCalls):
    """One actor per shard; ``submit`` returns an ObjectRef."""

    def __init__(self, paths: list[str], readonly: bool, *, threads: int | None = None, verify: bool = True,
                 actor_options: dict | None = None) -> None:
        self.ray = import_ray()
        self.shards = len(paths)
        # a reader actor's calls are all reads: Ray may retry them on its restarted process
        options = {**DEFAULT_ACTOR_OPTIONS, **({"max_task_retries": -1} if readonly else {}), **(actor_options or {})}
        if "num_cpus" not in (actor_options or {}):
            options["num_cpus"] = actor_cpus(self.ray, self.shards)
        options = blas_env(self.ray, options)
        cls = self.ray.remote(ShardWorker)
        self.actors = [cls.options(**options).remote(os.path.abspath(p), readonly, threads, verify) for p in paths]

    def submit(self, shard: int, method: str, *args):
        return getattr(self.actors[shard], method).remote(*args)

    def shared(self, value):
        nbytes = getattr(value, "nbytes", 0)
        return self.ray.put(value) if self.shards > 1 and nbytes > INLINE_BYTES else value

    def gather(self, pending: dict, timeout: float | None = None) -> tuple[dict, dict]:
        if not pending:
            return {}, {}
        return collect(self.ray, pending, timeout, "shard")

    @property
    def handles(self) -> tuple:
        return tuple(self.actors)

    def close(self) -> None:
        """Close every shard's store (releasing its write lock), then end the actors."""
        try:
            close_actors(self.ray, self.actors)
        finally:
            self.actors = []
