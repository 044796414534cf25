"""Crash safety: writers killed with SIGKILL at named points and at random moments.

A child process (tests/_crash_child.py, forked from a warmed-up process:
tests/_zygote.py) applies a deterministic plan of add / upsert /
delete / compact / train calls (merges happen on their own: segment_fanout=3) and
acknowledges each call after it returns. The parent kills it, then checks:

- readers first (orphaned files still on disk): ``verify_store`` is clean and a
  read-only open sees exactly the acknowledged operations, or those plus the one in
  flight -- never a part of a batch;
- then the next writer: it opens, removes every file the manifest does not list, sees
  the same state, and ``verify()`` is clean;
- every vector is the one its last write stored (payload and dequantized direction).

Named points (``ZENSTORE_FAULT=<point>@<n>``, see zenstore/files.py) stop the writer
between writing a file and committing the catalog, inside the open LMDB transaction,
after the commit but before old files are removed, and so on. ``zenstore ingest`` gets the
same treatment. Normal runs use a sample of kill points; ``--runslow`` runs them all.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from zenstore import Store, verify_store

from ._zygote import SHARED as ZYGOTE
from ._crash_child import DIM, REFINE_ENV, make_plan, model_states, op_payloads, op_vectors
from .conftest import scale, slow_run

CHILD = Path(__file__).with_name("_crash_child.py")
N_OPS = 120

# every named point in the write path (zenstore/store.py, zenstore/files.py)
POINTS = [
    "create.catalog", "create.renamed", "base.written", "train.commit",
    "file.section", "file.written", "file.renamed",
    "add.segment", "add.commit", "add.committed",
    "delete.commit", "delete.committed",
    "merge.segment", "merge.commit", "merge.committed", "merge.unlinked",
    "orphan.removed",
]
ONCE_PER_STORE = {"create.catalog", "create.renamed", "base.written", "train.commit"}


def _cos(a, b) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def store_files(path: Path) -> set[str]:
    files = {f"segments/{n}" for n in os.listdir(path / "segments")}
    return files | {n for n in os.listdir(path) if n.startswith("base-")}


class Chain:
    """One store and one plan, carried across any number of killed writers."""

    child_args: list = []  # extra arguments of every writer process (tests/_crash_child.py)
    indexes = False

    def __init__(self, root: Path, seed: int, stats: dict, refine: str | None = None) -> None:
        self.refine = refine  # the refine tier the store is created with
        self.dir = root / f"chain-{seed}"
        self.dir.mkdir()
        self.path = self.dir / "store.zen"
        self.seed = seed
        self.plan = make_plan(seed, N_OPS, self.indexes)
        self.states = model_states(self.plan)
        self.vectors = {}
        self.applied = 0  # operations known to be in the store
        self.runs = 0
        self.stats = stats

    @property
    def finished(self) -> bool:
        return self.applied == len(self.plan)

    # --- running a writer -------------------------------------------------------------

    def spawn(self, child: Path, extra_args: list[str], fault: str | None, while_running=None,
              forked=None):
        """Run one writer process (``child`` with the chain's arguments) from the first
        unapplied op; ``while_running(proc, ack)`` acts on it. Returns (exit code,
        stderr, ack file text). With ``forked(argv, env, stderr_path)``, which starts a
        fork of a warmed-up process (tests/_zygote.py) running the
        child, instead of a fresh ``python``."""
        self.runs += 1
        ack = self.dir / f"ack-{self.runs}"
        env = {k: v for k, v in os.environ.items() if k not in ("ZENSTORE_FAULT", REFINE_ENV)}
        if self.refine:
            env[REFINE_ENV] = self.refine
        if fault:
            env["ZENSTORE_FAULT"] = fault
        argv = [str(self.path), str(ack), str(self.seed), str(len(self.plan)), str(self.applied), *extra_args]
        with open(self.dir / f"stderr-{self.runs}", "w+") as err:
            if forked is not None:
                proc = forked(argv, env, err.name)
            else:
                proc = subprocess.Popen([sys.executable, str(child), *argv], env=env, stderr=err)
            if while_running is not None:
                while_running(proc, ack)
            rc = proc.wait(timeout=180)
            err.seek(0)
            stderr = err.read()
        return rc, stderr, ack.read_text() if ack.exists() else ""

    @staticmethod
    def wait_started(proc, ack: Path) -> None:
        """Until the writer has opened the store (or died, or a minute passed)."""
        deadline = time.monotonic() + 60
        while (proc.poll() is None and time.monotonic() < deadline
               and not (ack.exists() and ack.read_bytes().startswith(b"start"))):
            time.sleep(0.002)

    def run(self, fault: str | None = None, kill_after: float | None = None,
            from_spawn: bool = False, leave_orphans: bool = False) -> str:
        """Run a writer from the first unapplied op; returns "killed" or "done".

        ``leave_orphans``: after a kill, check with readers only, so the next writer
        process finds the kill's leftovers and removes them itself (or dies doing so).
        """
        def kill(proc, ack):
            if not from_spawn:
                self.wait_started(proc, ack)
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)

        rc, stderr, text = self.spawn(CHILD, self.child_args, fault, kill if kill_after is not None else None,
                                      forked=self.fork_writer)
        lines = text.split()
        acked = [int(x) for x in lines if x.isdigit()]
        assert acked == list(range(self.applied, self.applied + len(acked))), lines
        if rc == 0:
            assert lines[-1] == "done", stderr
            self.check_state(len(self.plan))
            self.applied = len(self.plan)
            return "done"
        assert rc == -signal.SIGKILL, f"writer failed (exit {rc}):\n{stderr}"
        self.stats["kills"] += 1
        self.applied = self.check_after_kill(self.applied + len(acked), leave_orphans)
        return "killed"

    @staticmethod
    def fork_writer(argv: list[str], env: dict, stderr_path: str):
        return ZYGOTE.start("crash_child", argv, env, stderr_path)

    # --- checking ---------------------------------------------------------------------

    def expected_vector(self, op_index: int, row: int) -> np.ndarray:
        if op_index not in self.vectors:
            self.vectors[op_index] = op_vectors(self.plan[op_index])
        return self.vectors[op_index][row]

    def observe(self, store) -> dict:
        """{id: (vector, payload)} of one snapshot, with a few cross-checks."""
        got = {}
        for ids, vecs, payloads in store.iter_records(batch_size=64):
            for i, v, p in zip(ids.tolist(), vecs, payloads):
                assert i not in got, f"id {i} stored twice"
                got[i] = (v, p)
        return got

    def matches(self, got: dict, j: int) -> str | None:
        """None if ``got`` is exactly the state after ``j`` ops, else what differs."""
        want = self.states[j]
        if set(got) != set(want):
            extra, missing = set(got) - set(want), set(want) - set(got)
            return f"after {j} ops: {len(extra)} unexpected ids {sorted(extra)[:5]}, {len(missing)} missing {sorted(missing)[:5]}"
        for i, (op_index, row) in want.items():
            vec, payload = got[i]
            want_payload = op_payloads(self.plan[op_index])[row]
            if payload != want_payload:
                return f"after {j} ops: id {i} payload {payload}, expected {want_payload}"
            cos = _cos(vec, self.expected_vector(op_index, row))
            # a refined vector is nearly exact: a refine row paired with another row is not
            if cos < (0.995 if self.refine else 0.5):
                return f"after {j} ops: id {i} vector is not the one op {op_index} wrote (cos {cos:.2f})"
        return None

    def check_state(self, j: int) -> None:
        with Store.open(self.path, readonly=True) as ro:
            problem = self.matches(self.observe(ro), j)
            assert problem is None, problem
        assert verify_store(self.path) == []

    def check_after_kill(self, acked: int, leave_orphans: bool = False) -> int:
        """The store after a kill: returns how many plan ops it holds (acked or acked+1)."""
        if not self.path.exists():  # killed inside Store.create: nothing was promised
            assert acked == 0 and self.applied == 0
            self.stats["died_creating"] += 1
            return 0
        candidates = [acked] + ([acked + 1] if acked < len(self.plan) else [])
        # readers first, with whatever orphaned files the kill left on disk
        assert verify_store(self.path) == [], verify_store(self.path)
        with Store.open(self.path, readonly=True) as ro:
            got = self.observe(ro)
            assert len(ro) == len(got)
            problems = {j: self.matches(got, j) for j in candidates}
            held = [j for j, p in problems.items() if p is None]
            assert held, f"store is neither of the allowed states: {problems}"
            self._check_search(ro, got)
        if held[0] > acked:
            self.stats["in_flight_committed"] += 1
        if leave_orphans:
            return held[0]
        orphans_before = store_files(self.path)
        # the next writer cleans up and sees the same state
        with Store.open(self.path) as w:
            assert w.verify() == []
            manifest = w.snapshot().manifest
            listed = {f for s in manifest.segments for f in s.files} | ({manifest.base.file} if manifest.base else set())
            on_disk = store_files(self.path)
            assert on_disk == listed, f"leftover files after reopen: {sorted(on_disk - listed)}"
            self.stats["orphans_removed"] += len(orphans_before - listed)
            assert self.matches(self.observe(w), held[0]) is None
        return held[0]

    def _check_search(self, store, got: dict) -> None:
        if not got:
            return
        rows = store.stats()["stored_rows"]  # live + deleted rows: a shortlist covering every row
        queries = np.stack([v for v, _ in list(got.values())[:4]])
        ids, _ = store.search_batch(queries, k=min(10, len(got)), shortlist=max(rows, 1))
        found = ids[ids >= 0].tolist()
        assert set(found) <= set(got), "search returned an id that is not stored"
        assert all(ids[:, 0] >= 0)


@pytest.fixture
def stats():
    s = {"kills": 0, "in_flight_committed": 0, "orphans_removed": 0, "died_creating": 0,
         "not_reached": 0}
    yield s
    print(f"\ncrash stats: {s}")


def _fault_specs() -> list[str]:
    """Kill points, as "<point>@<n>"; "A>B" runs A (leaving its leftovers on disk) and
    then B in the next writer, e.g. a kill during the cleanup of an earlier kill."""
    if slow_run():
        specs = []
        for n in (1, 2, 3):
            for p in POINTS:
                if p == "orphan.removed":  # needs a kill that leaves files behind first
                    specs.append("add.segment@1>orphan.removed" if n == 1 else
                                 f"merge.committed@{n}>orphan.removed@{n - 1}")
                elif p in ONCE_PER_STORE:  # reached once per store: a fresh plan each time
                    specs.append(p)
                else:
                    specs.append(f"{p}@{n}")
        return specs
    return ["create.catalog", "create.renamed", "base.written", "train.commit",
            "add.segment@2>orphan.removed", "add.commit@3", "add.committed@2", "file.section@3",
            "file.written@4", "file.renamed@5", "delete.commit", "delete.committed",
            "merge.segment", "merge.commit", "merge.unlinked@2", "merge.committed@2>orphan.removed@2"]


def test_kill_at_named_points(tmp_path, stats):
    """Every named point of the write path, each hit by a real SIGKILL."""
    seeds = iter(range(1000, 2000))
    chain = Chain(tmp_path, next(seeds), stats)
    reached = set()
    specs = _fault_specs()
    for spec in specs:
        steps = spec.split(">")
        first = steps[0].split("@")[0]
        for _attempt in range(4):
            # create.* need a fresh store, base.written/train.commit an untrained one,
            # train.commit a plan that trains explicitly (odd seeds)
            fresh = first in ONCE_PER_STORE
            if chain.finished or (fresh and chain.path.exists()):
                seed = next(seeds)
                while first == "train.commit" and seed % 2 == 0:
                    seed = next(seeds)
                chain = Chain(tmp_path, seed, stats)
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
    assert reached == set(POINTS), f"never reached: {set(POINTS) - reached}"
    # the last chain, finished without faults, ends in exactly the plan's final state
    while not chain.finished:
        chain.run()
    assert stats["kills"] >= len(specs)


REFINE_SPECS = ["add.segment@2>orphan.removed", "segment.refine@2", "file.section@4", "file.written@4",
                "file.renamed@6", "add.commit@3", "add.committed@2", "delete.committed@2",
                "segment.refine@6", "merge.segment", "merge.commit", "merge.unlinked@2",
                "merge.committed@2>orphan.removed@2"]
# normal runs: between a segment and its refine file, orphaned pairs, and a merge's removals
REFINE_SPECS_FAST = ["segment.refine@2", "add.segment@2>orphan.removed", "merge.unlinked@2",
                     "merge.committed@2>orphan.removed@2"]


def test_kill_at_named_points_with_refine_tier(tmp_path, stats):
    """A store with a refine tier: kills between a segment and its refine file, between
    both files and the commit, and while merged-away pairs are removed leave every
    segment with its own refine file (refined vectors are the stored ones), and orphaned
    refine files are removed by the next writer."""
    seeds = iter(range(5000, 6000))
    chain = Chain(tmp_path, next(seeds), stats, refine="int8")
    for spec in REFINE_SPECS if slow_run() else REFINE_SPECS_FAST:
        steps = spec.split(">")
        for _attempt in range(4):
            if chain.finished:
                chain = Chain(tmp_path, next(seeds), stats, refine="int8")
            outcomes = []
            for k, step in enumerate(steps):
                outcomes.append(chain.run(fault=step, leave_orphans=k + 1 < len(steps)))
                if outcomes[-1] != "killed":
                    break
            if outcomes == ["killed"] * len(steps):
                break
            stats["not_reached"] += 1
        else:
            pytest.fail(f"{spec} never reached in 4 plans")
    while not chain.finished:
        chain.run()
    with Store.open(chain.path, readonly=True) as ro:
        assert ro.stats()["refine"] == "int8"
        segs = ro.snapshot().manifest.segments
        assert segs and all(s.refine is not None for s in segs)


def test_kill_at_random_moments(tmp_path, stats):
    """SIGKILL at random times: during startup, orphan cleanup, writes, merges, compaction."""
    kills_wanted = scale(12, 120)
    rnd = random.Random(7)
    seeds = iter(range(3000, 4000))
    chain = Chain(tmp_path, next(seeds), stats)
    while stats["kills"] < kills_wanted:
        if chain.finished:
            chain = Chain(tmp_path, next(seeds), stats)
        leave = rnd.random() < 0.4  # the next child cleans up (and may be killed doing it)
        if rnd.random() < 0.2:  # from spawn: lands in open and orphan cleanup too
            # (writers are forks of a warmed-up process, tests/_zygote.py: they start
            # writing a few ms after the spawn, so no kill lands in imports any more)
            chain.run(kill_after=rnd.uniform(0.0, 0.3), from_spawn=True, leave_orphans=leave)
        else:
            chain.run(kill_after=rnd.uniform(0.0, 0.35), leave_orphans=leave)
    while not chain.finished:
        chain.run()
    print(f"random kills across {chain.seed - 2999} plans")


# --- zenstore ingest ----------------------------------------------------------------------


def _ingest_state(store: Path, src: Path) -> tuple[int, list]:
    with Store.open(store, readonly=True) as s:
        cp = s.checkpoint(f"ingest:{os.path.abspath(src)}")
        return (0 if cp is None else cp["offset"]), sorted(s.ids().tolist())


def test_kill_zenstore_ingest(tmp_path, stats):
    """The CLI loader: after every kill the store holds exactly the checkpointed rows, and
    rerunning the same command finishes with every row once. The killed loaders run
    ``zenstore.cli.main`` in forks of a warmed-up process (tests/_zygote.py); the final
    rerun is a real ``python -m zenstore ingest``."""

    n = 1500
    x = np.random.default_rng(5).standard_normal((n, DIM)).astype(np.float32)
    src = tmp_path / "x.npy"
    np.save(src, x)
    store = tmp_path / "s.zen"
    cmd = [sys.executable, "-m", "zenstore", "ingest", str(store), str(src), "--dim", str(DIM),
           "--n-base", "4", "--batch-size", "30", "--quiet"]
    faults = ["base.written", "train.commit", "add.segment@2", "orphan.removed", "add.commit@3",
              "add.committed@2", "merge.committed", "file.written@4"]
    rnd = random.Random(11)
    plan = faults + [None] * scale(2, 12)
    for k, fault in enumerate(plan):
        leave_orphans = k + 1 < len(plan) and plan[k + 1] == "orphan.removed"
        env = {k: v for k, v in os.environ.items() if k != "ZENSTORE_FAULT"}
        if fault:
            env["ZENSTORE_FAULT"] = fault
        err_path = tmp_path / f"stderr-{k}"
        proc = ZYGOTE.start("cli", cmd[3:], env, err_path)
        if fault is None:  # a random moment after the loader got going
            deadline = time.monotonic() + 60
            while proc.poll() is None and not store.exists() and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(rnd.uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
        rc = proc.wait(timeout=120)
        err = err_path.read_bytes()
        if rc == 0:  # finished before the fault: start over to keep killing
            stats["not_reached"] += 1
            print(f"ingest: {fault} not reached")
            shutil.rmtree(store)
            continue
        assert rc == -signal.SIGKILL, err.decode()
        stats["kills"] += 1
        if not store.exists():
            continue
        assert verify_store(store) == []
        done, ids = _ingest_state(store, src)
        assert ids == list(range(done)), "the store must hold exactly the checkpointed rows"
        if leave_orphans:  # the next ingest process must clean up itself
            continue
        with Store.open(store) as w:  # the next writer removes what the kill left behind
            m = w.snapshot().manifest
            listed = {s.file for s in m.segments} | ({m.base.file} if m.base else set())
            assert store_files(store) == listed
    subprocess.run(cmd, env={k: v for k, v in os.environ.items() if k != "ZENSTORE_FAULT"},
                   check=True, timeout=120)
    done, ids = _ingest_state(store, src)
    assert done == n and ids == list(range(n))
    with Store.open(store, readonly=True) as s:
        assert s.verify() == []
        for i in range(0, n, 7):
            assert _cos(s.get(i).vector, x[i]) > 0.5


def test_create_killed_leaves_nothing_the_next_create_keeps(tmp_path):
    """A create killed after building its temporary directory leaves ``PATH.creating-PID``;
    the next create of the same path removes it (its process is dead) and succeeds."""
    path = tmp_path / "s.zen"
    env = {k: v for k, v in os.environ.items() if k != "ZENSTORE_FAULT"}
    env["ZENSTORE_FAULT"] = "create.catalog"
    code = f"from zenstore import Store; Store.create({str(path)!r}, dim=64)"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err.decode()
    assert [p.name for p in tmp_path.iterdir()] == [f"s.zen.creating-{proc.pid}"]
    assert not path.exists()
    # a directory of a live process, and one holding foreign files, are left alone
    live = tmp_path / f"s.zen.creating-{os.getppid()}"
    live.mkdir()
    foreign = tmp_path / "s.zen.creating-999999999"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not ours")
    with Store.create(path, dim=64) as s:
        assert len(s) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["s.zen", live.name, foreign.name])
