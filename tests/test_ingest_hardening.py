"""Bulk loading under bad input, long paths and signals (issue 9 items 9-10, issue 10 item 5).

The loader and ``Store`` decide a row's fate with the same functions, so ``--on-error
skip`` skips exactly the rows ``Store.add`` would refuse; a failed first load leaves no
empty store behind; every message names the file and the line or row; SIGTERM is a clean
interrupt and the rerun resumes exactly. Library-level cases run in process (fast); the
signal cases run the real ``zenstore ingest`` in a subprocess.
"""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zenstore
from zenstore import Store, cli
from zenstore.ingest import IngestOptions, ingest

DIM = 64


def rows(n, seed=0, dim=DIM):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write((rec if isinstance(rec, str) else json.dumps(rec)) + "\n")


def load(tmp_path, src, metric="cosine", name="s.zen", **options):
    """Create a store and ingest ``src`` into it; returns (summary, ids, report lines)."""
    report = tmp_path / (name + ".rejected.jsonl")
    opts = IngestOptions(report_path=str(report), **options)
    with Store.create(tmp_path / name, dim=DIM, metric=metric, n_base=2) as store:
        summary = ingest(store, [str(src)], opts)
        ids = sorted(store.ids().tolist())
    lines = [json.loads(x) for x in report.read_text().splitlines()] if report.exists() else []
    return summary, ids, lines


def main(capsys, *argv):
    """The CLI in process: (exit code, stdout, stderr). An exception escaping ``main`` is
    exactly a traceback the user would see, so it fails the test."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- one validation path (issue 10 item 5) ---------------------------------------------------


CASES = {  # name -> a row value (float64, cast by the store like any caller's input)
    "good": None,
    "nan": np.nan,
    "inf": np.inf,
    "beyond float32": 1e39,
    "zero": 0.0,
    "norm beyond 2^60": 1e18,
    "large": 1e3,
    "beyond the fp16 scale": 1e5,  # ip/l2: only the encoder can tell (residual scale > 65504)
}


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_row_problems_refuses_exactly_what_store_add_refuses(tmp_path, metric):
    """Every row ``row_problems`` flags, Store refuses; the only rows Store refuses beyond
    them are the encoder's (the loader isolates those by committing halves)."""
    from zenstore.validation import row_problems

    x = rows(len(CASES), seed=1).astype(np.float64)
    for i, value in enumerate(CASES.values()):
        if value is not None:
            x[i] = value
    names = list(CASES)
    with Store.create(tmp_path / "s", dim=DIM, metric=metric, n_base=2) as store:
        store.train(rows(50, seed=2))
        refused, encoder = set(), set()
        for i in range(len(x)):
            try:
                store.add([i], x[i : i + 1])
            except zenstore.InvalidVector as exc:
                (encoder if "fp16" in str(exc) else refused).add(names[i])
    with np.errstate(over="ignore"):
        flagged = {names[i] for i, _ in row_problems(x.astype(np.float32), DIM, metric)}
    assert flagged == refused
    if metric == "cosine":
        assert refused == {"nan", "inf", "beyond float32", "zero"} and not encoder
    else:
        assert refused == {"nan", "inf", "beyond float32", "norm beyond 2^60"}
        assert encoder == {"beyond the fp16 scale"}


def _reference_problems(x, metric):
    """The plain definitions, float64 and elementwise: the twin of the fast float32 pass."""
    out = {}
    for i, row in enumerate(x.astype(np.float64)):
        if not np.isfinite(row).all():
            out[i] = "nan"
        elif metric == "cosine" and not np.any(row != 0):
            out[i] = "zero"
        elif metric != "cosine" and np.sqrt(np.sum(row * row)) > 2.0**60:
            out[i] = "long"
    return out


