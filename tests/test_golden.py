"""Golden stores: written once per format version by tools/make_golden.py, read forever."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import zenstore

GOLDEN = Path(__file__).parent / "golden"
STORES = sorted(p for p in GOLDEN.glob("v*.zen") if p.is_dir())


def test_golden_stores_exist():
    assert {p.name for p in STORES} >= {"v1-cosine-str.zen", "v1-l2-int.zen"}


@pytest.mark.parametrize("golden", STORES, ids=[p.name for p in STORES])
@pytest.mark.parametrize("readonly", [True, False])
def test_golden_store_reads_identically(golden, readonly, tmp_path):
    expected = json.loads(Path(str(golden) + ".expected.json").read_text())
    path = tmp_path / golden.name
    shutil.copytree(golden, path)
    with zenstore.Store.open(path, readonly=readonly) as store:
        assert store.verify() == []
        assert len(store) == expected["len"]
        ids, scores = store.search_batch(np.array(expected["queries"], np.float32), k=5, shortlist=50)
        assert ids.tolist() == expected["ids"]
        # ids must match exactly; scores to float32 accumulation-order noise (kernels may
        # sum in a different order across versions; l2 scores subtract ~1.4-sized terms)
        np.testing.assert_allclose(scores, np.array(expected["scores"], np.float32), rtol=1e-4, atol=1e-4)
        key = next(k for k in expected["vectors"])
        ext = key if store.stats()["id_type"] == "str" else int(key)
        np.testing.assert_allclose(store.get(ext).vector, expected["vectors"][key], rtol=1e-5, atol=1e-6)
        payload_id = "doc-5" if store.stats()["id_type"] == "str" else 4993
        assert store.get(payload_id).payload == expected["payload_5"]
