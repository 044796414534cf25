"""Deletes, upserts and compaction against a brute-force model (a dict id -> vector,
payload), driven by hypothesis.stateful: random add / upsert / delete / search /
compact / reopen sequences on a store with a small merge fanout (so merges happen on
their own), checked after every step.

- membership, ``len``, ``ids()`` and ``get()`` payloads equal the model's; every stored
  vector is the one last written (its dequantized direction);
- a deleted (tombstoned, or replaced) row never comes back from search, get or iteration;
- search with a shortlist covering the whole store returns every live id exactly once;
- ``compact()`` (and reopening) leaves those exhaustive results identical, id by id and
  score by score; ``verify()`` stays clean.

Compaction's crash safety is covered by tests/test_crash.py (its plans compact).
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import zenstore
from zenstore import Store

from .conftest import scale, slow_run

DIM = 64
ID_SPACE = 48
STEPS: dict = {}


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


id_lists = st.lists(st.integers(0, ID_SPACE - 1), min_size=1, max_size=8, unique=True)
payloads = st.none() | st.fixed_dictionaries({"v": st.integers(0, 10**6)})


class StoreMachine(RuleBasedStateMachine):
    metric = "cosine"
    str_ids = False

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="zen-stateful-")
        self.path = os.path.join(self.dir, "s.zen")
        self.store = None
        self.model: dict = {}  # id -> (vector seed, payload)
        self.ever: set = set()  # every id ever written
        self.steps = 0

    def ext(self, i: int):
        return f"doc-{i}" if self.str_ids else i

    def exts(self, ids):
        return [self.ext(i) for i in ids]

    @initialize(seeds=st.lists(st.integers(0, 2**31), min_size=12, max_size=24))
    def create(self, seeds):
        self.store = Store.create(self.path, dim=DIM, metric=self.metric, n_base=4, min_rows_per_base=3,
                                  segment_fanout=3)
        ids = list(range(len(seeds)))
        self.store.add(self.exts(ids), np.stack([vector(s) for s in seeds]),
                       payloads=[{"v": s} for s in seeds])
        for i, s in zip(ids, seeds):
            self.model[i] = (s, {"v": s})
        self.ever.update(ids)

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        STEPS[type(self).__name__] = STEPS.get(type(self).__name__, 0) + self.steps

    # --- writes ---------------------------------------------------------------------------

    @rule(ids=id_lists, seed=st.integers(0, 2**31), payload=payloads)
    def add(self, ids, seed, payload):
        self.steps += 1
        vecs = np.stack([vector(seed + k) for k in range(len(ids))])
        if any(i in self.model for i in ids):
            with pytest.raises(zenstore.DuplicateId):
                self.store.add(self.exts(ids), vecs, payloads=[payload] * len(ids))
            return
        self.store.add(self.exts(ids), vecs, payloads=[payload] * len(ids))
        for k, i in enumerate(ids):
            self.model[i] = (seed + k, payload)
        self.ever.update(ids)

    @rule(ids=id_lists, seed=st.integers(0, 2**31), payload=payloads)
    def upsert(self, ids, seed, payload):
        self.steps += 1
        vecs = np.stack([vector(seed + k) for k in range(len(ids))])
        self.store.upsert(self.exts(ids), vecs, payloads=[payload] * len(ids))
        for k, i in enumerate(ids):
            self.model[i] = (seed + k, payload)
        self.ever.update(ids)

    @rule(ids=id_lists, missing_ok=st.booleans())
    def delete(self, ids, missing_ok):
        self.steps += 1
        present = [i for i in ids if i in self.model]
        if len(present) < len(ids) and not missing_ok:
            with pytest.raises(zenstore.IdNotFound):
                self.store.delete(self.exts(ids))
            return
        assert self.store.delete(self.exts(ids), missing_ok=missing_ok) == len(present)
        for i in present:
            del self.model[i]

    @precondition(lambda self: len(self.model) > 0)
    @rule(fraction=st.floats(0.5, 1.0))
    def delete_most(self, fraction):
        """Empty whole segments (their files are dropped at once)."""
        self.steps += 1
        ids = sorted(self.model)[: max(1, int(len(self.model) * fraction))]
        assert self.store.delete(self.exts(ids)) == len(ids)
        for i in ids:
            del self.model[i]

    @rule()
    def compact(self):
        self.steps += 1
        before = self.exhaustive()
        out = self.store.compact()
        assert out["segments_after"] <= 1 and out["rows_after"] == len(self.model)
        self.assert_same_results(before, self.exhaustive())

    @rule(readonly_first=st.booleans())
    def reopen(self, readonly_first):
        self.steps += 1
        before = self.exhaustive()
        self.store.close()
        if readonly_first:
            with Store.open(self.path, readonly=True) as ro:
                self.assert_same_results(before, self.exhaustive(ro))
        self.store = Store.open(self.path)
        self.assert_same_results(before, self.exhaustive())

    # --- reads ----------------------------------------------------------------------------

    @rule(seed=st.integers(0, 2**31), k=st.integers(1, 12))
    def search(self, seed, k):
        self.steps += 1
        q = vector(seed)
        hits = self.store.search(q, k=k, shortlist=self.rows() + 1)
        assert len(hits) == min(k, len(self.model))
        for h in hits:
            i = int(h.id[4:]) if self.str_ids else h.id
            assert i in self.model, f"search returned deleted id {h.id}"
            assert h.payload == self.model[i][1]
        ids, _ = self.store.search_batch(q[None], k=k, shortlist=self.rows() + 1)
        assert [x for x in ids[0].tolist() if x not in (-1, None)] == [h.id for h in hits]

    def rows(self) -> int:
        return self.store.stats()["stored_rows"]

    def exhaustive(self, store=None) -> dict:
        """{id: score} for a few fixed queries, over every live row (deterministic)."""
        store = store or self.store
        if not self.model:
            return {}
        queries = np.stack([vector(-1 - j % 7 + 10**9) for j in range(3)])
        rows = store.stats()["stored_rows"]  # live + deleted rows: a shortlist covering every row
        ids, scores = store.search_batch(queries, k=len(self.model), shortlist=rows + 1)
        out = {}
        for j in range(len(queries)):
            got = ids[j].tolist()
            assert sorted(map(str, got)) == sorted(map(str, self.exts(self.model))), \
                "exhaustive search must return every live id exactly once"
            out.update({(j, x): float(s) for x, s in zip(got, scores[j])})
        return out

    def assert_same_results(self, before: dict, after: dict) -> None:
        assert before.keys() == after.keys()
        for key, score in before.items():
            assert after[key] == pytest.approx(score, rel=1e-5, abs=1e-6), key

    # --- invariants -----------------------------------------------------------------------

    @invariant()
    def matches_model(self):
        if self.store is None:
            return
        s = self.store
        assert len(s) == len(self.model)
        assert sorted(map(str, s.ids().tolist())) == sorted(map(str, self.exts(self.model)))
        for i, (seed, payload) in self.model.items():
            rec = s.get(self.ext(i))
            assert rec.payload == payload
            assert cos(rec.vector, vector(seed)) > 0.5, f"id {i} holds another vector"
        gone = sorted(self.ever - set(self.model))[:6]
        for i in gone:
            assert self.ext(i) not in s
            with pytest.raises(zenstore.IdNotFound):
                s.get(self.ext(i))
        if gone:
            assert not s.contains(self.exts(gone)).any()
        seen = [x for ids, _, _ in s.iter_records(batch_size=16) for x in ids.tolist()]
        assert sorted(map(str, seen)) == sorted(map(str, self.exts(self.model)))

    @invariant()
    def healthy(self):
        if self.store is not None and self.steps % 5 == 0:
            assert self.store.verify() == []


class StrIdL2Machine(StoreMachine):
    metric = "l2"
    str_ids = True


RUNS, STEPS_PER_RUN = scale((15, 30), (60, 60))
_settings = settings(max_examples=RUNS, stateful_step_count=STEPS_PER_RUN, deadline=None, database=None,
                     derandomize=not slow_run(), suppress_health_check=[HealthCheck.too_slow])

TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = _settings
TestStrIdL2Machine = StrIdL2Machine.TestCase
TestStrIdL2Machine.settings = _settings


@pytest.fixture(scope="module", autouse=True)
def report_steps():
    yield
    print(f"\nstateful steps run: {STEPS} (total {sum(STEPS.values())})")
