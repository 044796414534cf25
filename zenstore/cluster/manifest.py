"""The cluster manifest: one small, versioned, validated JSON file at the root of a
sharded store, saying how many shards there are and how ids are routed to them.

``docs/format.md`` ("Sharded stores") documents it byte for byte. The rules are the
store's own: a newer ``format_version`` is refused naming both versions, keys starting
with ``x-`` are extensions readers ignore, any other unknown key means a newer writer
and is refused too. The file is replaced atomically (temporary name, fsync, rename,
fsync of the directory) and is only written when a sharded store is created.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field

from ..errors import CorruptStore, FormatVersionError, InvalidArgument, NotAStore
from ..format import METRICS

CLUSTER_MAGIC = "zenstore-cluster"
CLUSTER_FORMAT_VERSION = 1
MANIFEST_FILE = "cluster.json"
LOCK_FILE = "writer.lock"
ROUTING = "blake2b64-mod"  # shard = u64le(BLAKE2b-64(catalog id key)) mod shards
MAX_DIM = 1 << 20  # a sanity bound: 4 MiB per float32 vector
MAX_SHARDS = 4096
MAX_MANIFEST_BYTES = 1 << 20
_KEYS = ("magic", "format_version", "created_by", "dim", "metric", "routing", "shards")
_SHARD_DIR = re.compile(r"shard-[0-9]{4}")


def shard_dir(number: int) -> str:
    """Directory (relative to the cluster root) of shard ``number``: ``shard-0007``."""
    return f"shard-{number:04d}"


def _int(data: dict, key: str, lo: int, hi: int, path: str) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise CorruptStore(f"{path}: cluster manifest field {key!r} must be an int in {lo}..{hi}, got {value!r}")
    return value


@dataclass(frozen=True)
class ClusterManifest:
    """What ``cluster.json`` holds. ``extensions``: ``x-`` keys, kept and ignored."""

    shards: int
    dim: int
    metric: str
    created_by: str
    routing: str = ROUTING
    extensions: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.shards, int) or isinstance(self.shards, bool) or not 1 <= self.shards <= MAX_SHARDS:
            raise InvalidArgument(f"shards must be an int in 1..{MAX_SHARDS}, got {self.shards!r}")
        if self.metric not in METRICS:
            raise InvalidArgument(f"metric must be one of {METRICS}, got {self.metric!r}")

    def shard_dirs(self) -> list[str]:
        return [shard_dir(i) for i in range(self.shards)]

    def to_dict(self) -> dict:
        return {"magic": CLUSTER_MAGIC, "format_version": CLUSTER_FORMAT_VERSION,
                "created_by": self.created_by, "dim": self.dim, "metric": self.metric,
                "routing": self.routing, "shards": self.shards, **self.extensions}

    def to_bytes(self) -> bytes:
        """The file's exact bytes: compact UTF-8 JSON, keys sorted, one final newline."""
        return (json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
                + "\n").encode("utf-8")

    @classmethod
    def from_dict(cls, data, path: str = "cluster manifest") -> ClusterManifest:
        if not isinstance(data, dict):
            raise CorruptStore(f"{path}: cluster manifest must be a JSON object, got {type(data).__name__}")
        if data.get("magic") != CLUSTER_MAGIC:
            raise CorruptStore(f"{path}: not a zenstore cluster manifest (magic {data.get('magic')!r})")
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise CorruptStore(f"{path}: bad cluster format_version {version!r}")
        if version > CLUSTER_FORMAT_VERSION:
            raise FormatVersionError(f"{path}: cluster format version {version} is newer than this zenstore "
                                     f"reads (1..{CLUSTER_FORMAT_VERSION}); upgrade zenstore")
        unknown = sorted(k for k in data if k not in _KEYS and not (isinstance(k, str) and k.startswith("x-")))
        if unknown:
            raise FormatVersionError(f"{path}: unknown cluster manifest keys {unknown} (written by a newer "
                                     "zenstore?)")
        missing = [k for k in _KEYS if k not in data]
        if missing:
            raise CorruptStore(f"{path}: cluster manifest lacks {missing}")
        dim = _int(data, "dim", 1, MAX_DIM, path)  # any dim, as a store (shards pad codes to 64)
        shards = _int(data, "shards", 1, MAX_SHARDS, path)
        if data["metric"] not in METRICS:
            raise CorruptStore(f"{path}: cluster manifest metric {data['metric']!r} is not one of {METRICS}")
        if data["routing"] != ROUTING:
            raise FormatVersionError(f"{path}: unknown routing {data['routing']!r} (this zenstore knows {ROUTING!r})")
        if not isinstance(data["created_by"], str):
            raise CorruptStore(f"{path}: cluster manifest created_by must be a string")
        return cls(shards, dim, data["metric"], data["created_by"], ROUTING,
                   {k: v for k, v in data.items() if k.startswith("x-")})


def read_manifest(root: str) -> ClusterManifest:
    path = os.path.join(root, MANIFEST_FILE)
    if not os.path.isdir(root):
        raise NotAStore(f"{root}: no such sharded store directory")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise NotAStore(f"{root}: not a sharded zenstore (no {MANIFEST_FILE})") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise CorruptStore(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not a cluster manifest")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptStore(f"{path}: not valid UTF-8 JSON ({exc})") from exc
    return ClusterManifest.from_dict(data, path)


def write_manifest(root: str, manifest: ClusterManifest) -> None:
    """Write ``cluster.json`` atomically and durably."""
    path = os.path.join(root, MANIFEST_FILE)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(manifest.to_bytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(root)


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_shard_dir(name: str) -> bool:
    return bool(_SHARD_DIR.fullmatch(name))