def _reference_rescale(x):
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    bad = (norms < 2.0**-40) | (norms > 2.0**40)
    out = x.copy()
    out[bad] = (x[bad].astype(np.float64) * np.exp2(-np.round(np.log2(norms[bad])))[:, None]).astype(np.float32)
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), metric=st.sampled_from(["cosine", "ip", "l2"]), dim=st.sampled_from([64, 96, 1000]))
def test_fast_row_checks_match_the_plain_definitions(data, metric, dim):
    from zenstore.validation import NONFINITE, row_problems, rescale_for_cosine

    n = data.draw(st.integers(1, 6))
    scale = data.draw(st.sampled_from([1.0, 1e-30, 1e-20, 1e15, 1.2e17, 1.5e17, 1e19, 3e38]))
    with np.errstate(over="ignore"):  # values beyond float32 become inf, as a caller's would
        x = rows(n, seed=data.draw(st.integers(0, 10**6)), dim=dim) * np.float32(scale)
    for i in range(n):
        kind = data.draw(st.sampled_from(["keep", "zero", "nan", "inf", "one big", "one tiny"]))
        if kind == "zero":
            x[i] = 0
        elif kind in ("nan", "inf"):
            x[i, data.draw(st.integers(0, dim - 1))] = np.nan if kind == "nan" else -np.inf
        elif kind == "one big":
            x[i] = 0
            x[i, 0] = np.float32(data.draw(st.sampled_from([2.0**60, 2.0**60 * 1.0001, 2.0**59.99])))
        elif kind == "one tiny":
            x[i] = 0
            x[i, -1] = np.float32(1e-44)  # a denormal: its square underflows to 0
    got = {i: ("nan" if r == NONFINITE else "zero" if "zeros" in r else "long")
           for i, r in row_problems(x, dim, metric)}
    assert got == _reference_problems(x, metric)
    finite = np.isfinite(x).all(axis=1) & np.any(x != 0, axis=1)
    np.testing.assert_array_equal(rescale_for_cosine(x[finite]), _reference_rescale(x[finite]))


def test_row_problems_reports_wrong_lengths_first():
    from zenstore.validation import row_problems

    x = rows(4)
    x[1] = np.nan
    lengths = np.array([DIM, DIM, DIM + 1, DIM])
    problems = dict(row_problems(x, DIM, "l2", lengths))
    assert set(problems) == {1, 2} and "65 values" in problems[2] and "NaN" in problems[1]
    assert [i for i, _ in row_problems(rows(3, dim=128), DIM, "ip")] == [0, 1, 2]


def test_store_refusals_name_the_rows_with_the_loaders_reasons(tmp_path):
    from zenstore.validation import as_matrix, row_problems

    nan_row, long_row = rows(10), rows(10)
    nan_row[3], long_row[7] = np.nan, 1e18
    with Store.create(tmp_path / "s", dim=DIM, metric="l2", n_base=2) as store:
        for x, row in ((nan_row, 3), (long_row, 7)):
            reason = dict(row_problems(x, DIM, "l2"))[row]
            with pytest.raises(zenstore.InvalidVector) as info:
                store.add(list(range(10)), x)
            assert f"rows {row}: {reason}" in str(info.value)
        assert len(store) == 0
    both = nan_row.copy()
    both[7] = 1e18
    with pytest.raises(zenstore.InvalidVector, match=r"rows 3: NaN.*; rows 7: .*2\^60"):
        as_matrix(both, DIM, metric="l2")  # the one-pass form Store can switch to


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_skip_a_row_beyond_2_60_instead_of_failing_the_load(tmp_path, metric):
    x = rows(200)
    x[7] = 1e18  # finite in float32, norm far beyond 2^60
    np.save(tmp_path / "x.npy", x)
    summary, ids, report = load(tmp_path, tmp_path / "x.npy", metric, on_error="skip", batch_size=64)
    assert ids == [i for i in range(200) if i != 7]
    assert summary.rows_added == 199 and summary.rows_skipped == 1
    assert report == [{"file": str(tmp_path / "x.npy"), "at": "row 7", "reason": report[0]["reason"]}]
    assert "2^60" in report[0]["reason"]


class InterruptAdd:
    """Wraps ``store.add``: raises KeyboardInterrupt instead of the ``n``-th call."""

    def __init__(self, store, n):
        self.add, self.n = store.add, n

    def __call__(self, *args, **kwargs):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt
        return self.add(*args, **kwargs)


