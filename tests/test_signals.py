"""Signals that run Python code: Ctrl-C (SIGINT) and SIGTERM, during every part of a write.

SIGKILL (tests/test_crash.py) never runs Python code. SIGINT raises KeyboardInterrupt,
and a service's SIGTERM handler typically raises SystemExit, at whatever bytecode the
writer is at -- including the first one after an LMDB commit returned, inside the
write's cleanup scope. Until 2ccd506 that cleanup deleted the files the just-committed
manifest listed (issue 9, finding 1), and a handle kept in use after a caught interrupt
committed manifests built on a stale snapshot (finding 2).

Writers (tests/_signal_child.py, in forks of a warmed-up process that exit as a fresh
``python`` would: tests/_zygote.py) get signals at named fault points
(``ZENSTORE_FAULT=<point>@<n>:INT|TERM``, including ``catalog.committed``: right after the
commit returned) and at random moments from the parent. After each:

- ``die`` mode (the interrupt ends the process): readers and the next writer see
  exactly the acknowledged operations, or those plus the one in flight, and the store
  verifies clean (the same checks as after a SIGKILL);
- ``keep`` mode (the writer catches the interrupt and keeps using the same Store):
  the plan completes and the store holds exactly the plan's final state.
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

from . import test_crash as crash
from ._crash_child import DIM
from ._zygote import SHARED as ZYGOTE

CHILD = Path(__file__).with_name("_signal_child.py")
SLOW = os.environ.get("ZENSTORE_SLOW") == "1"
# exit statuses of a writer ended by the signal: KeyboardInterrupt re-raises SIGINT,
# the child's SIGTERM handler exits 143
INTERRUPTED = {-signal.SIGINT, 130, 143, 1}

# named points a signal can meet (create.* run before the child installs its handler;
# orphan.removed needs leftovers, covered by the random moments)
POINTS = ["base.written", "train.commit", "file.section", "file.written", "file.renamed",
          "add.segment", "add.commit", "add.committed", "delete.commit", "delete.committed",
          "merge.segment", "merge.commit", "merge.committed", "merge.unlinked", "catalog.committed"]
ONCE = {"base.written", "train.commit"}  # reached once per store


class SignalChain(crash.Chain):
    """A crash-test chain whose writers are interrupted by SIGINT / SIGTERM."""

    def run_signalled(self, mode: str, fault: str | None = None,
                      signals: list[tuple[float, int]] | None = None) -> tuple[str, str]:
        """Run one writer from the first unapplied op; returns (outcome, ack tail)."""
        def send(proc, ack):
            self.wait_started(proc, ack)
            for delay, sig in signals:
                time.sleep(delay)
                if proc.poll() is not None:
                    break
                proc.send_signal(sig)

        rc, stderr, text = self.spawn(CHILD, [mode], fault, send if signals else None,
                                      forked=lambda argv, env, err: ZYGOTE.start("signal_child", argv, env, err))
        lines = text.split("\n")
        acked = [int(x) for x in lines if x.isdigit()]
        assert acked == list(range(self.applied, self.applied + len(acked))), lines
        if rc == 0:
            assert lines[-2].startswith("done"), stderr
            self.stats["interrupts_survived"] += int(lines[-2].split()[1])
            self.check_state(len(self.plan))
            self.applied = len(self.plan)
            return "done", lines[-2]
        assert rc in INTERRUPTED, f"writer failed (exit {rc}):\n{stderr}"
        assert "KeyboardInterrupt" in stderr or rc == 143 or rc == -signal.SIGINT, stderr
        self.stats["kills"] += 1
        self.applied = self.check_after_kill(self.applied + len(acked))
        return "interrupted", ""


@pytest.fixture
def stats():
    s = {"kills": 0, "interrupts_survived": 0, "in_flight_committed": 0, "orphans_removed": 0,
         "died_creating": 0, "not_reached": 0}
    yield s
    print(f"\nsignal stats: {s}")


def _specs() -> list[str]:
    sigs = ("INT", "TERM")
    if SLOW:
        return [f"{p}@{n}:{s}" for n in (1, 2, 3) for p in POINTS for s in sigs
                if n == 1 or p not in ONCE]
    # every point once, alternating the signal; the commit boundary with both, twice
    specs = [f"{p}@{1 if p in ONCE else 1 + k % 3}:{sigs[k % 2]}" for k, p in enumerate(POINTS)]
    return specs + ["catalog.committed@4:INT", "catalog.committed@7:TERM", "merge.commit@2:TERM"]


def test_signal_at_named_points_ends_writer_cleanly(tmp_path, stats):
    """SIGINT / SIGTERM at every named point: the interrupted writer dies; the store holds
    the acknowledged calls (plus, possibly, the one in flight) and verifies clean."""
    seeds = iter(range(5000, 6000))
    chain = SignalChain(tmp_path, next(seeds), stats)
    reached = set()
    for spec in _specs():
        point = spec.split("@")[0]
        for _attempt in range(4):
            if chain.finished or (point in ("base.written", "train.commit") and chain.path.exists()):
                seed = next(seeds)
                while point == "train.commit" and seed % 2 == 0:
                    seed = next(seeds)
                chain = SignalChain(tmp_path, seed, stats)
            outcome, _ = chain.run_signalled("die", fault=spec)
            if outcome == "interrupted":
                reached.add(point)
                break
            stats["not_reached"] += 1
        else:
            pytest.fail(f"{spec} never reached in 4 plans")
    assert reached == set(POINTS)
    while not chain.finished:
        chain.run_signalled("die")


def test_signal_at_named_points_with_handle_kept_in_use(tmp_path, stats):
    """The interrupt is caught and the same Store object keeps writing (finding 2): the
    plan completes and the store is exactly the plan's final state."""
    for k, point in enumerate(POINTS if SLOW else POINTS[::2] + ["catalog.committed"]):
        if point in ("base.written", "train.commit"):
            seed = 6001 + 2 * k  # odd seed: the plan trains explicitly
        else:
            seed = 6000 + 2 * k
        chain = SignalChain(tmp_path, seed, stats)
        # several interrupts in one run, at successive hits of the point
        # (the first catalog commit is Store.create's, before the writer's loop)
        hits = (1,) if point in ONCE else (2, 3, 5, 8) if point == "catalog.committed" else (1, 2, 4, 7)
        spec = ",".join(f"{point}@{n}:{'INT' if n % 2 else 'TERM'}" for n in hits)
        outcome, tail = chain.run_signalled("keep", fault=spec)
        assert outcome == "done"
        assert int(tail.split()[1]) >= 1, f"{point}: no interrupt was delivered"


