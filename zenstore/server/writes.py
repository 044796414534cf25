"""The write side: one process owns the writable Store, and every write goes through it.

:class:`WriteService` runs in the writer process: it applies an upsert or delete to the
store (which returns only after the batch committed), then brings the text index up to
date, then answers. :class:`PipeWrites` is how a worker reaches it: length-prefixed
frames over a private socketpair the supervisor created (no file, no port, nothing
another local user can connect to). Vectors travel as raw float32 bytes, not JSON.

A frame is ``>IQ`` (header length, body length), a JSON header, then the body bytes.
"""

from __future__ import annotations

import json
import socket
import struct
import threading

import numpy as np

from .httperrors import ApiError, from_exception

_PREFIX = struct.Struct(">IQ")


# --- framing ---------------------------------------------------------------------------------


def send_frame(sock: socket.socket, header: dict, body: bytes = b"") -> None:
    head = json.dumps(header).encode("utf-8")
    sock.sendall(_PREFIX.pack(len(head), len(body)) + head + body)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            return None
        got += k
    return bytes(buf)


def recv_frame(sock: socket.socket) -> tuple[dict, bytes] | None:
    """The next frame, or None when the other end closed."""
    prefix = _recv_exact(sock, _PREFIX.size)
    if prefix is None:
        return None
    hlen, blen = _PREFIX.unpack(prefix)
    head = _recv_exact(sock, hlen)
    body = _recv_exact(sock, blen) if blen else b""
    if head is None or body is None:
        return None
    return json.loads(head), body


# --- the writer process ----------------------------------------------------------------------------


class WriteService:
    """Writes to the store, serialised, each acknowledged only after its commit."""

    def __init__(self, store, text_index=None) -> None:
        self.store = store
        self.text_index = text_index
        self.lock = threading.Lock()

    def upsert(self, ids: list, vectors: np.ndarray, payloads: list | None) -> dict:
        with self.lock:
            self.store.upsert(ids, vectors, payloads)  # returns after the commit
            generation = self.store.snapshot().generation
            if self.text_index is not None:
                self.text_index.apply_upsert(ids, payloads or [None] * len(ids), generation)
        return {"upserted": len(ids), "generation": generation}

    def delete(self, ids: list, missing_ok: bool) -> dict:
        with self.lock:
            deleted = self.store.delete(ids, missing_ok=missing_ok)
            generation = self.store.snapshot().generation
            if self.text_index is not None and deleted:
                self.text_index.apply_delete(ids, generation)
        return {"deleted": deleted, "generation": generation}

    def ping(self) -> dict:
        return {"generation": self.store.snapshot().generation}

    def handle(self, header: dict, body: bytes) -> dict:
        """One request frame from a worker -> the reply header."""
        try:
            op = header.get("op")
            if op == "upsert":
                n, dim = header["n"], header["dim"]
                vectors = np.frombuffer(body, dtype="<f4").reshape(n, dim)
                result = self.upsert(header["ids"], vectors, header.get("payloads"))
            elif op == "delete":
                result = self.delete(header["ids"], bool(header.get("missing_ok")))
            elif op == "ping":
                result = self.ping()
            else:
                raise ApiError(500, "internal_error", f"unknown writer op {op!r}")
            return {"ok": True, "result": result}
        except Exception as exc:  # noqa: BLE001 - every failure goes back as an answer
            err = from_exception(exc)
            return {"ok": False, "status": err.status, "type": err.type, "message": err.message}

    def serve_connection(self, sock: socket.socket) -> None:
        """Answer one worker's frames until it closes its end."""
        try:
            while True:
                frame = recv_frame(sock)
                if frame is None:
                    return
                send_frame(sock, self.handle(*frame))
        except OSError:
            return
        finally:
            sock.close()


# --- a worker's handle on the writer ----------------------------------------------------------------


class PipeWrites:
    """The writer, seen from a worker process. One request at a time per worker (writes
    are serialised by the writer anyway)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def _call(self, header: dict, body: bytes = b"") -> dict:
        with self.lock:
            try:
                send_frame(self.sock, header, body)
                reply = recv_frame(self.sock)
            except OSError:
                reply = None
        if reply is None:
            raise ApiError(503, "writer_unavailable", "the server's writer process is gone; this write was "
                           "not acknowledged (it may have been applied: an upsert can be retried safely)")
        head, _ = reply
        if not head.get("ok"):
            raise ApiError(head["status"], head["type"], head["message"])
        return head["result"]

    def upsert(self, ids: list, vectors: np.ndarray, payloads: list | None) -> dict:
        v = np.ascontiguousarray(vectors, dtype="<f4")
        return self._call({"op": "upsert", "ids": ids, "payloads": payloads, "n": v.shape[0], "dim": v.shape[1]},
                          v.tobytes())

    def delete(self, ids: list, missing_ok: bool) -> dict:
        return self._call({"op": "delete", "ids": ids, "missing_ok": missing_ok})

    def ping(self) -> dict:
        return self._call({"op": "ping"})

    def close(self) -> None:
        self.sock.close()