@pytest.mark.parametrize("fmt", ["npy", "jsonl"])
def test_skip_rows_only_the_encoder_refuses_and_resume_exactly(tmp_path, fmt):
    """Rows whose residual scale is beyond fp16 pass every row check; skip mode finds them
    by committing halves of the batch, and an interrupt between those partial commits
    resumes exactly (no row lost, duplicated or counted twice)."""
    x = rows(100)
    bad = [13, 14, 41, 77]
    x[bad] = 1e5
    src = tmp_path / f"x.{fmt}"
    if fmt == "npy":
        np.save(src, x)
    else:
        write_jsonl(src, [{"id": i, "vector": v.tolist()} for i, v in enumerate(x)])
    good = [i for i in range(100) if i not in bad]
    opts = IngestOptions(on_error="skip", batch_size=32, report_path=str(tmp_path / "r.jsonl"))
    with Store.create(tmp_path / "once.zen", dim=DIM, metric="l2", n_base=2) as store:
        summary = ingest(store, [str(src)], opts)
        assert sorted(store.ids().tolist()) == good
        assert (summary.rows_added, summary.rows_skipped) == (96, 4)
    report = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    where = "row" if fmt == "npy" else "line"
    assert [r["at"] for r in report] == [f"{where} {i + (fmt == 'jsonl')}" for i in bad]
    assert all("fp16" in r["reason"] for r in report)
    partial = 0
    for n in (2, 4, 7):  # interrupt at different partial commits, then finish
        with Store.create(tmp_path / f"i{n}.zen", dim=DIM, metric="l2", n_base=2) as store:
            store.add = InterruptAdd(store, n)
            with pytest.raises(KeyboardInterrupt):
                ingest(store, [str(src)], dataclasses.replace(opts, report_path=None))
            del store.add
            partial += "within" in (store.checkpoint(f"ingest:{src}") or {})
            first = sorted(store.ids().tolist())
            assert first == good[: len(first)]  # commits go in input order: a prefix
            again = ingest(store, [str(src)], dataclasses.replace(opts, report_path=None))
            assert sorted(store.ids().tolist()) == good
            assert again.rows_resumed + again.rows_added + again.rows_skipped == 100
            assert store.checkpoint(f"ingest:{src}")["added"] == 96
            assert store.checkpoint(f"ingest:{src}")["skipped"] == 4
    assert partial >= 2  # most interrupts landed between the partial commits of a batch


def test_fail_mode_names_the_file_and_row_not_the_batch_index(tmp_path):
    x = rows(40)
    x[13] = 1e18
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(zenstore.IngestError, match=r"x\.npy: row 13: .*2\^60") as info:
        load(tmp_path, tmp_path / "x.npy", "l2", batch_size=5)
    assert "nothing of this batch" in str(info.value)


# --- ingest --on-error skip (issue 9 item 9) -----------------------------------------------


def test_skip_a_payload_with_nan(tmp_path):
    x = rows(50)
    records = [{"id": i, "vector": x[i].tolist(), "t": float("nan") if i == 3 else 1.0}
               for i in range(50)]
    write_jsonl(tmp_path / "p.jsonl", records)  # json.dumps writes NaN, json.loads reads it
    summary, ids, report = load(tmp_path, tmp_path / "p.jsonl", on_error="skip")
    assert ids == [i for i in range(50) if i != 3] and summary.rows_skipped == 1
    assert report[0]["at"] == "line 4" and "payload" in report[0]["reason"]
    with pytest.raises(zenstore.IngestError, match=r"p\.jsonl: line 4: payload"):
        load(tmp_path, tmp_path / "p.jsonl", name="f.zen")


def test_payload_problem_is_the_check_store_add_makes(tmp_path):
    from zenstore.validation import payload_problem

    bad = [{"a": float("nan")}, {"a": float("inf")}, {"a": object()}, {"a": "\ud800"}, "text"]
    good = [{"a": 1.5, "b": ["x", None]}, None]
    with Store.create(tmp_path / "s", dim=DIM, n_base=2) as store:
        store.train(rows(20))
        for i, p in enumerate(bad + good):
            refused = False
            try:
                store.add([i], rows(1, seed=i), payloads=[p])
            except zenstore.InvalidArgument:
                refused = True
            assert refused == (payload_problem(p) is not None), p


