"""Hostile environments for the catalog (LMDB) and the data files (issue 9, items 3, 5, 10).

Real processes SIGKILLed inside read transactions, a reader without write permission (as
user ``nobody`` when the suite runs as root), address-space limits (``RLIMIT_AS`` in a
child), a full file system (a 2 MB tmpfs; root only), files of the wrong type where a
segment should be, ``close()`` racing reads in other threads. Each case ends in a result
or in a ZenstoreError naming the file and the real cause, and nothing stored is lost.
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import zenstore
from zenstore import Store, verify_store
from zenstore import lmdb_env as catalog_mod
from zenstore.catalog import Catalog
from zenstore.records import SUB_DATABASES

from ._hostile import (
    DIM,
    HOLD_ITERATION,
    HOLD_READS,
    as_reader_without_write_access,
    kill_9,
    make_store,
    read_only_view,
    readonly_tree,
    run_limited,
    shared_dir,
    start_child,
    start_unprivileged,
    tiny_mount,
    unprivileged_result,
    vectors,
)


COUNTS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    print(f"\nhostile-env counts: {COUNTS}")


def catalog_size(path: str) -> int:
    return os.path.getsize(os.path.join(path, "catalog.mdb"))


def segment_files(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(path, "segments", "*.zseg")))


def tree_digest(path: str) -> dict:
    out = {}
    for d, _, files in os.walk(path):
        for name in files:
            p = os.path.join(d, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, path)] = hashlib.sha256(f.read()).hexdigest()
    return out


# --- stale reader slots ----------------------------------------------------------------------


def test_readers_killed_inside_a_read_do_not_make_the_catalog_grow(tmp_path):
    """A dead reader's slot pinned its snapshot: the writer could reuse no page and the
    catalog grew with every write (65 MB vs 3.3 MB flat in the issue)."""
    path = str(tmp_path / "s.zen")
    writer = make_store(path, n=100)
    rng = np.random.default_rng(7)

    def upserts(count: int) -> int:
        for _ in range(count):
            pads = [{"pad": rng.bytes(150).hex()} for _ in range(100)]
            writer.upsert(list(range(100)), vectors(100, seed=int(rng.integers(1 << 30))), payloads=pads)
        return catalog_size(path)

    upserts(3)
    kill_9(start_child(HOLD_ITERATION, path))  # a reader killed half way through iter_records
    settled = upserts(10)
    after = upserts(30)
    writer.close()
    COUNTS["catalog bytes after 13 / 43 upserts, a reader killed"] = (settled, after)
    # each batch rewrites ~33 KB of payloads: leaked slots grew the file by ~1.9 MB here
    assert after <= settled + 128 * 1024, f"catalog grew from {settled} to {after} bytes"
    with Store.open(path, readonly=True) as r:
        assert len(r) == 100 and verify_store(path) == []


def test_a_reader_table_full_of_dead_processes_is_reclaimed(tmp_path):
    """256 slots held by killed processes made every read in every process fail with a
    raw ReadersFullError while any process kept the environment open."""
    path = str(tmp_path / "s.zen")
    writer = make_store(path)  # keeps the lock table alive (LMDB resets it when no one has it open)
    kill_9(start_child(HOLD_READS, path, catalog_mod.MAX_READERS))  # every slot, then killed
    try:
        assert writer.get(3).payload == {"i": 3}  # a read in this process
        writer.add([500], vectors(1, seed=5))  # a write
        out = subprocess.run(
            [sys.executable, "-c", "import sys; from zenstore import Store; "
             "s = Store.open(sys.argv[1], readonly=True); print(len(s), s.get(500).id)", path],
            capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == ["51", "500"]  # a read in a new process
    finally:
        writer.close()


def test_live_readers_filling_the_table_get_a_clear_error(tmp_path):
    path = str(tmp_path / "s.zen")
    make_store(path).close()
    cat = Catalog(path, SUB_DATABASES, readonly=True)
    held = []
    try:
        with pytest.raises(zenstore.ResourceExhausted, match="reader slots"):
            for _ in range(catalog_mod.MAX_READERS + 1):
                cm = cat.read()
                cm.__enter__()
                held.append(cm)
        assert len(held) == catalog_mod.MAX_READERS
    finally:
        for cm in reversed(held):
            cm.__exit__(None, None, None)
        cat.close()
    with Store.open(path, readonly=True) as r:
        assert len(r) == 50


# --- a reader without write permission ------------------------------------------------------------

READ_EVERYTHING = """
out = {}
for name in sys.argv[2:]:
    try:
        with Store.open(os.path.join(path, name), readonly=True) as s:
            hits = s.search(s.get(3).vector, k=1)
            out[name] = [len(s), s.get(3).payload, sorted(s.ids().tolist())[:3], hits[0].id,
                         verify_store(os.path.join(path, name))]
    except Exception as exc:
        out[name] = [type(exc).__name__, str(exc)]
