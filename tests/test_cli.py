"""End-to-end CLI tests: every input format, both bad-row modes, resume after kill -9,
and every operator command, each in a process of its own: forks of a warmed-up process
that run ``zenstore.cli.main`` and exit as ``python -m zenstore`` would
(tests/_zygote.py); ``--version``, a bad command and the ingest killed with -9 run as
fresh ``python -m zenstore`` processes."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from zenstore import Store
from zenstore.synth import SyntheticEmbeddings

from ._zygote import SHARED as ZYGOTE

DIM = 128


def run(*args, check=True, cwd=None, real=False):
    """``zenstore ARGS``; ``real``: as a fresh ``python -m zenstore`` process."""
    if real:
        proc = subprocess.run([sys.executable, "-m", "zenstore", *map(str, args)], capture_output=True,
                              text=True, cwd=cwd, timeout=300)
    else:
        with tempfile.TemporaryDirectory() as d:
            out, err = Path(d) / "stdout", Path(d) / "stderr"
            rc = ZYGOTE.start("cli", list(map(str, args)), dict(os.environ), err, out, cwd).wait(timeout=300)
            proc = subprocess.CompletedProcess(args, rc, out.read_text() if out.exists() else "",
                                               err.read_text() if err.exists() else "")
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def vectors():
    return SyntheticEmbeddings(dim=DIM, seed=3).docs(0, 3000)


def store_ids(path):
    with Store.open(path, readonly=True) as s:
        return sorted(s.ids().tolist()), s.stats()


def test_version_and_help():
    assert run("--version", real=True).stdout.startswith("zenstore ")
    for cmd in ("ingest", "stats", "search", "verify", "compact", "export", "demo"):
        out = run(cmd, "--help").stdout
        assert "usage:" in out and "example" in out
    assert run("nonsense", check=False, real=True).returncode == 2


def test_ingest_npy_with_row_ids_then_operator_commands(tmp_path, vectors):
    np.save(tmp_path / "x.npy", vectors)
    store = tmp_path / "s.zen"
    out = run("ingest", store, tmp_path / "x.npy", "--dim", DIM, "--n-base", 16, "--json").stdout
    summary = json.loads(out)
    assert summary["rows_added"] == 3000 and summary["store_count"] == 3000
    assert summary["bytes_per_vector"] == DIM // 8 + 4
    ids, stats = store_ids(store)
    assert ids == list(range(3000)) and stats["n_base"] == 16

    st = json.loads(run("stats", store, "--json").stdout)
    assert st["count"] == 3000 and st["bytes_on_disk"]["codes"] == 3000 * DIM // 8
    assert "bytes per vector" in run("stats", store).stdout

    np.save(tmp_path / "q.npy", vectors[[5, 17]])
    res = [json.loads(line) for line in run("search", store, "--query", tmp_path / "q.npy", "-k", 3, "--json").stdout.splitlines()]
    assert [r["ids"][0] for r in res] == [5, 17] and len(res[0]["scores"]) == 3
    tsv = run("search", store, "--query", tmp_path / "q.npy", "-k", 2).stdout.splitlines()
    assert tsv[0].split("\t")[:3] == ["0", "1", "5"]

    assert run("verify", store).returncode == 0
    assert "->" in run("compact", store).stdout

    run("export", store, tmp_path / "out.npy")
    exported = np.load(tmp_path / "out.npy")
    exported_ids = np.load(tmp_path / "out.ids.npy")
    assert exported.shape == (3000, DIM) and sorted(exported_ids.tolist()) == list(range(3000))
    i = int(np.flatnonzero(exported_ids == 5)[0])
    cos = exported[i] @ vectors[5] / np.linalg.norm(exported[i])
    assert cos > 0.8
    run("export", store, tmp_path / "out.jsonl")
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert set(first) == {"id", "vector", "payload"} and len(first["vector"]) == DIM


def test_ingest_fvecs_and_ids_file(tmp_path, vectors):
    x = vectors[:500]
    rec = np.concatenate([np.full((500, 1), DIM, np.int32).view(np.float32), x], axis=1)
    rec.astype(np.float32).tofile(tmp_path / "x.fvecs")
    (tmp_path / "ids.txt").write_text("\n".join(f"doc{i}" for i in range(500)))
    store = tmp_path / "s.zen"
    run("ingest", store, tmp_path / "x.fvecs", "--ids", tmp_path / "ids.txt", "--dim", DIM,
        "--metric", "l2", "--n-base", 4, "--quiet")
    ids, stats = store_ids(store)
    assert ids == sorted(f"doc{i}" for i in range(500)) and stats["metric"] == "l2"
    (tmp_path / "bad.fvecs").write_bytes(b"\x05\x00\x00\x00abc")
    proc = run("ingest", store, tmp_path / "bad.fvecs", check=False)
    assert proc.returncode == 1 and "not an .fvecs file" in proc.stderr


def _write_jsonl(path, vectors, bad_lines=(), compress=False):
    lines = []
    for i, v in enumerate(vectors):
        if i in bad_lines:
            lines.append({"wrong-length": json.dumps({"id": i, "vector": v[:5].tolist()}),
                          "nan": json.dumps({"id": i, "vector": [float("nan")] + v[1:].tolist()}).replace("NaN", "NaN"),
                          "garbage": "{not json",
                          "dup": json.dumps({"id": 0, "vector": v.tolist()})}[bad_lines[i]])
        else:
            lines.append(json.dumps({"id": i, "vector": v.tolist(), "title": f"t{i}"}))
    data = ("\n".join(lines) + "\n").encode()
    if compress:
        import zstandard

        data = zstandard.ZstdCompressor().compress(data)
    Path(path).write_bytes(data)


@pytest.mark.parametrize("compress", [False, True])
def test_ingest_jsonl_fail_then_skip(tmp_path, vectors, compress):
    name = "x.jsonl.zst" if compress else "x.jsonl"
    bad = {3: "wrong-length", 40: "nan", 41: "garbage", 150: "dup"}
    _write_jsonl(tmp_path / name, vectors[:200], bad, compress)
    store = tmp_path / "s.zen"
    proc = run("ingest", store, tmp_path / name, "--dim", DIM, "--n-base", 4, "--batch-size", 50,
               check=False)
    assert proc.returncode == 1
    assert f"{name}: line 4: vector has 5 values" in proc.stderr
    assert not store.exists()  # the failing first batch was not committed; the empty store this run created is gone

    report = tmp_path / "rejected.jsonl"
    proc = run("ingest", store, tmp_path / name, "--on-error", "skip", "--report", report, "--batch-size", 50)
    assert "196 rows (4 skipped)" in proc.stdout
    ids, stats = store_ids(store)
    assert ids == sorted(set(range(200)) - {3, 40, 41, 150})
    rejected = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["at"] for r in rejected] == ["line 4", "line 41", "line 42", "line 151"]
    assert "NaN" in rejected[1]["reason"] and "invalid JSON" in rejected[2]["reason"]
    assert "duplicate" in rejected[3]["reason"] or "already stored" in rejected[3]["reason"]
    with Store.open(store, readonly=True) as s:
        assert s.get(7).payload == {"title": "t7"}


def test_ingest_parquet(tmp_path, vectors):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"doc": [f"d{i}" for i in range(300)],
                      "emb": [v.tolist() for v in vectors[:300]],
                      "lang": ["en"] * 300})
    pq.write_table(table, tmp_path / "x.parquet", row_group_size=64)
    store = tmp_path / "s.zen"
    run("ingest", store, tmp_path / "x.parquet", "--id-field", "doc", "--vector-field", "emb",
        "--dim", DIM, "--n-base", 4, "--batch-size", 50)
    ids, _ = store_ids(store)
    assert len(ids) == 300
    with Store.open(store, readonly=True) as s:
        assert s.get("d9").payload == {"lang": "en"}


def test_ingest_beir_directory(tmp_path, vectors):
    root = tmp_path / "coll"
    (root / "emb-test").mkdir(parents=True)
    np.save(root / "emb-test" / "corpus.npy", vectors[:100])
    (root / "emb-test" / "corpus_ids.json").write_text(json.dumps([f"c{i}" for i in range(100)]))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"c{i}", "title": f"T{i}", "text": "x"}) + "\n"
                                              for i in range(100)))
    store = tmp_path / "s.zen"
    run("ingest", store, root, "--dim", DIM, "--n-base", 2)
    with Store.open(store, readonly=True) as s:
        assert len(s) == 100 and s.get("c42").payload == {"title": "T42", "text": "x"}


def test_verify_reports_corruption_with_exit_code(tmp_path, vectors):
    np.save(tmp_path / "x.npy", vectors[:300])
    store = tmp_path / "s.zen"
    run("ingest", store, tmp_path / "x.npy", "--dim", DIM, "--n-base", 4)
    seg = next((store / "segments").iterdir())
    raw = bytearray(seg.read_bytes())
    raw[len(raw) // 2] ^= 1
    seg.write_bytes(bytes(raw))
    proc = run("verify", store, check=False)
    assert proc.returncode == 3 and "checksum" in proc.stdout
    assert run("stats", store, check=False).returncode == 1


def test_unknown_format_asks_for_format_flag(tmp_path):
    (tmp_path / "x.bin").write_bytes(b"123")
    proc = run("ingest", tmp_path / "s.zen", tmp_path / "x.bin", check=False)
    assert proc.returncode == 1 and "--format" in proc.stderr


def _checkpoint_offset(store):
    """Rows the ingest has committed so far: 0 until ``create`` has renamed the store into
    place (atomically, so an existing directory is a whole store); any error then is real."""
    if not store.exists():
        return 0
    with Store.open(store, readonly=True, verify=False) as s:
        cp = s.checkpoint(f"ingest:{os.path.abspath(store.parent / 'big.npy')}")
        return 0 if cp is None else cp["offset"]


def test_resume_after_kill_minus_9(tmp_path):
    n = 12000
    x = SyntheticEmbeddings(dim=256, seed=5).docs(0, n)
    np.save(tmp_path / "big.npy", x)
    store = tmp_path / "s.zen"
    cmd = [sys.executable, "-m", "zenstore", "ingest", str(store), str(tmp_path / "big.npy"),
           "--dim", "256", "--n-base", "8", "--batch-size", "300", "--quiet"]
    proc = subprocess.Popen(cmd)
    deadline = time.time() + 120
    while time.time() < deadline and _checkpoint_offset(store) < 1500:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _checkpoint_offset(store)
    assert 0 < done < n, "the kill should land mid-ingest"
    ids, _ = store_ids(store)
    assert ids == list(range(done))  # exactly the committed batches, nothing partial
    proc = run(*cmd[3:])
    ids, stats = store_ids(store)
    assert ids == list(range(n)) and stats["count"] == n
    assert run("verify", store).returncode == 0
    again = run(*cmd[3:], "--json")
    assert json.loads(again.stdout)["rows_added"] == 0  # finished: a rerun adds nothing


def test_changed_input_requires_restart(tmp_path, vectors):
    np.save(tmp_path / "x.npy", vectors[:100])
    store = tmp_path / "s.zen"
    run("ingest", store, tmp_path / "x.npy", "--dim", DIM, "--n-base", 2)
    np.save(tmp_path / "x.npy", vectors[100:250])
    time.sleep(0.01)
    os.utime(tmp_path / "x.npy")
    proc = run("ingest", store, tmp_path / "x.npy", check=False)
    assert proc.returncode == 1 and "--restart" in proc.stderr
    proc = run("ingest", store, tmp_path / "x.npy", "--restart", check=False)
    assert proc.returncode == 1 and "already stored" in proc.stderr  # ids 0..99 again


def test_demo_runs_small():
    proc = run("demo", "--dim", 256, "--docs", 1500, "--queries", 20)
    assert "reopened, identical: True" in proc.stdout and "recall@10" in proc.stdout
