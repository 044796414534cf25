"""Finding the stored id whose payload text equals a document string: the rerank lookup.

Cohere-style clients (LangChain's and LlamaIndex's ``CohereRerank``) send document
*texts*, not ids. The server resolves each text to the id of a stored document whose
payload ``text_field`` equals it exactly, through a :class:`TextLookup`:

- :class:`SidecarTextIndex` (today): ``blake2b(text) -> ids`` in a small LMDB database in
  ``STORE/sidecar/``, written only by the server's writer process after each committed
  write and stamped with the store generation it reflects. At startup the writer
  rebuilds it whenever the stamp differs from the store (a write made without the
  server, or a crash between the store commit and the sidecar update). It is a hint:
  every hit is checked against the stored payload before it is used, so a stale entry
  can never resolve a text to the wrong document.
- once the store has payload indexes, a keyword index on ``text_field`` answers the same
  question exactly and transactionally (``PayloadIndexLookup`` will wrap
  ``store.create_payload_index(text_field, "keyword")``); the sidecar then goes away.
  Only :func:`open_lookup` and the writer's ``apply_*`` calls know which one is in use.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Protocol

import lmdb

from ..errors import StoreIOError, ZenstoreError

log = logging.getLogger("zenstore.server")

SIDECAR_DIR = "sidecar"
_MAP_SIZE = 1 << 30
_REBUILD_BATCH = 4096


class TextLookup(Protocol):
    """Candidate ids per text (possibly stale: the caller verifies the stored payload)."""

    field: str

    def lookup(self, texts: list[str]) -> list[list]: ...

    def unavailable(self) -> str | None:
        """Why lookups cannot be trusted now (None: they can)."""


def _text_hash(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _id_bytes(ext_id) -> bytes:
    if isinstance(ext_id, str):
        return b"s" + ext_id.encode("utf-8", "surrogatepass")
    return b"i" + int(ext_id).to_bytes(8, "big", signed=True)


def _id_from(raw: bytes):
    if raw[:1] == b"s":
        return raw[1:].decode("utf-8", "surrogatepass")
    return int.from_bytes(raw[1:], "big", signed=True)


def _id_key(idb: bytes) -> bytes:
    return hashlib.blake2b(idb, digest_size=16).digest()


def sidecar_path(store_path: str, field: str) -> str:
    tag = hashlib.blake2b(field.encode("utf-8"), digest_size=8).hexdigest()
    return os.path.join(store_path, SIDECAR_DIR, f"text-{tag}")


class SidecarTextIndex:
    """The LMDB sidecar: ``t2i`` (text hash + id hash -> id), ``i2t`` (id hash -> text
    hash, to drop an id's old entry when it is replaced or deleted), ``meta`` (field,
    generation)."""

    def __init__(self, store_path: str, field: str, *, readonly: bool) -> None:
        self.field = field
        self.path = sidecar_path(store_path, field)
        self.readonly = readonly
        if not readonly:
            os.makedirs(self.path, exist_ok=True)
        elif not os.path.isdir(self.path):
            raise StoreIOError(f"{self.path}: no text index (start the server once without --readonly)")
        try:
            self.env = lmdb.open(self.path, map_size=_MAP_SIZE, max_dbs=4, readonly=readonly,
                                 sync=True, metasync=False, create=not readonly)
        except lmdb.Error as exc:
            raise StoreIOError(f"{self.path}: cannot open the text index: {exc}") from exc
        self.t2i = self.env.open_db(b"t2i", create=not readonly)
        self.i2t = self.env.open_db(b"i2t", create=not readonly)
        self.meta = self.env.open_db(b"meta", create=not readonly)
        self._store = None  # readonly servers compare generations (an outside writer may move the store)

    def close(self) -> None:
        self.env.close()

    # --- reads ---------------------------------------------------------------------------

    def _read(self, fn):
        for _ in range(3):
            try:
                with self.env.begin() as txn:
                    return fn(txn)
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)  # the writer grew the map: adopt its size
        raise StoreIOError(f"{self.path}: the text index kept growing while being read")

    def generation(self) -> int | None:
        raw = self._read(lambda txn: txn.get(b"generation", db=self.meta))
        return None if raw is None else int(raw)

    def watch(self, store) -> None:
        """Trust lookups only while ``store`` is at the generation the index reflects (for
        read-only servers, whose store another process may be writing)."""
        self._store = store

    def unavailable(self) -> str | None:
        if self._store is None:
            return None
        gen, now = self.generation(), self._store.snapshot().generation
        if gen != now:
            return (f"the text index reflects store generation {gen}, the store is at {now} (written "
                    f"by another process); a server started without --readonly brings it up to date")
        return None

    def lookup(self, texts: list[str]) -> list[list]:
        def run(txn):
            cur = txn.cursor(db=self.t2i)
            out = []
            for t in texts:
                h = _text_hash(t)
                found = []
                if cur.set_range(h):
                    for key, value in cur:
                        if key[:16] != h:
                            break
                        found.append(_id_from(value))
                out.append(found)
            return out

        return self._read(run)

    # --- writes (the writer process only) -------------------------------------------------

    def _write(self, fn) -> None:
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    fn(txn)
                return
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def _drop(self, txn, idb: bytes) -> None:
        ik = _id_key(idb)
        old = txn.get(ik, db=self.i2t)
        if old is not None:
            txn.delete(old + ik, db=self.t2i)
            txn.delete(ik, db=self.i2t)

    def apply_upsert(self, ids, payloads, generation: int) -> None:
        """After a committed upsert: each id's entry now follows its new payload."""
        def run(txn):
            for ext_id, payload in zip(ids, payloads):
                idb = _id_bytes(ext_id)
                self._drop(txn, idb)
                text = payload.get(self.field) if isinstance(payload, dict) else None
                if isinstance(text, str):
                    h, ik = _text_hash(text), _id_key(idb)
                    txn.put(h + ik, idb, db=self.t2i)
                    txn.put(ik, h, db=self.i2t)
            txn.put(b"generation", str(generation).encode(), db=self.meta)

        self._write(run)

    def apply_delete(self, ids, generation: int) -> None:
        def run(txn):
            for ext_id in ids:
                self._drop(txn, _id_bytes(ext_id))
            txn.put(b"generation", str(generation).encode(), db=self.meta)

        self._write(run)

    def sync(self, store) -> bool:
        """Rebuild from the store's payloads unless the index already reflects the store's
        generation. Returns whether it rebuilt. Call with no concurrent writer."""
        now = store.snapshot().generation
        raw = self._read(lambda txn: (txn.get(b"generation", db=self.meta), txn.get(b"field", db=self.meta)))
        if raw[0] is not None and int(raw[0]) == now and raw[1] == self.field.encode():
            return False
        log.info("rebuilding the text index of %s (field %r) at generation %d", store.path, self.field, now)

        def clear(txn):
            for db in (self.t2i, self.i2t, self.meta):
                txn.drop(db, delete=False)
            txn.put(b"field", self.field.encode(), db=self.meta)

        self._write(clear)
        for ids, _vecs, payloads in store.iter_records(_REBUILD_BATCH, with_payload=True):
            self.apply_upsert(ids.tolist(), payloads, -1)  # -1 until complete: a crash mid-way rebuilds
        self._write(lambda txn: txn.put(b"generation", str(now).encode(), db=self.meta))
        return True


def open_lookup(store, field: str, *, writer: bool) -> SidecarTextIndex | None:
    """The text lookup of a store for ``field``. ``writer``: the writer process's handle
    (brought up to date now); otherwise a reader's. None when a read-only server finds
    no index (lookups then report themselves unavailable)."""
    try:
        index = SidecarTextIndex(store.path, field, readonly=not writer)
    except ZenstoreError as exc:
        log.warning("%s", exc)
        return None
    if writer:
        index.sync(store)
    return index
