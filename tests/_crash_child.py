"""Writer process for the crash harness (tests/test_crash.py); also the shared plan.

Run as ``python tests/_crash_child.py STORE ACKFILE SEED N_OPS START [indexes]``: creates
STORE if it does not exist (with ``indexes``: then makes sure the payload indexes of
``INDEXES`` exist -- a no-op once they do), then applies operations START..N_OPS-1 of the
deterministic plan for SEED
and appends ``"<op index>\\n"`` to ACKFILE (one ``os.write`` on an O_APPEND descriptor)
after each call *returns*. The parent kills it with SIGKILL (at a random moment, or the
process kills itself at a named point through ``ZENSTORE_FAULT``) and then checks that
the store holds exactly the acknowledged operations, or those plus the one in flight.

The plan (``make_plan``) and the model of the store after each operation
(``model_states``) are pure functions of the seed, so parent and child agree on them
without talking.
"""

from __future__ import annotations

import os
import random
import sys

import numpy as np

DIM = 64
STORE_OPTIONS = {"dim": DIM, "metric": "cosine", "n_base": 4, "min_rows_per_base": 4,
                 "segment_fanout": 3}
REFINE_ENV = "ZENSTORE_CRASH_REFINE"  # set: the store is created with this refine tier
INDEXES = {"lang": "keyword", "op": "int", "id": "float"}  # payload indexes of the index plans
LANGS = ("en", "de", "fr")


def make_plan(seed: int, n_ops: int, indexes: bool = False) -> list[dict]:
    """A random but valid sequence of writes (every op succeeds when applied in order);
    with ``indexes``, some ops drop and re-create the index of "op" (two commits)."""
    rng = random.Random(seed)
    live: list[int] = []
    next_id = 0
    plan = []
    for i in range(n_ops):
        r = rng.random()
        op = {"i": i, "vseed": seed * 100_003 + i}
        if i == 0 and seed % 2:
            op.update(kind="train", ids=[], n=48)  # explicit training before the first add
        elif indexes and i > 1 and rng.random() < 0.06:
            op.update(kind="reindex", ids=[])
        elif i <= 1 or len(live) < 5 or r < 0.40:
            n = rng.randint(24, 48) if not live else rng.randint(1, 30)
            ids = list(range(next_id, next_id + n))
            next_id += n
            op.update(kind="add", ids=ids)
            live.extend(ids)
        elif r < 0.62:
            old = rng.sample(live, min(len(live), rng.randint(1, 10)))
            new = list(range(next_id, next_id + rng.randint(0, 5)))
            next_id += len(new)
            op.update(kind="upsert", ids=old + new)
            live.extend(new)
        elif r < 0.85:
            # sometimes delete most of the store, so whole segments get emptied
            n = rng.randint(1, 12) if rng.random() < 0.8 else max(1, len(live) - rng.randint(2, 6))
            gone = rng.sample(live, min(len(live), n))
            op.update(kind="delete", ids=gone)
            dead = set(gone)
            live = [x for x in live if x not in dead]
        else:
            op.update(kind="compact", ids=[])
        # upserted and added rows: some without payload (an upsert then removes the old one)
        op["no_payload"] = [rng.random() < 0.15 for _ in op["ids"]] if op["kind"] in ("add", "upsert") else []
        plan.append(op)
    return plan


def op_vectors(op: dict) -> np.ndarray:
    n = op.get("n", len(op["ids"]))
    return np.random.default_rng(op["vseed"]).standard_normal((n, DIM)).astype(np.float32)


def op_payloads(op: dict) -> list:
    return [None if skip else {"op": op["i"], "id": x, "lang": LANGS[x % 3]}
            for x, skip in zip(op["ids"], op["no_payload"])]


def model_states(plan: list[dict]) -> list[dict]:
    """states[j]: {id: (op index that last wrote it, row in that op)} after j ops."""
    state: dict = {}
    states = [dict(state)]
    for op in plan:
        if op["kind"] in ("add", "upsert"):
            for row, x in enumerate(op["ids"]):
                state[x] = (op["i"], row)
        elif op["kind"] == "delete":
            for x in op["ids"]:
                del state[x]
        states.append(dict(state))
    return states


def apply(store, op: dict) -> None:
    kind = op["kind"]
    if kind == "add":
        store.add(op["ids"], op_vectors(op), payloads=op_payloads(op))
    elif kind == "upsert":
        store.upsert(op["ids"], op_vectors(op), payloads=op_payloads(op))
    elif kind == "delete":
        store.delete(op["ids"])
    elif kind == "train":
        store.train(op_vectors(op))
    elif kind == "reindex":
        store.drop_payload_index("op")
        store.create_payload_index("op", INDEXES["op"])
    else:
        store.compact()


def main(argv: list[str]) -> int:
    path, ack_path, seed, n_ops, start = argv[0], argv[1], int(argv[2]), int(argv[3]), int(argv[4])
    from zenstore import Store

    indexes = argv[5:6] == ["indexes"]
    plan = make_plan(seed, n_ops, indexes)
    fd = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    options = dict(STORE_OPTIONS, refine=os.environ.get(REFINE_ENV) or None)
    store = Store.open(path) if os.path.exists(path) else Store.create(path, **options)
    if indexes:  # the first run creates them; a kill inside a re-creation leaves one to redo
        for field, kind in INDEXES.items():
            store.create_payload_index(field, kind)
    os.write(fd, b"start\n")
    for op in plan[start:]:
        apply(store, op)
        os.write(fd, f"{op['i']}\n".encode())
    store.close()
    os.write(fd, b"done\n")
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