@pytest.mark.parametrize("mode", ["die", "keep"])
def test_signals_at_random_moments(tmp_path, stats, mode):
    """Real SIGINT / SIGTERM from another process at random times."""
    rnd = random.Random(17 if mode == "die" else 19)
    seeds = iter(range(7000 if mode == "die" else 8000, 9000))
    chain = SignalChain(tmp_path, next(seeds), stats)
    runs = 24 if SLOW else 4
    for _ in range(runs):
        if chain.finished:
            chain = SignalChain(tmp_path, next(seeds), stats)
        n = 1 if mode == "die" else rnd.randint(3, 8)
        signals = [(rnd.uniform(0.0, 0.25), rnd.choice([signal.SIGINT, signal.SIGTERM]))
                   for _ in range(n)]
        chain.run_signalled(mode, signals=signals)
    while not chain.finished:
        chain.run_signalled(mode)
    assert stats["kills" if mode == "die" else "interrupts_survived"] >= runs // 2


def test_sigint_and_sigterm_against_zenstore_ingest(tmp_path, stats):
    """``zenstore ingest --batch-size 20`` interrupted by real SIGINT / SIGTERM at random
    moments and right after commits: every store opens and verifies clean, holds exactly
    the checkpointed rows, and rerunning the same command resumes to every row once.
    The interrupted commands run in forks of a warmed-up process that exit as
    ``python -m zenstore`` would (tests/_zygote.py); each rerun is a real one."""
    n = 1200
    x = np.random.default_rng(8).standard_normal((n, DIM)).astype(np.float32)
    src = tmp_path / "x.npy"
    np.save(src, x)
    rnd = random.Random(23)
    # normal runs: a SIGTERM and a SIGINT right after a commit, and one at a random moment
    stores = 3 if not SLOW else 12
    for k in range(stores):
        store = tmp_path / f"s{k}.zen"
        cmd = [sys.executable, "-m", "zenstore", "ingest", str(store), str(src), "--dim", str(DIM),
               "--n-base", "4", "--batch-size", "20", "--quiet"]
        clean_env = {e: v for e, v in os.environ.items() if e != "ZENSTORE_FAULT"}
        for attempt in range(3):
            env = dict(clean_env)
            if attempt == 0 and k % 2 == 0:  # right after a commit returned
                env["ZENSTORE_FAULT"] = f"catalog.committed@{rnd.randint(3, 30)}:{'INT' if k % 4 else 'TERM'}"
            err_path = tmp_path / f"stderr-{k}-{attempt}"
            proc = ZYGOTE.start("cli", cmd[3:], env, err_path)
            if "ZENSTORE_FAULT" not in env:
                deadline = time.monotonic() + 60
                while proc.poll() is None and not store.exists() and time.monotonic() < deadline:
                    time.sleep(0.005)
                time.sleep(rnd.uniform(0.05, 0.6))
                proc.send_signal(rnd.choice([signal.SIGINT, signal.SIGTERM]))
            proc.wait(timeout=180)
            err = err_path.read_bytes()
            if proc.returncode == 0:
                stats["not_reached"] += 1
                continue
            assert proc.returncode in INTERRUPTED | {-signal.SIGTERM}, err.decode()
            stats["kills"] += 1
            if not store.exists():
                continue
            assert verify_store(store) == [], err.decode()
            done, ids = crash._ingest_state(store, src)
            assert ids == list(range(done)), "the store must hold exactly the checkpointed rows"
        subprocess.run(cmd, env=clean_env, check=True, timeout=180)
        done, ids = crash._ingest_state(store, src)
        assert done == n and ids == list(range(n))
        assert verify_store(store) == []
        shutil.rmtree(store)


