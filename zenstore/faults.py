"""Test-only fault injection: stop a writer at an exact place of the write path.

ZENSTORE_FAULT="<point>[@<n>][:<signal>]" makes this process send itself a signal the n-th
time (default: the first) it reaches ``fault("<point>")``: SIGKILL by default, or ``INT`` /
``TERM`` (SIGINT / SIGTERM, delivered to the running Python code, as Ctrl-C or a service
manager would). Several specs may be given, comma-separated. tests/test_crash.py and
tests/test_signals.py stop writers at exact places of the write path this way (the points
are listed in docs/reliability.md). When the variable is unset (always, outside those
tests) ``fault`` returns at once.
"""

from __future__ import annotations

import os
import signal

_FAULT_SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}


def _parse(spec: str) -> dict:
    armed: dict = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        where, _, sig = part.partition(":")
        name, _, nth = where.partition("@")
        armed.setdefault(name, []).append([int(nth) if nth else 1, _FAULT_SIGNALS[sig or "KILL"]])
    return armed


_armed = _parse(os.environ.get("ZENSTORE_FAULT", ""))


def arm(spec: str) -> None:
    """Replace the armed faults (test harnesses that must run code unharmed first)."""
    global _armed
    _armed = _parse(spec)


def fault(point: str) -> None:
    if not _armed:
        return
    for entry in _armed.get(point, ()):
        entry[0] -= 1
        if entry[0] == 0:
            os.kill(os.getpid(), entry[1])