def test_skip_a_str_id_that_is_not_valid_unicode(tmp_path):
    x = rows(6)
    lines = [json.dumps({"id": f"d{i}", "vector": x[i].tolist()}) for i in range(6)]
    lines[2] = '{"id": "\\ud800", "vector": %s}' % json.dumps(x[2].tolist())  # lone surrogate
    write_jsonl(tmp_path / "u.jsonl", lines)
    summary, ids, report = load(tmp_path, tmp_path / "u.jsonl", on_error="skip")
    assert ids == sorted(f"d{i}" for i in range(6) if i != 2)
    assert report[0]["at"] == "line 3" and "Unicode" in report[0]["reason"]


def test_training_sample_uses_only_valid_rows_in_an_ip_store(tmp_path):
    x = rows(100)
    records = [{"id": i, "vector": ([1e19] * DIM if i == 5 else x[i].tolist())} for i in range(100)]
    write_jsonl(tmp_path / "t.jsonl", records)
    summary, ids, report = load(tmp_path, tmp_path / "t.jsonl", "ip", on_error="skip")
    assert summary.trained and ids == [i for i in range(100) if i != 5]
    assert [r["at"] for r in report] == ["line 6"]
    x[9] = 1e18  # the same for a matrix file, whose sample reads evenly spaced rows
    np.save(tmp_path / "t.npy", x)
    summary, ids, report = load(tmp_path, tmp_path / "t.npy", "ip", name="m.zen",
                                on_error="skip", train_sample=100)
    assert summary.trained and len(ids) == 99 and [r["at"] for r in report] == ["row 9"]


def test_jsonl_batches_of_mixed_lengths(tmp_path):
    x = rows(60)
    # batch 1 (lines 1-20): all 64 values; batches 2-3: mostly 40 values, a few of 64
    keep = set(range(20)) | {25, 40, 45, 50}
    records = [{"id": i, "vector": x[i].tolist() if i in keep else x[i, :40].tolist()}
               for i in range(60)]
    write_jsonl(tmp_path / "m.jsonl", records)
    summary, ids, report = load(tmp_path, tmp_path / "m.jsonl", on_error="skip", batch_size=20)
    assert ids == sorted(keep) and summary.rows_skipped == 60 - len(keep)
    assert {r["reason"] for r in report} == {"vector has 40 values, the store has dimension 64"}
    with Store.open(tmp_path / "s.zen", readonly=True) as store:
        for i in keep:  # the minority rows of a batch are stored as given, not as NaN
            v = store.get(i).vector
            assert v @ x[i] / np.linalg.norm(v) / np.linalg.norm(x[i]) > 0.7


def test_jsonl_whose_first_batch_has_another_length_still_trains(tmp_path):
    x = rows(30)
    records = [{"id": i, "vector": x[i, :40].tolist() if i < 10 else x[i].tolist()} for i in range(30)]
    write_jsonl(tmp_path / "m.jsonl", records)
    summary, ids, _ = load(tmp_path, tmp_path / "m.jsonl", on_error="skip", batch_size=10)
    assert summary.trained and ids == list(range(10, 30))


def test_a_matrix_file_of_another_dimension_fails_whole(tmp_path):
    with Store.create(tmp_path / "s.zen", dim=DIM, n_base=2) as store:
        store.train(rows(20))
        np.save(tmp_path / "x.npy", rows(5, dim=128))
        with pytest.raises(zenstore.IngestError, match=r"x\.npy: vectors have 128 values.*64"):
            ingest(store, [str(tmp_path / "x.npy")], IngestOptions(on_error="skip"))
        assert store.checkpoint(f"ingest:{tmp_path / 'x.npy'}") is None


