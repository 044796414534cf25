"""``zenstore serve``: an HTTP service over one store (extra ``zenstore[server]``).

Cohere-compatible ``/v1/rerank`` and ``/v2/rerank``, search, writes, records, stats,
OpenAI-compatible ``/v1/embeddings``, probes and Prometheus metrics, with API keys. One
writer process (the supervisor) and N read-only worker processes; see ``supervisor.py``
and docs/api.md ("HTTP API").

Importing this package imports no web framework; ``app.py`` and the worker do.
"""

from .config import Limits, ServerConfig
from .keys import SCOPES, KeyFileError, add_key, read_keys, revoke_key

__all__ = ["ServerConfig", "Limits", "serve", "SCOPES", "KeyFileError", "add_key", "read_keys", "revoke_key"]


def serve(cfg: ServerConfig, **kwargs) -> int:
    """Run ``zenstore serve`` with ``cfg`` in this process until SIGTERM / SIGINT."""
    from .supervisor import serve as _serve

    return _serve(cfg, **kwargs)
