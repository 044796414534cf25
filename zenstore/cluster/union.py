"""One search over several shards held by one process, as if they were one store.

Every shard of a sharded store encodes with the same base matrix and rotation, so the
segments of all the shards a process holds are, together, the segments of one store. A
search over their union prepares each query once (normalise, rotate, sign code,
``q . base`` for every base row), probes once and keeps one shortlist, where a search
per shard repeats that fixed work S times and merges S top-k lists afterwards (at
nprobe 16 on 1M rows that fixed work dominated: 4 shards ran at 0.45x the single
store's batch QPS, docs/scaling.md).

The options mean what they mean for one store: the union keeps one shortlist of
``shortlist`` candidates, the best by the Hamming proxy over all its shards, and rescores
them exactly, so a sharded store on one machine answers exactly as a single store with
the same base and options (and costs about what it costs). A first version kept a
per-shard budget (m shards: m x shortlist); at 1M rows, nprobe 16, 4 shards it rescored
4x the candidates and ran at 0.65x the single store's batch QPS
(docs/benchmarks/cluster-n1000000-union.json). Processes (reader actors on several
nodes) each answer their union with ``shortlist``, and the driver merges them: a
superset of one store's shortlist.

A union is used only where it is the same question: every job a ``search`` or every job a
``search_batch``, with the same options, on shards whose codecs share one base (checked
by digest); otherwise the caller runs the jobs shard by shard.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..reader import search_options
from ..search import search_snapshot
from ..snapshot import Snapshot, split_tags
from ..types import Hit
from ..validation import as_matrix
from .worker import base_digest

UNITED = ("search", "search_batch")


def _digest(store, snap: Snapshot, cache: dict) -> str:
    """The base digest of ``store``, computed once per codec (a store's base never
    changes once trained; a new codec object means a reopened or retrained view)."""
    key = id(snap.codec)
    if key not in cache:
        cache.clear()
        cache[key] = base_digest(store.base())
    return cache[key]


def union_jobs(jobs: dict) -> tuple[str, tuple, object] | None:
    """(method, shared args, filter ids of all jobs or None) when ``jobs`` (``{shard:
    (method, args)}``) can run as one union search, else None."""
    if len(jobs) < 2:
        return None
    methods = {m for m, _ in jobs.values()}
    if len(methods) != 1 or not methods <= set(UNITED):
        return None
    method = methods.pop()
    first = next(iter(jobs.values()))[1]
    fpos = 4  # args: (query, k, shortlist, nprobe, filter_ids[, with_payload])
    shared = first[:fpos] + first[fpos + 1:]
    filters = []
    for _, args in jobs.values():
        if args[0] is not first[0] or args[1:fpos] != first[1:fpos] or args[fpos + 1:] != first[fpos + 1:]:
            return None
        filters.append(args[fpos])
    if all(f is None for f in filters):
        return method, shared, None
    if any(f is None for f in filters):
        return None
    return method, shared, np.concatenate([np.asarray(f) for f in filters])


class UnionSearch:
    """Union searches over ``stores`` (open ``Store`` handles of shards, in shard order)."""

    def __init__(self, stores: list) -> None:
        self.stores = stores
        self._digests = [dict() for _ in stores]

    def snapshot(self, members: list[int]) -> tuple[Snapshot, list[int]] | None:
        """The union of the members' snapshots and, for each of its segments, the member
        it came from; None if the members do not share one base (then no union)."""
        snaps = [self.stores[i].snapshot() for i in members]
        trained = [(i, s) for i, s in zip(members, snaps) if s.codec is not None]
        if not trained:
            return snaps[0], []
        digests = {_digest(self.stores[i], s, self._digests[i]) for i, s in trained}
        if len(digests) != 1:
            return None
        first = trained[0][1]
        segments, records, owner = [], [], []
        for i, s in trained:
            segments.extend(s.segments)
            records.extend(s.manifest.segments)
            owner.extend([i] * len(s.segments))
        manifest = replace(first.manifest, segments=tuple(records))
        return Snapshot(manifest, first.codec, tuple(segments)), owner

    def run(self, members: list[int], method: str, args: tuple, filter_ids):
        """The answer of the union of ``members``, shaped like one shard's answer; None
        if they cannot be searched as one."""
        found = self.snapshot(members)
        if found is None:
            return None
        snap, owner = found
        query, k, shortlist, nprobe = args[:4]
        store = self.stores[members[0]]
        opts = search_options(k, shortlist, nprobe)
        queries = as_matrix(np.asarray(query).reshape(-1, store.dim), store.dim, "queries")  # pads as Store does
        tags, scores = search_snapshot(snap, queries, opts, store.metric, filter_ids)
        if method == "search_batch":
            str_ids = snap.id_type == "str"
            ids = np.full(tags.shape, None, dtype=object) if str_ids else np.full(tags.shape, -1, np.int64)
            hit = tags >= 0
            ids[hit] = snap.tags_to_ids(tags[hit])
            return ids, scores
        hit = tags[0] >= 0
        tags, scores = tags[0][hit], scores[0][hit]
        ids = [v.item() if isinstance(v, np.generic) else v for v in snap.tags_to_ids(tags)]
        payloads = [None] * len(ids)
        if args[4]:  # with_payload: each from the shard that holds it
            ords = split_tags(tags)[0]
            for m in sorted({owner[int(o)] for o in ords}):
                pos = [j for j, o in enumerate(ords) if owner[int(o)] == m]
                for j, p in zip(pos, self.stores[m].payloads([ids[j] for j in pos])):
                    payloads[j] = p
        return [Hit(i, float(s), p) for i, s, p in zip(ids, scores, payloads)]
