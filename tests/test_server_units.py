"""The server's parts without a server: keys file and CLI, the key check, the metrics
table, the text index, vector decoding, score mapping, config."""

from __future__ import annotations

import base64
import json
import os
import stat

import numpy as np
import pytest

import zenstore
from tests._server import build_store, doc_text
from zenstore.cli import main
from zenstore.server import Limits, ServerConfig, add_key, read_keys, revoke_key
from zenstore.server.httperrors import ApiError
from zenstore.server.keys import KeyFileError, KeyRing
from zenstore.server.metrics import Metrics
from zenstore.server.service import relevance
from zenstore.server.textindex import SidecarTextIndex
from zenstore.server.vectors import decode_vector


def test_keys_cli_prints_the_key_last_and_stores_only_its_hash(tmp_path, capsys):
    f = str(tmp_path / "keys.json")
    assert main(["keys", "add", f, "--scope", "write", "--name", "job"]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    with open(f) as fh:
        assert key.startswith("zsk_") and key not in fh.read()
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert main(["keys", "list", f, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["scope"] == "write" and listed[0]["name"] == "job" and "sha256" not in listed[0]
    ring = KeyRing(f)
    assert ring.authorize(f"Bearer {key}", "write").scope == "write"
    with pytest.raises(ApiError) as err:
        ring.authorize(f"Bearer {key}", "admin")
    assert err.value.status == 403
    assert main(["keys", "revoke", f, listed[0]["id"]]) == 0
    assert read_keys(f) == []
    assert main(["keys", "revoke", f, listed[0]["id"]]) == 1
    assert "no key with id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "add", f, "--scope", "root"])  # argparse refuses the scope
    assert exit_.value.code == 2


def test_key_check_cases(tmp_path):
    f = str(tmp_path / "k.json")
    key, entry = add_key(f, "read")
    ring = KeyRing(f)
    for header in (None, "", "Token abc", "Bearer", f"Bearer {key}x", f"Bearer {key[:-1]}",
                   "Bearer zsk_" + entry.id + "_guess"):
        with pytest.raises(ApiError) as err:
            ring.authorize(header, "read")
        assert err.value.status == 401
    assert ring.authorize(f"bearer  {key} ", "read").id == entry.id
    revoke_key(f, key)  # by the key itself
    ring._checked = 0  # skip the once-a-second wait
    with pytest.raises(ApiError):
        ring.authorize(f"Bearer {key}", "read")


def test_bad_keys_files(tmp_path):
    f = tmp_path / "k.json"
    with pytest.raises(KeyFileError, match="no such keys file"):
        KeyRing(str(f))
    f.write_text("{}")
    with pytest.raises(KeyFileError, match="not a zenstore keys file"):
        read_keys(str(f))
    f.write_text('{"format": "zenstore-api-keys", "version": 9, "keys": []}')
    with pytest.raises(KeyFileError, match="version 9"):
        read_keys(str(f))
    f.write_text('{"format": "zenstore-api-keys", "version": 1, "keys": [{"id": "x", "scope": "god", '
                 '"sha256": "0", "created": "t"}]}')
    with pytest.raises(KeyFileError, match="keys\\[0\\]"):
        read_keys(str(f))


def test_metrics_sum_every_slot_and_bucket_latencies():
    fd = os.memfd_create("t")
    os.ftruncate(fd, 2 * 8 * 1000)
    a, b = Metrics(fd, 2, 0), Metrics(fd, 2, 1)
    a.observe("/v2/rerank", 200, 0.0007)
    b.observe("/v2/rerank", 200, 0.003)
    b.observe("/v2/rerank", 422, 0.0001)
    b.observe("/weird", 418, 1.0)
    text = a.render({"zenstore_store_vectors": ("help", 7)})
    assert 'zenstore_http_requests_total{endpoint="/v2/rerank",status="200"} 2' in text
    assert 'zenstore_http_requests_total{endpoint="other",status="other"} 1' in text
    assert 'zenstore_http_request_duration_seconds_bucket{endpoint="/v2/rerank",le="0.0005"} 1' in text
    assert 'zenstore_http_request_duration_seconds_bucket{endpoint="/v2/rerank",le="0.001"} 2' in text
    assert 'zenstore_http_request_duration_seconds_bucket{endpoint="/v2/rerank",le="+Inf"} 3' in text
    assert 'zenstore_http_request_duration_seconds_count{endpoint="/v2/rerank"} 3' in text
    assert "zenstore_store_vectors 7" in text
    a.close()
    b.close()
    os.close(fd)


def test_text_index_follows_writes_and_rebuilds_when_stale(tmp_path):
    path = str(tmp_path / "s.zen")
    build_store(path, n=30)
    with zenstore.Store.open(path) as store:
        idx = SidecarTextIndex(path, "text", readonly=False)
        assert idx.sync(store) is True and idx.sync(store) is False
        assert idx.lookup([doc_text(3), "nope"]) == [[3], []]
        store.upsert([3], np.ones((1, 64), np.float32), payloads=[{"text": doc_text(4)}])  # same text as 4
        idx.apply_upsert([3], [{"text": doc_text(4)}], store.snapshot().generation)
        assert idx.lookup([doc_text(3)]) == [[]] and sorted(idx.lookup([doc_text(4)])[0]) == [3, 4]
        store.delete([4])
        idx.apply_delete([4], store.snapshot().generation)
        assert idx.lookup([doc_text(4)]) == [[3]]
        store.delete([5])  # written without telling the index: stale
        idx.close()  # one LMDB handle per process: the reader's next
        reader = SidecarTextIndex(path, "text", readonly=True)
        reader.watch(store)
        assert "generation" in reader.unavailable() and reader.lookup([doc_text(5)]) == [[5]]
        reader.close()
        idx = SidecarTextIndex(path, "text", readonly=False)
        assert idx.sync(store) is True
        assert idx.lookup([doc_text(5), doc_text(6)]) == [[], [6]]
        idx.close()
        reader = SidecarTextIndex(path, "text", readonly=True)
        reader.watch(store)
        assert reader.unavailable() is None
        reader.close()


def test_decode_vector():
    v = np.arange(4, dtype=np.float32)
    assert decode_vector(base64.b64encode(v.tobytes()).decode(), 4, "v").tolist() == v.tolist()
    assert decode_vector([0, 1, 2.5, 3], 4, "v").dtype == np.float32
    for bad, needle in [([1, 2], "has 2 values"), ([[1, 2, 3, 4]], "flat list"), ([True] * 4, "flat list"),
                        ("@@", "base64"), ({"a": 1}, "JSON list"), ([1, None, 2, 3], "flat list")]:
        with pytest.raises(ApiError, match=needle):
            decode_vector(bad, 4, "v")


def test_relevance_is_monotone_and_in_unit_range():
    raw = np.array([-1.0, -0.2, 0.0, 0.5, 1.0])
    for metric in ("cosine", "ip"):
        r = relevance(metric, raw)
        assert (np.diff(r) > 0).all() and r.min() >= 0 and r.max() <= 1
    r = relevance("l2", np.array([0.0, 1.0, 100.0]))
    assert r.tolist() == [1.0, 0.5, 1 / 101]
    assert relevance("ip", np.array([1e6, -1e6])).tolist() == [1.0, 0.0]


def test_config_round_trip_and_checks():
    cfg = ServerConfig(store="x", workers=3, limits=Limits(max_k=5))
    assert ServerConfig.from_json(cfg.to_json()) == cfg
    assert ServerConfig(store="x").loopback and not ServerConfig(store="x", host="0.0.0.0").loopback
    assert ServerConfig(store="x", host="::1").loopback
    with pytest.raises(zenstore.InvalidArgument):
        ServerConfig(store="x", workers=0)
    with pytest.raises(zenstore.InvalidArgument):
        Limits(max_k=0)