def test_fvecs_row_with_another_dimension_is_named(tmp_path):
    x = rows(8)
    raw = np.concatenate([np.full((8, 1), DIM, np.int32).view(np.float32), x], axis=1)
    raw[5, 0] = np.array([DIM + 2], np.int32).view(np.float32)[0]
    raw.tofile(tmp_path / "x.fvecs")
    with pytest.raises(zenstore.IngestError, match=r"x\.fvecs: row 5: .*66"):
        load(tmp_path, tmp_path / "x.fvecs", batch_size=3)


# --- checkpoint names ----------------------------------------------------------------------


def _deep_dir(tmp_path, total_bytes):
    d = tmp_path
    while len(str(d).encode()) < total_bytes:
        d = d / ("d" * 60)
    d.mkdir(parents=True)
    return d


class StopAfter:
    """A progress callback that interrupts the load after ``n`` committed batches."""

    def __init__(self, n):
        self.n = n

    def __call__(self, progress):
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


@pytest.mark.parametrize("kind", ["long", "not utf-8"])
def test_long_or_undecodable_input_paths_resume_exactly(tmp_path, kind):
    from zenstore.ingest import checkpoint_name

    if kind == "long":
        src = _deep_dir(tmp_path, 420) / "x.npy"
    else:
        src = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/x\xff.npy"))
    x = rows(100)
    np.save(src, x)
    name = checkpoint_name(str(src))
    assert len(name.encode("utf-8")) <= 400 and "x" in name
    with Store.create(tmp_path / "s.zen", dim=DIM, n_base=2) as store:
        with pytest.raises(KeyboardInterrupt):
            ingest(store, [str(src)], IngestOptions(batch_size=30), progress=StopAfter(2))
        assert sorted(store.ids().tolist()) == list(range(60))
        assert store.checkpoint(name)["offset"] == 60
        summary = ingest(store, [str(src)], IngestOptions(batch_size=30))
        assert summary.rows_resumed == 60 and summary.rows_added == 40
        assert sorted(store.ids().tolist()) == list(range(100))


def test_short_paths_keep_their_readable_checkpoint_name(tmp_path):
    from zenstore.ingest import checkpoint_name

    assert checkpoint_name(str(tmp_path / "x.npy")) == f"ingest:{tmp_path / 'x.npy'}"


# --- the CLI: failed first loads, inferred dim (issue 9 item 9) -------------------------------


def test_failed_first_ingest_removes_the_store_it_created(tmp_path, capsys):
    x = rows(20)
    records = [{"id": i, "vector": x[i].tolist()} for i in range(20)]
    records[4] = {"id": 4, "vector": [float("nan")] * DIM}
    write_jsonl(tmp_path / "bad.jsonl", records)
    store = tmp_path / "s.zen"
    code, _, err = main(capsys, "ingest", store, tmp_path / "bad.jsonl", "--dim", DIM, "--n-base", 2)
    assert code == 1 and "bad.jsonl: line 5" in err and not store.exists()
    records[4] = {"id": 4, "vector": x[4].tolist()}
    write_jsonl(tmp_path / "bad.jsonl", records)
    code, _, err = main(capsys, "ingest", store, tmp_path / "bad.jsonl", "--dim", DIM, "--n-base", 2)
    assert code == 0, err
    assert store_ids(store) == list(range(20))


def test_failed_later_batch_keeps_the_committed_ones(tmp_path, capsys):
    x = rows(20)
    x[15] = np.nan
    np.save(tmp_path / "x.npy", x)
    store = tmp_path / "s.zen"
    code, _, err = main(capsys, "ingest", store, tmp_path / "x.npy", "--dim", DIM, "--n-base", 2,
                        "--batch-size", 5)
    assert code == 1 and "row 15" in err
    assert store_ids(store) == list(range(15))


def test_dim_is_inferred_from_the_input_when_omitted(tmp_path, capsys):
    np.save(tmp_path / "x.npy", rows(30))
    write_jsonl(tmp_path / "x.jsonl", [{"id": i, "vector": v.tolist()} for i, v in enumerate(rows(30))])
    for src in ("x.npy", "x.jsonl"):
        store = tmp_path / f"{src}.zen"
        code, _, err = main(capsys, "ingest", store, tmp_path / src, "--n-base", 2)
        assert code == 0, err
        with Store.open(store, readonly=True) as s:
            assert s.dim == DIM and len(s) == 30


