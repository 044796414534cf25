"""The reader of tests/test_integrity.py's raw catalog flips, run in a process of its own
(LMDB may die of SIGBUS on a damaged page pointer): prints what it saw as one JSON line."""

from __future__ import annotations

import hashlib
import json

import numpy as np


def raw_catalog_check(argv: list[str]) -> int:
    import zenstore
    from zenstore import Store, verify_store

    path = argv[0]
    problems = verify_store(path)
    try:
        with Store.open(path, readonly=True) as s:
            ids = sorted(s.ids().tolist())
            seen = [ids, [s.get(i).payload for i in ids],
                    s.search_batch(np.ones((2, s.dim), np.float32), k=5)[0].tolist()]
        print(json.dumps({"verify": problems, "answers": hashlib.md5(repr(seen).encode()).hexdigest()}))
    except zenstore.ZenstoreError as exc:
        print(json.dumps({"verify": problems, "refused": type(exc).__name__}))
    return 0