def test_interrupt_after_commit_in_process_keeps_batch_and_handle(tmp_path, monkeypatch):
    """In-process: KeyboardInterrupt raised right after the catalog commit of an add. The
    batch is committed and its segment kept; the same handle then sees it and its next
    write builds on it (finding 2: it used to drop the batch)."""
    from zenstore import catalog as catalog_mod

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, DIM)).astype(np.float32)
    path = tmp_path / "s.zen"
    with Store.create(path, dim=DIM, n_base=4, min_rows_per_base=4) as s:
        s.add(list(range(100)), x[:100], payloads=[{"i": i} for i in range(100)])
        calls = []

        def fault(point):
            if point == "catalog.committed" and not calls:
                calls.append(point)
                raise KeyboardInterrupt

        monkeypatch.setattr(catalog_mod, "fault", fault)
        with pytest.raises(KeyboardInterrupt):
            s.add(list(range(100, 200)), x[100:200], payloads=[{"i": i} for i in range(100, 200)])
        monkeypatch.setattr(catalog_mod, "fault", lambda point: None)
        assert len(s) == 200  # committed, and this handle sees it
        assert s.get(150).payload == {"i": 150}
        s.add(list(range(200, 300)), x[200:300])  # builds on the committed batch
        assert len(s) == 300 and s.get(150).payload == {"i": 150} and s.get(250).payload is None
        assert s.verify() == []
    with Store.open(path, readonly=True) as ro:
        assert len(ro) == 300 and sorted(ro.ids().tolist()) == list(range(300))
        assert ro.verify() == []