def test_inferred_dim_need_not_be_a_multiple_of_64(tmp_path, capsys):
    """Any dimension is stored (zero-padded inside): a 100-d input makes a 100-d store."""
    x = rows(30, dim=100)
    np.save(tmp_path / "x.npy", x)
    code, _, err = main(capsys, "ingest", tmp_path / "s.zen", tmp_path / "x.npy", "--n-base", 2)
    assert code == 0, err
    with Store.open(tmp_path / "s.zen", readonly=True) as s:
        assert s.dim == 100 and len(s) == 30 and s.get(3).vector.shape == (100,)


def test_dim_given_for_an_existing_store_must_match(tmp_path, capsys):
    np.save(tmp_path / "x.npy", rows(30))
    store = tmp_path / "s.zen"
    Store.create(store, dim=128).close()  # e.g. left empty by an older version
    code, _, err = main(capsys, "ingest", store, tmp_path / "x.npy", "--n-base", 2)
    assert code == 1 and "holds no vectors" in err and store.exists()
    code, _, err = main(capsys, "ingest", store, tmp_path / "x.npy", "--dim", DIM)
    assert code == 1 and "dimension 128" in err


def store_ids(path):
    with Store.open(path, readonly=True) as s:
        return sorted(s.ids().tolist())


# --- the CLI: holes and tracebacks (issue 9 item 10) -----------------------------------------


def test_search_with_an_empty_query_file_is_a_clean_error(tmp_path, capsys):
    np.save(tmp_path / "x.npy", rows(30))
    assert main(capsys, "ingest", tmp_path / "s.zen", tmp_path / "x.npy", "--dim", DIM, "--n-base", 2)[0] == 0
    (tmp_path / "q.npy").write_bytes(b"")
    code, _, err = main(capsys, "search", tmp_path / "s.zen", "--query", tmp_path / "q.npy")
    assert code == 1 and "q.npy" in err
    (tmp_path / "q.npy").write_text("not numpy")
    code, _, err = main(capsys, "search", tmp_path / "s.zen", "--query", tmp_path / "q.npy")
    assert code == 1 and "q.npy" in err


def test_export_refuses_an_extension_it_cannot_write(tmp_path, capsys):
    np.save(tmp_path / "x.npy", rows(30))
    assert main(capsys, "ingest", tmp_path / "s.zen", tmp_path / "x.npy", "--dim", DIM, "--n-base", 2)[0] == 0
    with pytest.raises(SystemExit) as info:
        main(capsys, "export", tmp_path / "s.zen", tmp_path / "out.csv")
    assert info.value.code == 2 and "out.csv" in capsys.readouterr().err
    assert not list(tmp_path.glob("out*"))
    code, out, _ = main(capsys, "export", tmp_path / "s.zen", tmp_path / "out.csv", "--format", "npy")
    assert code == 0 and "out.csv.npy" in out  # says what it wrote
    assert (tmp_path / "out.csv.npy").exists()


