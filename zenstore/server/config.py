"""What one ``zenstore serve`` runs with: the store, the embedder, keys, limits, workers.

Frozen and JSON-round-trippable: the supervisor hands the same :class:`ServerConfig` to
every worker process it starts (as JSON on the worker's command line).
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import asdict, dataclass, field

from ..errors import InvalidArgument

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class Limits:
    """Per-request bounds. Anything beyond them is refused (413 for the body, 422 for the
    rest) with a message naming the limit, before any work is done."""

    max_body_bytes: int = 64 * 1024 * 1024   # a request body, after any compression
    max_documents: int = 1000                # documents in one rerank (Cohere recommends 1,000)
    max_top_n: int = 1000                    # top_n of a rerank
    max_k: int = 1000                        # k of a search
    max_batch: int = 4096                    # rows of one upsert / ids of one delete
    max_text_chars: int = 100_000            # one query or document text
    max_embed_inputs: int = 2048             # inputs of one /v1/embeddings call

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"limit {name} must be a positive int, got {value!r}")


@dataclass(frozen=True)
class ServerConfig:
    """Everything a server process needs; see ``zenstore serve --help``."""

    store: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    embedder: str | None = None          # a SPEC (zenstore.embedders.load_embedder)
    api_key_file: str | None = None      # None: no authentication (loopback only)
    workers: int = 1                     # HTTP worker processes (readers)
    readonly: bool = False               # no writer: write endpoints answer 403
    text_field: str = "text"             # payload key rerank matches document texts against
    graceful_seconds: float = 30.0       # in-flight requests get this long on SIGTERM
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or not 1 <= self.workers <= 64:
            raise InvalidArgument(f"workers must be an int in 1..64, got {self.workers!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise InvalidArgument(f"port must be in 0..65535 (0: any free port), got {self.port!r}")
        if not isinstance(self.text_field, str) or not self.text_field:
            raise InvalidArgument("text_field must be a non-empty str")
        if self.graceful_seconds < 0:
            raise InvalidArgument("graceful_seconds must be >= 0")

    @property
    def loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServerConfig:
        raw = json.loads(text)
        raw["limits"] = Limits(**raw.get("limits", {}))
        return cls(**raw)
