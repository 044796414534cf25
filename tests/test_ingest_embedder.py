"""``zenstore ingest --embedder SPEC``: text inputs embedded while loading.

The embedder is tests/_hash_embedder.py, loaded by a ``python:`` SPEC (no model, no
network). Commands run in-process through ``cli.main``; the resume tests run ``zenstore ingest`` as a
real subprocess and signal it mid-load.
"""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
import pytest

import zenstore
from zenstore import Store, cli
from zenstore.errors import IngestError
from zenstore.ingest import IngestOptions, ingest

from ._hash_embedder import DIM, HashEmbedder, hash_vector

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC = "python:_hash_embedder:HashEmbedder"
SLOW = "python:_hash_embedder:SlowHashEmbedder"
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega").split()


def env():
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": HERE + (os.pathsep + path if path else "")}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run(*args, check=True, extra_env=None):
    """``zenstore ARGS`` in this process (cli.main: the command's own code path, without a
    subprocess's start-up); the resume tests below run real subprocesses."""
    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in (extra_env or {})}
    os.environ.update(extra_env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main([str(a) for a in args])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    ran = Ran(rc, out.getvalue(), err.getvalue())
    if check and rc != 0:
        raise AssertionError(f"exit {rc}\nstdout: {ran.stdout}\nstderr: {ran.stderr}")
    return ran


def text_of(i: int) -> str:
    rng = np.random.default_rng(i)
    return " ".join(rng.choice(WORDS, size=6)) + f" doc{i}"


def write_jsonl(path, n, field="text", start=0):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": i, field: text_of(i), "lang": "en"}) + "\n")
    return path


def stored(path):
    with Store.open(path, readonly=True) as s:
        return sorted(s.ids().tolist()), s.dim, len(s)


@pytest.fixture(autouse=True)
def _on_path(monkeypatch):
    monkeypatch.syspath_prepend(HERE)  # python: SPECs in this process too


def test_jsonl_texts_are_embedded_stored_with_their_text_and_reranked(tmp_path):
    src = write_jsonl(tmp_path / "texts.jsonl", 400)
    store = tmp_path / "s.zen"
    out = json.loads(run("ingest", store, src, "--embedder", SPEC, "--n-base", 4, "--json").stdout)
    assert out["rows_added"] == 400 and out["store_count"] == 400
    with Store.open(store, readonly=True) as s:
        assert s.dim == DIM  # the store took the embedder's dimension
        assert sorted(s.ids().tolist()) == list(range(400))
        assert s.get(7).payload == {"text": text_of(7), "lang": "en"}
        # each document is found by its own text
        for i in (0, 123, 399):
            assert s.search(hash_vector(text_of(i)), k=1)[0].id == i
        results = zenstore.Reranker(s, HashEmbedder()).rerank(text_of(42), [3, 42, 77], top_n=2)
        assert results[0].id == 42 and results[0].text == text_of(42)


def test_beir_corpus_embeds_title_and_text(tmp_path):
    beir = tmp_path / "beir"
    beir.mkdir()
    docs = [{"_id": f"d{i}", "title": f"title{i} kappa", "text": text_of(i)} for i in range(150)]
    docs[5]["title"] = ""
    (beir / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    store = tmp_path / "s.zen"
    run("ingest", store, beir, "--embedder", SPEC, "--n-base", 2, "--quiet")
    with Store.open(store, readonly=True) as s:
        assert sorted(s.ids().tolist()) == sorted(d["_id"] for d in docs)
        assert s.get("d9").payload == {"title": "title9 kappa", "text": text_of(9)}
        for i in (9, 5):
            want = (docs[i]["title"] + " " + docs[i]["text"]).strip()
            assert s.search(hash_vector(want), k=1)[0].id == f"d{i}"
            score = s.rerank(hash_vector(want), [f"d{i}"])[0].score  # near 1: this very vector
            assert score > 0.9


def test_text_field_option_and_missing_field_errors(tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", 120, field="body")
    proc = run("ingest", tmp_path / "a.zen", src, "--embedder", SPEC, "--n-base", 2, check=False)
    assert proc.returncode == 1
    assert "line 1: no 'text' field" in proc.stderr and "--text-field" in proc.stderr
    assert not (tmp_path / "a.zen").exists()  # nothing committed: the store it made is gone
    run("ingest", tmp_path / "b.zen", src, "--embedder", SPEC, "--text-field", "body", "--n-base", 2)
    with Store.open(tmp_path / "b.zen", readonly=True) as s:
        assert len(s) == 120 and s.get(3).payload["body"] == text_of(3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": 1, "text": ["not", "a", "string"]}) + "\n", encoding="utf-8")
    proc = run("ingest", tmp_path / "c.zen", bad, "--embedder", SPEC, check=False)
    assert proc.returncode == 1 and "field 'text' is a list, not a string" in proc.stderr
    proc = run("ingest", tmp_path / "d.zen", bad, "--embedder", SPEC, "--on-error", "skip", "--json",
               check=False)  # the only row is skipped: nothing to train on
    assert proc.returncode == 1 and "no valid rows" in proc.stderr


def test_bad_specs_give_clear_errors(tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", 10)
    cases = {
        "nonsense": "no 'KIND:' prefix",
        "python:no_such_module_zs:X": "no module 'no_such_module_zs'",
        "python:_hash_embedder:Missing": "has no attribute 'Missing'",
        "python:_hash_embedder:NOT_AN_EMBEDDER": "neither an embedder nor a zero-argument factory",
    }
    for spec, message in cases.items():
        proc = run("ingest", tmp_path / "s.zen", src, "--embedder", spec, check=False)
        assert proc.returncode == 1 and message in proc.stderr, (spec, proc.stderr)
        assert not (tmp_path / "s.zen").exists()
    proc = run("ingest", tmp_path / "s.zen", tmp_path / "x.npy", "--embedder", SPEC, check=False)
    assert proc.returncode == 1 and "no such file" in proc.stderr
    np.save(tmp_path / "x.npy", np.zeros((3, DIM), np.float32))
    proc = run("ingest", tmp_path / "s.zen", tmp_path / "x.npy", "--embedder", SPEC, check=False)
    assert proc.returncode == 1 and "--embedder reads text" in proc.stderr


def test_wrong_dimension_is_refused_before_anything_is_loaded(tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", 50)
    proc = run("ingest", tmp_path / "a.zen", src, "--embedder", SPEC, "--dim", 64, check=False)
    assert proc.returncode == 1
    assert f"gives vectors of dimension {DIM}, --dim says 64" in proc.stderr
    Store.create(tmp_path / "b.zen", dim=64).close()
    proc = run("ingest", tmp_path / "b.zen", src, "--embedder", SPEC, check=False)
    assert proc.returncode == 1 and f"dimension {DIM}, the store has dimension 64" in proc.stderr
    proc = run("ingest", tmp_path / "b.zen", src, "--embedder", "python:_hash_embedder:wide", check=False)
    assert proc.returncode == 1 and "dimension 32, the store has dimension 64" in proc.stderr
    with Store.open(tmp_path / "b.zen", readonly=True) as s:
        assert len(s) == 0


def test_embedder_that_changes_dimension_mid_ingest_fails_naming_the_lines(tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", 300)
    proc = run("ingest", tmp_path / "s.zen", src, "--embedder", "python:_hash_embedder:ChangesDimension",
               "--n-base", 2, "--batch-size", 100, check=False)
    assert proc.returncode == 1
    assert "lines 101-200" in proc.stderr and "dimension 49, expected 48" in proc.stderr
    ids, _, _ = stored(tmp_path / "s.zen")
    assert ids == list(range(100))  # the first batch (embedded for training) was committed


def test_library_ingest_checks_options():
    with pytest.raises(zenstore.errors.InvalidArgument, match="SPEC string"):
        IngestOptions(embedder=HashEmbedder())
    with pytest.raises(zenstore.errors.InvalidArgument, match="text_field"):
        IngestOptions(text_field="")


def test_library_ingest_reuses_the_training_samples_vectors(tmp_path):
    src = write_jsonl(tmp_path / "t.jsonl", 500)
    emb = HashEmbedder()
    with Store.create(tmp_path / "s.zen", dim=DIM, n_base=4) as s:
        summary = ingest(s, [str(src)], IngestOptions(batch_size=100, embedder=SPEC), embedder=emb)
        assert summary.rows_added == 500 and len(s) == 500
    # the 96-row training sample came from the first batch; its vectors were reused:
    # 5 batches of 100 texts, one embed call each, none twice
    assert emb.calls == 5
    with Store.create(tmp_path / "t.zen", dim=DIM) as s:
        with pytest.raises(zenstore.errors.InvalidArgument, match="needs options.embedder"):
            ingest(s, [str(src)], IngestOptions(), embedder=emb)


def _committed(store, src):
    if not store.exists():
        return 0
    with Store.open(store, readonly=True, verify=False) as s:
        cp = s.checkpoint(f"ingest:{os.path.abspath(src)}")
        return 0 if cp is None else cp["offset"]


def _start_slow(store, src, n_batch=50):
    cmd = [sys.executable, "-m", "zenstore", "ingest", str(store), str(src), "--embedder", SLOW,
           "--n-base", "4", "--batch-size", str(n_batch), "--quiet"]
    return cmd, subprocess.Popen(cmd, env={**env(), "ZS_EMBED_SLEEP": "0.05"},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(store, src, rows, proc):
    deadline = time.time() + 120
    while time.time() < deadline and _committed(store, src) < rows and proc.poll() is None:
        time.sleep(0.05)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_resume_after_a_signal_adds_every_row_once(tmp_path, sig):
    n = 1000
    src = write_jsonl(tmp_path / "t.jsonl", n)
    store = tmp_path / "s.zen"
    cmd, proc = _start_slow(store, src)
    _wait_for(store, src, 200, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 130), err
    done = _committed(store, src)
    assert 0 < done < n, "the signal should land mid-ingest"
    ids, _, count = stored(store)
    assert ids == list(range(done)) and count == done  # exactly the committed batches
    # resuming with another embedder is refused, naming both
    proc = run("ingest", store, src, "--embedder", "python:_hash_embedder:wide", check=False)
    assert proc.returncode == 1 and f"dimension 32, the store has dimension {DIM}" in proc.stderr
    other = run("ingest", store, src, "--embedder", SPEC, "--n-base", 4, "--batch-size", 50, check=False)
    assert other.returncode == 1
    assert f"embedded with --embedder {SLOW!r} (dimension {DIM})" in other.stderr
    assert f"this run embedded with --embedder {SPEC!r}" in other.stderr
    assert stored(store)[0] == ids  # nothing added by the refused runs
    out = json.loads(run(*cmd[3:], "--json", extra_env={"ZS_EMBED_SLEEP": "0"}).stdout)
    assert out["rows_resumed"] == done and out["rows_added"] == n - done
    ids, _, count = stored(store)
    assert ids == list(range(n)) and count == n
    with Store.open(store, readonly=True) as s:  # resumed rows are the right vectors
        for i in (0, done - 1, done, n - 1):
            assert s.search(hash_vector(text_of(i)), k=1)[0].id == i
            assert s.get(i).payload["text"] == text_of(i)
    assert run("verify", store).returncode == 0


def test_a_vector_load_of_the_same_file_does_not_resume_as_text(tmp_path):
    """A checkpoint without an embedder (vectors read from the file) refuses a text run."""
    src = tmp_path / "v.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for i in range(100):
            f.write(json.dumps({"id": i, "vector": hash_vector(text_of(i)).tolist(), "text": text_of(i)}) + "\n")
        f.write("not json\n")  # line 101: the load stops there, two batches committed
    store = tmp_path / "s.zen"
    with Store.create(store, dim=DIM, n_base=2) as s:
        with pytest.raises(IngestError, match="line 101: invalid JSON"):
            ingest(s, [str(src)], IngestOptions(batch_size=40))
        assert len(s) == 80
        with pytest.raises(IngestError, match=r"read vectors \(no --embedder\)"):
            ingest(s, [str(src)], IngestOptions(batch_size=40, embedder=SPEC))
        assert len(s) == 80
