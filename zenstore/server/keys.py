"""API keys: a JSON file of hashed keys with scopes, and the check every request passes.

A key is ``zsk_<key id>_<secret>`` (the secret is 32 random bytes, URL-safe base64). The
file keeps only the key's SHA-256, its id, scope, creation time and an optional name, so
reading the file does not give anyone a key. A fast hash is enough: the secret has 256
bits of entropy, there is nothing to brute-force (a slow password hash would only add
latency to every request).

Scopes are ordered ``read < write < admin``: a key may call what its scope and the
scopes below it allow. The server rereads the file when it changes (checked at most once
a second), so ``zenstore keys revoke`` takes effect on a running server.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass

from ..errors import InvalidArgument, ZenstoreError
from .httperrors import ApiError

SCOPES = ("read", "write", "admin")
FORMAT = "zenstore-api-keys"
VERSION = 1
PREFIX = "zsk_"
RELOAD_SECONDS = 1.0


class KeyFileError(ZenstoreError):
    """The keys file cannot be read or written, or is not a zenstore keys file."""


@dataclass(frozen=True)
class KeyEntry:
    """One stored key: never the key itself, only its hash."""

    id: str
    scope: str
    sha256: str
    created: str
    name: str | None = None


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id inside a well-formed key, else None."""
    if not key.startswith(PREFIX):
        return None
    kid, sep, secret = key[len(PREFIX):].partition("_")
    return kid if sep and kid and secret else None


def check_scope(scope) -> str:
    if scope not in SCOPES:
        raise InvalidArgument(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    return scope


def allows(granted: str, needed: str) -> bool:
    return SCOPES.index(granted) >= SCOPES.index(needed)


# --- the file -------------------------------------------------------------------------------


def read_keys(path: str) -> list[KeyEntry]:
    """The entries of a keys file (a missing file is an error: the server was told to use it)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise KeyFileError(f"{path}: no such keys file (create it with: zenstore keys add {path} "
                           f"--scope read)") from None
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: cannot read the keys file: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise KeyFileError(f"{path}: not a zenstore keys file (no \"format\": \"{FORMAT}\")")
    if raw.get("version") != VERSION:
        raise KeyFileError(f"{path}: keys file version {raw.get('version')!r}; this zenstore reads {VERSION}")
    out = []
    for i, item in enumerate(raw.get("keys", [])):
        try:
            entry = KeyEntry(**item)
            check_scope(entry.scope)
        except (TypeError, InvalidArgument) as exc:
            raise KeyFileError(f"{path}: keys[{i}] is malformed: {exc}") from exc
        out.append(entry)
    return out


def _write_keys(path: str, entries: list[KeyEntry]) -> None:
    """Replace the file atomically (temp file, fsync, rename), readable by its owner only."""
    data = json.dumps({"format": FORMAT, "version": VERSION, "keys": [asdict(e) for e in entries]}, indent=2)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise KeyFileError(f"{path}: cannot write the keys file: {exc}") from exc


@contextlib.contextmanager
def _locked(path: str):
    """Serialise read-modify-write of the keys file between ``zenstore keys`` processes."""
    try:
        fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot lock the keys file: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add_key(path: str, scope: str, name: str | None = None) -> tuple[str, KeyEntry]:
    """Create a random key of ``scope``, store its hash in ``path`` (created if absent) and
    return ``(key, entry)``. The key is not stored anywhere: show it once."""
    check_scope(scope)
    kid = secrets.token_hex(4)
    key = f"{PREFIX}{kid}_{secrets.token_urlsafe(32)}"
    entry = KeyEntry(kid, scope, _hash(key), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), name)
    with _locked(path):
        entries = read_keys(path) if os.path.exists(path) else []
        _write_keys(path, entries + [entry])
    return key, entry


def revoke_key(path: str, key_or_id: str) -> KeyEntry:
    """Remove the key with this id (or the key itself); KeyFileError if there is none."""
    kid = key_id_of(key_or_id) or key_or_id
    with _locked(path):
        entries = read_keys(path)
        keep = [e for e in entries if e.id != kid]
        if len(keep) == len(entries):
            raise KeyFileError(f"{path}: no key with id {kid!r} (see: zenstore keys list {path})")
        _write_keys(path, keep)
    return next(e for e in entries if e.id == kid)


# --- the check -----------------------------------------------------------------------------


class KeyRing:
    """The keys a server accepts, reread when the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._by_id: dict[str, KeyEntry] = {}
        self._stamp = None
        self._checked = 0.0
        self._load(force=True)

    def _load(self, force: bool = False) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if not force and stamp == self._stamp:
            return
        entries = read_keys(self.path)
        self._by_id = {e.id: e for e in entries}
        self._stamp = stamp

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = now
            try:
                self._load()
            except KeyFileError:
                self._by_id = {}  # unreadable now: accept nothing rather than stale keys

    def authorize(self, header: str | None, needed: str) -> KeyEntry:
        """The entry of the bearer key in ``header`` if it grants ``needed``; else ApiError
        401 (no key, malformed, unknown or revoked) or 403 (valid key, scope too low)."""
        challenge = {"WWW-Authenticate": 'Bearer realm="zenstore"'}
        if not header:
            raise ApiError(401, "unauthorized", "missing API key: send 'Authorization: Bearer <key>'", challenge)
        scheme, _, key = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "unauthorized", "the Authorization header must be 'Bearer <key>'", challenge)
        key = key.strip()
        self._refresh()
        entry = self._by_id.get(key_id_of(key) or "")
        if entry is None or not hmac.compare_digest(entry.sha256, _hash(key)):
            raise ApiError(401, "unauthorized", "invalid or revoked API key", challenge)
        if not allows(entry.scope, needed):
            raise ApiError(403, "forbidden", f"this API key has scope {entry.scope!r}; this endpoint "
                           f"needs {needed!r}")
        return entry
