"""Child process of tests/test_jit_interrupt.py: Ctrl-C inside numba's one-time setup.

``python tests/_jit_interrupt_child.py STORE MODE`` opens STORE and searches it, with a
SIGINT sent to itself at the worst moment: inside numba's lazy import of
``numba.cpython.unicode``, right after that module registered its boxing of
``UnicodeType`` (``numba.core.extending.box`` is wrapped to send the signal): the
registry refuses a second registration, so importing the module again fails. It catches the
KeyboardInterrupt, as a notebook does, then opens and searches again and prints a JSON
line: ``first`` ("interrupted" or "completed"), ``tripped`` (the signal was sent),
``second`` ("ok" or the error).

``MODE`` ``fixed``: zenstore as it is; ``unprotected``: signals are not deferred (the
control: shows the trip breaks numba, so the test can fail).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys

import numpy as np

import zenstore
from zenstore.kernels import _kernel


def arm_trip() -> dict:
    import numba.core.extending as extending
    from numba.core import types

    state = {"tripped": False}
    original = extending.box

    def box(typecls):
        decorate = original(typecls)
        if typecls is not types.UnicodeType:
            return decorate

        def and_interrupt(func):
            out = decorate(func)  # registered: importing the module again repeats this
            if not state["tripped"]:
                state["tripped"] = True
                os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode
            return out

        return and_interrupt

    extending.box = box  # read by the modules numba imports later
    return state


def main() -> int:
    path, mode = sys.argv[1], sys.argv[2]
    if mode == "unprotected":
        _kernel.signals_deferred = contextlib.nullcontext
    state = arm_trip()
    q = np.random.default_rng(0).standard_normal(64).astype(np.float32)
    try:
        with zenstore.Store.open(path, readonly=True) as store:
            store.search(q, k=3)
        first = "completed"
    except KeyboardInterrupt:
        first = "interrupted"
    try:
        with zenstore.Store.open(path, readonly=True) as store:
            hits = store.search(q, k=3)
        second = "ok" if len(hits) == 3 else f"{len(hits)} hits"
    except Exception as exc:  # noqa: BLE001 - reported to the test
        second = f"{type(exc).__name__}: {exc}"
    print(json.dumps({"first": first, "tripped": state["tripped"], "second": second}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
