"""Crash safety of payload indexes: the writers of tests/test_crash.py, with payload
indexes (keyword "lang", int "op", float "id") created when the store is made and the
"op" index dropped and re-created now and then, killed with SIGKILL at every named point
of the write path while the indexes exist, and at ``index.commit`` (inside the
transaction that creates or drops an index).

After every kill, besides the checks of test_crash.py (``verify_store`` is clean -- it
compares every index record with the payloads -- and the store holds the acknowledged
operations, or those plus the one in flight): filtered searches over the indexed fields
return exactly the live ids whose payloads match, with the indexes and without them.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

from zenstore import selection
from zenstore.filters import compile_filter

from ._crash_child import INDEXES
from .conftest import slow_run
from .test_crash import Chain, stats  # noqa: F401  (the fixture)

FILTERS = [{"lang": "de"}, {"op": {"$lt": 30}}, {"lang": {"$in": ["en", "fr"]}, "id": {"$gte": 60}},
           {"$or": [{"op": {"$gte": 100}}, {"lang": "fr"}]}]


class IndexedChain(Chain):
    child_args = ["indexes"]
    indexes = True

    def _check_search(self, store, got: dict) -> None:
        super()._check_search(store, got)
        have = store.payload_indexes()  # a kill inside a create or a reindex leaves some out
        assert have.items() <= INDEXES.items(), have
        self.stats["indexes_seen"] = self.stats.get("indexes_seen", 0) + len(have)
        if not got:
            return
        rows = store.stats()["stored_rows"]
        q = np.stack([v for v, _ in list(got.values())[:2]])
        for spec in FILTERS:
            flt = compile_filter(spec)
            want = {i for i, (_, p) in got.items() if flt.matches(p)}
            for indexed in (True, False):
                with mock.patch.object(selection.records, "has_payload_index_db", return_value=indexed) \
                        if not indexed else _nothing():
                    ids, _ = store.search_batch(q, k=len(got), shortlist=rows + 1, filter=spec)
                assert {x for x in ids[0].tolist() if x >= 0} == want, (spec, indexed)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


FRESH = {"base.written", "train.commit"}


def _specs() -> list[str]:
    """Kill points: the transactions that write index records, and a file-writing point;
    a long run adds every other point of the write path, some twice."""
    points = ["index.commit", "index.commit@2", "train.commit", "add.commit@2", "add.committed@3",
              "delete.commit", "merge.segment", "merge.commit", "merge.committed", "add.segment@3>orphan.removed"]
    if slow_run():
        points += ["base.written", "file.section@2", "file.written@3", "file.renamed@2", "delete.committed",
                   "merge.unlinked@2", "index.commit@3", "index.commit@5", "add.segment@2"]
        points += [p.split("@")[0] + "@4" for p in points if p.split("@")[0] not in FRESH | {"index.commit"}
                   and ">" not in p]
    return points


def test_kill_with_payload_indexes_at_named_points(tmp_path, stats):  # noqa: F811
    seeds = iter(range(5000, 6000))
    chain = IndexedChain(tmp_path, next(seeds), stats)
    reached = set()
    for spec in _specs():
        steps = spec.split(">")
        first = steps[0].split("@")[0]
        for _attempt in range(4):
            if chain.finished or (first in FRESH and chain.path.exists()):
                seed = next(seeds)
                while first == "train.commit" and seed % 2 == 0:
                    seed = next(seeds)
                chain = IndexedChain(tmp_path, seed, stats)
            outcomes = []
            for k, step in enumerate(steps):
                outcomes.append(chain.run(fault=step, leave_orphans=k + 1 < len(steps)))
                if outcomes[-1] != "killed":
                    break
            if outcomes == ["killed"] * len(steps):
                reached.update(step.split("@")[0] for step in steps)
                break
            stats["not_reached"] += 1
        else:
            pytest.fail(f"{spec} never reached in 4 plans")
    assert {"index.commit", "add.commit", "merge.commit", "delete.commit"} <= reached
    while not chain.finished:
        chain.run()
