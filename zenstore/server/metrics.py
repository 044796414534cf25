"""Prometheus metrics shared by all worker processes, without files.

Each worker owns one slot of a small float64 table in shared memory (an anonymous
``memfd`` the supervisor creates and every worker maps) and is the only writer of its
slot, from its event-loop thread: no locks. ``/metrics``, served by whichever worker the
kernel hands the connection, sums the slots, so a scrape sees the whole server.

Per endpoint (the route template, e.g. ``/v1/records/{id}``): request counts by status
code and a latency histogram; the store's size is added at scrape time.
"""

from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

ENDPOINTS = ("/v1/rerank", "/v2/rerank", "/v1/search", "/v1/upsert", "/v1/delete", "/v1/records/{id}",
             "/v1/stats", "/v1/embeddings", "/healthz", "/readyz", "/metrics", "/openapi.json", "other")
STATUSES = ("200", "400", "401", "403", "404", "405", "413", "422", "500", "502", "503", "507", "other")
BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, float("inf"))

_E, _S, _B = len(ENDPOINTS), len(STATUSES), len(BUCKETS)
SLOT_FLOATS = _E * _S + _E * _B + _E  # counts, histogram buckets (not cumulative), sums
_EIDX = {e: i for i, e in enumerate(ENDPOINTS)}
_SIDX = {s: i for i, s in enumerate(STATUSES)}
_EDGES = np.array(BUCKETS[:-1])


def create_table(slots: int) -> int:
    """An fd of a zeroed shared table for ``slots`` workers (memfd on Linux, else an
    unlinked temporary file). The caller passes it to the workers."""
    size = slots * SLOT_FLOATS * 8
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("zenstore-metrics", 0)
    else:  # pragma: no cover - non-Linux
        fd, path = tempfile.mkstemp(prefix="zenstore-metrics-")
        os.unlink(path)
    os.ftruncate(fd, size)
    return fd


class Metrics:
    """One worker's view of the shared table (``fd`` None: a private table, for tests and
    in-process apps)."""

    def __init__(self, fd: int | None = None, slots: int = 1, slot: int = 0) -> None:
        if not 0 <= slot < slots:
            raise ValueError(f"slot {slot} outside 0..{slots - 1}")
        if fd is None:
            self._map = None
            table = np.zeros(slots * SLOT_FLOATS)
        else:
            self._map = mmap.mmap(fd, slots * SLOT_FLOATS * 8)
            table = np.frombuffer(self._map, dtype=np.float64)
        self.table = table.reshape(slots, SLOT_FLOATS)
        row = self.table[slot]
        self.counts = row[: _E * _S].reshape(_E, _S)
        self.hist = row[_E * _S : _E * _S + _E * _B].reshape(_E, _B)
        self.sums = row[_E * _S + _E * _B :]

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        e = _EIDX.get(endpoint, _E - 1)
        self.counts[e, _SIDX.get(str(status), _S - 1)] += 1
        self.hist[e, int(np.searchsorted(_EDGES, seconds, side="left"))] += 1
        self.sums[e] += seconds

    def render(self, gauges: dict[str, tuple[str, float]] | None = None) -> str:
        """Prometheus text exposition (format 0.0.4) of all slots summed, plus ``gauges``
        ({name: (help, value)})."""
        total = self.table.sum(axis=0)
        counts = total[: _E * _S].reshape(_E, _S)
        hist = total[_E * _S : _E * _S + _E * _B].reshape(_E, _B)
        sums = total[_E * _S + _E * _B :]
        out = ["# HELP zenstore_http_requests_total HTTP requests answered, by endpoint and status code.",
               "# TYPE zenstore_http_requests_total counter"]
        for e, name in enumerate(ENDPOINTS):
            for s, status in enumerate(STATUSES):
                if counts[e, s]:
                    out.append(f'zenstore_http_requests_total{{endpoint="{name}",status="{status}"}} {int(counts[e, s])}')
        out += ["# HELP zenstore_http_request_duration_seconds Time from request start to the last response byte.",
                "# TYPE zenstore_http_request_duration_seconds histogram"]
        for e, name in enumerate(ENDPOINTS):
            n = hist[e].sum()
            if not n:
                continue
            cumulative = np.cumsum(hist[e])
            for b, edge in enumerate(BUCKETS):
                le = "+Inf" if edge == float("inf") else repr(edge)
                out.append(f'zenstore_http_request_duration_seconds_bucket{{endpoint="{name}",le="{le}"}} {int(cumulative[b])}')
            out.append(f'zenstore_http_request_duration_seconds_sum{{endpoint="{name}"}} {sums[e]!r}')
            out.append(f'zenstore_http_request_duration_seconds_count{{endpoint="{name}"}} {int(n)}')
        for gname, (help_text, value) in (gauges or {}).items():
            out += [f"# HELP {gname} {help_text}", f"# TYPE {gname} gauge", f"{gname} {value!r}"]
        return "\n".join(out) + "\n"

    def close(self) -> None:
        if self._map is not None:
            self.counts = self.hist = self.sums = self.table = None
            try:
                self._map.close()
            except BufferError:  # a numpy view still alive: the map goes with the process
                pass
            self._map = None