BAD_INPUTS = {
    "empty.npy": b"",
    "short.npy": b"\x93NUMPY\x01\x00",
    "garbage.fvecs": b"\x40\x00\x00\x00" + b"\x00" * 10,
    "garbage.jsonl.zst": b"\x28\xb5\x2f\xfd" + b"\x00" * 40,
    "latin1.jsonl": b'{"id": 1, "vector": [1.0]}\n\xff\xfe\n',
    "garbage.parquet": b"PAR1" + b"\x00" * 40,
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_files_never_print_a_traceback(tmp_path, capsys, name):
    (tmp_path / name).write_bytes(BAD_INPUTS[name])
    code, _, err = main(capsys, "ingest", tmp_path / "s.zen", tmp_path / name, "--dim", DIM,
                        "--on-error", "skip")
    assert code == 1 and name in err and "Traceback" not in err
    assert not (tmp_path / "s.zen").exists()


def test_bad_ids_file_and_beir_directory_never_print_a_traceback(tmp_path, capsys):
    np.save(tmp_path / "x.npy", rows(4))
    (tmp_path / "ids.json").write_text("{not json")
    code, _, err = main(capsys, "ingest", tmp_path / "s.zen", tmp_path / "x.npy", "--ids",
                        tmp_path / "ids.json", "--dim", DIM)
    assert code == 1 and "ids.json" in err
    beir = tmp_path / "beir"
    (beir / "emb").mkdir(parents=True)
    np.save(beir / "emb" / "corpus.npy", rows(2))
    (beir / "emb" / "corpus_ids.json").write_text('["a", "b"]')
    (beir / "corpus.jsonl").write_text('{"_id": "a"}\n{broken\n')
    code, _, err = main(capsys, "ingest", tmp_path / "b.zen", beir, "--dim", DIM)
    assert code == 1 and "corpus.jsonl" in err and "line 2" in err


def test_help_documents_the_exit_codes():
    text = cli.build_parser().format_help()
    assert "130" in text and "143" in text


# --- SIGTERM (issue 9 item 10) ----------------------------------------------------------------


def _offset(store, src):
    try:
        with Store.open(store, readonly=True) as s:
            cp = s.checkpoint(f"ingest:{os.path.abspath(src)}")
    except zenstore.ZenstoreError:  # not created yet
        return 0
    return 0 if cp is None else cp["offset"]


def test_sigterm_mid_ingest_is_a_clean_interrupt_and_the_rerun_resumes_exactly(tmp_path):
    """A real ``zenstore ingest`` sent SIGTERM (then, on the rerun, SIGINT) mid-load: a
    clean exit with the documented code, a store that verifies, holding exactly the
    checkpointed rows; the final rerun resumes exactly."""
    n = 10000  # ~4 s of loading here: the kills land mid-load with a wide margin
    src = tmp_path / "x.npy"
    np.save(src, rows(n, dim=256))
    store = tmp_path / "s.zen"
    cmd = [sys.executable, "-m", "zenstore", "ingest", str(store), str(src), "--dim", "256", "--n-base", "4",
           "--batch-size", "200", "--quiet"]
    for target, sig, code in ((400, signal.SIGTERM, 143), (2400, signal.SIGINT, 130)):
        proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while proc.poll() is None and _offset(store, src) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == code, err
        assert "Traceback" not in err and "rerun the same command" in err
        assert zenstore.verify_store(store) == []
        done = _offset(store, src)
        assert target <= done < n and store_ids(store) == list(range(done))
    proc = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["rows_resumed"] == done and summary["rows_added"] == n - done
    assert store_ids(store) == list(range(n))


def test_stop_signals_hold_a_signal_until_the_commit_returns():
    before = signal.getsignal(signal.SIGTERM)
    signals = cli.StopSignals()
    signals.install()
    try:
        with pytest.raises(cli.Interrupted) as info:
            with signals.held():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.01)  # the handler has run by now, and raised nothing
                reached = True
        assert reached and info.value.signum == signal.SIGTERM
        os.kill(os.getpid(), signal.SIGINT)  # once stopping, later signals are ignored
        time.sleep(0.01)
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGTERM) is before




def test_sigterm_during_a_commit_waits_for_the_commit(tmp_path):
    src = tmp_path / "x.npy"
    np.save(src, rows(1000))
    store = tmp_path / "s.zen"
    args = ["ingest", str(store), str(src), "--dim", str(DIM), "--n-base", "2", "--batch-size", "100",
            "--quiet"]
    # a SIGTERM that arrives while the 3rd batch's transaction is open
    env = {**os.environ, "ZENSTORE_FAULT": "add.commit@3:TERM"}
    proc = subprocess.run([sys.executable, "-m", "zenstore", *args], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr
    assert zenstore.verify_store(store) == []
    assert _offset(store, src) == 300 and store_ids(store) == list(range(300))
    proc = subprocess.run([sys.executable, "-m", "zenstore", *args], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and store_ids(store) == list(range(1000))