return out
"""


def test_reader_without_write_permission_reads_the_store():
    """readonly=True by a user who may read but not write the store (someone else's, or
    a read-only copy) raised CorruptStore: LMDB wanted to write its lock table. A
    segment that user may not read is a permission error naming the file."""
    with shared_dir() as d:
        for name in ("with-lock-table.zen", "without-lock-table.zen", "unreadable-segment.zen"):
            make_store(os.path.join(d, name)).close()
        os.unlink(os.path.join(d, "without-lock-table.zen", "catalog.mdb-lock"))
        seg = segment_files(os.path.join(d, "unreadable-segment.zen"))[0]
        readonly_tree(d)
        os.chmod(seg, 0)
        before = tree_digest(d)
        out = as_reader_without_write_access(READ_EVERYTHING, d, "with-lock-table.zen",
                                             "without-lock-table.zen", "unreadable-segment.zen")
        assert out[0] == "ok", out
        for name in ("with-lock-table.zen", "without-lock-table.zen"):
            assert out[1][name] == [50, {"i": 3}, [0, 1, 2], 3, []], (name, out[1][name])
        kind, message = out[1]["unreadable-segment.zen"]
        assert kind == "StorePermissionError" and seg in message and "permission" in message.lower(), message
        os.chmod(seg, 0o444)
        assert tree_digest(d) == before  # nothing written, not even a lock file


OPEN_AND_WAIT = """
with Store.open(path, readonly=True) as s:
    print("ready", flush=True)
    sys.stdin.readline()  # the parent tries to open a writer meanwhile
    return [len(s), s.get(7).payload]
"""


def _hold_writer_script() -> str:
    return ("import sys; from zenstore import Store; s = Store.open(sys.argv[1]); "
            "print('ready', flush=True); sys.stdin.read()")


def test_reader_without_write_permission_and_writers_exclude_each_other():
    """Without the lock table a reader is not registered, so a writer could reuse pages
    under it: a writer that runs keeps such a reader out (StoreLocked, saying what is
    needed), and while such a reader is open no writer can start."""
    if os.geteuid() != 0:
        pytest.skip("needs a writer with more rights than the reader (run the suite as root)")
    with shared_dir() as d:
        path = os.path.join(d, "s.zen")
        make_store(path).close()
        readonly_tree(path)  # root still writes; nobody cannot
        writer = start_child(_hold_writer_script(), path)
        try:
            out = as_reader_without_write_access("return len(Store.open(path, readonly=True))", path)
        finally:
            writer.stdin.close()
            writer.wait()
            writer.stdout.close()
            writer.stderr.close()
        assert out[:2] == ["error", "StoreLocked"], out
        assert "catalog.mdb-lock" in out[2] and "writer" in out[2], out

        reader = start_unprivileged(OPEN_AND_WAIT, path)
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()[-3000:]
        with pytest.raises(zenstore.StoreLocked):
            Store.open(path)
        reader.stdin.write("go\n")
        reader.stdin.flush()
        assert unprivileged_result(reader) == ["ok", [50, {"i": 7}]]
        with Store.open(path) as w:  # once the reader is gone the writer opens
            w.add([99], vectors(1, seed=3))
            assert len(w) == 51


def test_read_only_view_of_a_store_a_writer_uses(tmp_path):
    """Through a read-only mount (a container's ``:ro`` volume) LMDB silently read without
    its lock table, unseen by a writer using the store through another mount, which could
    reuse the pages being read. Such a reader reads while no writer runs, and gets
    StoreLocked while one does."""
    src = str(tmp_path / "src")
    os.makedirs(src)
    make_store(os.path.join(src, "s.zen")).close()
    with read_only_view(src, str(tmp_path / "ro")) as ro:
        path = os.path.join(ro, "s.zen")
        with Store.open(path, readonly=True) as r:
            assert len(r) == 50 and r.get(3).payload == {"i": 3}
        writer = start_child(_hold_writer_script(), os.path.join(src, "s.zen"))
        try:
            with pytest.raises(zenstore.StoreLocked, match="catalog.mdb-lock"):
                Store.open(path, readonly=True)
        finally:
            writer.stdin.close()
            writer.wait()
            writer.stdout.close()
            writer.stderr.close()
        assert verify_store(path) == []


# --- the memory map ---------------------------------------------------------------------------

WARM_UP = r"""
import tempfile
with Store.create(tempfile.mkdtemp() + "/warm.zen", dim=64, n_base=4) as w:  # load every kernel first
    w.add(list(range(100)), vectors(100), payloads=[{"w": 1}] * 100)
    w.search(vectors(1)[0], k=3)
"""


def test_address_space_limits(tmp_path):
    """The map was 1 TiB: under ``ulimit -v`` every open failed with CorruptStore (not
    corruption). Now a store opens and takes writes under a limit, and a limit too small
    for the catalog itself is named as such."""
    small, big = str(tmp_path / "small.zen"), str(tmp_path / "big.zen")
    make_store(small, n=200).close()
    with make_store(big, n=10) as s:
        for b in range(1, 11):  # ~5 MB of payloads (hex compresses to about half)
            ids = list(range(b * 10, b * 10 + 10))
            s.add(ids, vectors(10, seed=b), payloads=[{"pad": os.urandom(50_000).hex()} for _ in ids])
    assert catalog_size(big) > 4 << 20
    body = WARM_UP + r"""
big = sys.argv[2]
limit_address_space(512 << 20)
with Store.open(path, readonly=True) as r:
    n, p = len(r), r.get(3).payload
with Store.open(path) as w:
    w.add(list(range(1000, 1100)), vectors(100, seed=5), payloads=[{"j": 1}] * 100)
    m = len(w)
print("ok", n, p["i"], m)
limit_address_space(2 << 20)
try:
    Store.open(big, readonly=True)
    print("opened")
except zenstore.ZenstoreError as exc:
    print(type(exc).__name__, "|", exc)
"""
    out = run_limited(body, small, big)
    assert out.returncode == 0, out.stderr[-3000:]
    first, second = out.stdout.splitlines()
    assert first.split() == ["ok", "200", "3", "300"], out.stdout
    kind, _, message = second.partition(" | ")
    assert kind == "ResourceExhausted", second
    assert "address space" in message and big in message, message
    assert verify_store(small) == [] and verify_store(big) == []


def test_map_grows_for_a_write_larger_than_it(tmp_path, monkeypatch):
    """The map is sized from the file and grown as the catalog grows; a write that fills
    it is replayed in a fresh transaction after growing (nothing half-written)."""
    monkeypatch.setattr(catalog_mod, "MAP_STEP", 1 << 20)
    path = str(tmp_path / "s.zen")
    s = make_store(path, n=10)
    first = s.stats()["catalog_map_bytes"]
    pads = [{"pad": os.urandom(30_000).hex()} for _ in range(100)]  # 6 MB in one transaction
    s.add(list(range(100, 200)), vectors(100, seed=1), payloads=pads)
    assert s.stats()["catalog_map_bytes"] > first
    COUNTS["map bytes before / after a 6 MB write"] = (first, s.stats()["catalog_map_bytes"])
    assert s.get(150).payload == pads[50] and len(s) == 110
    s.close()
    with Store.open(path, readonly=True) as r:
        assert r.get(199).payload == pads[99]
    assert verify_store(path) == []


READ_WHILE_GROWING = r"""
import sys, time
import zenstore.lmdb_env
zenstore.lmdb_env.MAP_STEP = 1 << 20  # a small map, so the writer soon outgrows it
from zenstore import Store
path = sys.argv[1]
reads = 0
with Store.open(path, readonly=True) as r:
    print("ready", flush=True)
    first = r.stats()["catalog_map_bytes"]
    while True:
        n = len(r)
        for i in (0, n - 1):
            rec = r.get(i)
            assert rec.payload["i"] == i, (i, rec.payload)
        reads += 1
        if n >= 500:
            break
        time.sleep(0.002)
    print("done", reads, first, r.stats()["catalog_map_bytes"], flush=True)
"""


def test_a_reader_follows_a_writer_that_grew_the_map(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog_mod, "MAP_STEP", 1 << 20)
    path = str(tmp_path / "s.zen")
    w = make_store(path, n=1)
    reader = start_child(READ_WHILE_GROWING, path)
    for b in range(1, 500, 50):  # ~10 MB of payloads
        ids = list(range(b, b + 50))
        w.add(ids, vectors(50, seed=b), payloads=[{"i": i, "pad": os.urandom(10_000).hex()} for i in ids])
    w.close()
    out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err.decode()[-3000:]
    done, reads, first, last = out.decode().split()
    assert done == "done" and int(last) > int(first), out
    COUNTS["reader: passes, map bytes first / last"] = (int(reads), int(first), int(last))


def test_small_map_size_setting_gives_storage_full(tmp_path, monkeypatch):
    """``ZENSTORE_MAP_SIZE`` caps the map; reaching it was a raw MapFullError."""
    monkeypatch.setenv("ZENSTORE_MAP_SIZE", str(1 << 20))
    path = str(tmp_path / "s.zen")
    s = make_store(path, n=20)
    before = sorted(s.ids().tolist())
    pads = [{"pad": os.urandom(20_000).hex()} for _ in range(100)]  # 4 MB
    with pytest.raises(zenstore.StorageFull, match="ZENSTORE_MAP_SIZE"):
        s.add(list(range(100, 200)), vectors(100, seed=2), payloads=pads)
    assert sorted(s.ids().tolist()) == before
    s.add([500], vectors(1, seed=4), payloads=[{"small": True}])  # a write that fits still works
    s.close()
    assert verify_store(path) == []
    monkeypatch.setenv("ZENSTORE_MAP_SIZE", "lots")
    with pytest.raises(zenstore.InvalidArgument, match="ZENSTORE_MAP_SIZE"):
        Store.open(path, readonly=True)


# --- a full disk ---------------------------------------------------------------------------------


def _fill(store, rng, heavy: str, acked: list) -> None:
    """Add batches until the file system is full, appending each acknowledged id."""
    rows = 20 if heavy == "catalog" else 100
    for b in range(100_000):
        ids = list(range(b * rows, b * rows + rows))
        if heavy == "catalog":
            store.add(ids, vectors(rows, seed=b), payloads=[{"pad": rng.bytes(300).hex()} for _ in ids])
        else:
            store.add(ids, vectors(rows, seed=b, dim=store.dim))
        acked.extend(ids)
    raise AssertionError("the file system never filled")


@pytest.mark.parametrize("heavy", ["catalog", "segments"])
def test_full_disk_is_storage_full_and_loses_nothing(tmp_path, heavy):
    """Disk full in the catalog was a raw ``lmdb.Error ... Input/output error``; data
    files hit it as a raw OSError and left their temporary file behind."""
    rng = np.random.default_rng(3)
    with tiny_mount(str(tmp_path / "mnt"), "2m") as mnt:
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:
            f.write(b"\0" * (256 << 10))
        path = os.path.join(mnt, "s.zen")
        store = Store.create(path, dim=DIM if heavy == "catalog" else 1024, n_base=4, segment_fanout=64)
        acked: list[int] = []
        with pytest.raises(zenstore.StorageFull, match="no space") as info:
            _fill(store, rng, heavy, acked)
        n_acked = len(acked)
        assert n_acked > 0
        assert path in str(info.value)
        COUNTS[f"full disk ({heavy}): rows acknowledged, file named"] = (
            n_acked, os.path.relpath(str(info.value).split(":")[0], path))
        assert not glob.glob(os.path.join(path, "**", "*.tmp"), recursive=True)
        with Store.open(path, readonly=True) as r:  # every acknowledged batch, not the failed one
            assert sorted(r.ids().tolist()) == acked
        assert verify_store(path) == []
        os.unlink(filler)  # space again: the same Store takes writes
        store.add([10**6], vectors(1, seed=9, dim=store.dim))
        store.close()
        with Store.open(path) as w:
            assert len(w) == n_acked + 1 and 10**6 in w
        assert verify_store(path) == []


def test_cli_ingest_on_a_full_disk_prints_one_line(tmp_path):
    x = vectors(120_000, seed=1)  # 1.7 MB of segments, merged as they come
    src = str(tmp_path / "x.npy")
    np.save(src, x)
    with tiny_mount(str(tmp_path / "mnt"), "1m") as mnt:
        path = os.path.join(mnt, "s.zen")
        out = subprocess.run([sys.executable, "-m", "zenstore", "ingest", path, src, "--dim", str(DIM),
                              "--n-base", "4", "--batch-size", "20000", "--quiet"],
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 1, (out.stdout, out.stderr[-3000:])
        assert "Traceback" not in out.stderr and "no space" in out.stderr, out.stderr[-3000:]
        assert verify_store(path) == []


# --- data files that are not regular files ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["directory", "fifo", "device"])
def test_segment_that_is_not_a_regular_file(tmp_path, kind):
    """A directory gave a raw ``OSError: No such device``; a FIFO blocked ``open`` forever."""
    path = str(tmp_path / "s.zen")
    make_store(path).close()
    seg = segment_files(path)[0]
    os.unlink(seg)
    {"directory": os.mkdir, "fifo": os.mkfifo, "device": lambda p: os.symlink("/dev/zero", p)}[kind](seg)

    def unblock():  # on the old code: let a reader blocked on the FIFO go on
        try:
            os.close(os.open(seg, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    timer = threading.Timer(5.0, unblock)
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(zenstore.CorruptStore, match={"directory": "directory", "fifo": "FIFO",
                                                          "device": "device"}[kind]) as info:
            Store.open(path, readonly=True)
        assert seg in str(info.value)
        problems = verify_store(path)
        assert len(problems) == 1 and seg in problems[0], problems
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 4.0


# --- close() racing reads ----------------------------------------------------------------------------


@pytest.mark.parametrize("readonly", [True, False])
def test_close_racing_reads_in_other_threads(tmp_path, readonly):
    """A close() while other threads searched gave them raw ``lmdb.Error`` (closed object)."""
    path = str(tmp_path / "s.zen")
    make_store(path, n=200).close()
    q = vectors(1, seed=11)[0]
    errors: dict = {}
    calls = [0]
    for trial in range(12):
        store = Store.open(path, readonly=readonly)
        start = threading.Barrier(5)

        def reads(store=store):
            start.wait()
            for _ in range(2000):
                try:
                    store.search(q, k=3)
                    store.get(5)
                    for _ in store.iter_records(batch_size=50):
                        pass
                    calls[0] += 1
                except zenstore.StoreClosed:
                    return
                except Exception as exc:
                    errors[f"{type(exc).__module__}.{type(exc).__name__}: {exc}"] = trial
                    return

        threads = [threading.Thread(target=reads) for _ in range(4)]
        for t in threads:
            t.start()
        start.wait()
        time.sleep(0.005 * (trial % 6))
        store.close()
        for t in threads:
            t.join(60)
    assert not errors, errors
    assert calls[0] > 0
    COUNTS[f"close races ({'readonly' if readonly else 'writer'}): trials, read rounds"] = (12, calls[0])
    with Store.open(path, readonly=True) as r:
        assert len(r) == 200


def test_close_with_an_unfinished_iteration(tmp_path):
    path = str(tmp_path / "s.zen")
    make_store(path, n=20).close()
    store = Store.open(path, readonly=True)
    it = store.iter_records(batch_size=5)
    next(it)
    store.close()  # does not wait for the iteration, does not break it
    with pytest.raises(zenstore.StoreClosed):
        store.search(vectors(1)[0], k=1)
    again = Store.open(path, readonly=True)  # the same file, reopened while `it` still reads
    rest = sum(len(ids) for ids, _, _ in it)
    assert rest == 15
    assert len(again) == 20 and again.get(4).payload == {"i": 4}
    again.close()


def test_catalog_overhead_benchmark_runs(capsys):
    """benchmarks/catalog_overhead.py at a tiny size: its numbers are there and sane."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_catalog_overhead", os.path.join(os.path.dirname(os.path.dirname(__file__)), "benchmarks",
                                               "catalog_overhead.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--reps", "20"])
    assert out["reader_check_freed"] == catalog_mod.MAX_READERS  # the killed child's slots
    assert all(out[k] > 0 for k in ("read_raw_us", "read_catalog_us", "write_raw_us", "write_catalog_us"))
    assert "rerun: python benchmarks/catalog_overhead.py" in capsys.readouterr().out
