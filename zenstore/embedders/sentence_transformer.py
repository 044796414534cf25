"""An embedder running a local sentence-transformers model in this process.

Optional: ``pip install 'zenstore[sentence-transformers]'``. The model is loaded from a
directory on disk and nothing is ever downloaded (``local_files_only=True``, the
``HF_HUB_OFFLINE=1`` behaviour without touching the environment): a path that does not
hold a model is an :class:`EmbedderError` at construction, not a hub request.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import EmbedderError, InvalidArgument
from ..validation import positive_int
from .base import BaseEmbedder

INSTALL_HINT = "pip install 'zenstore[sentence-transformers]'"


class SentenceTransformerEmbedder(BaseEmbedder):
    """``path``: a sentence-transformers model directory (with ``modules.json``, as
    ``SentenceTransformer.save`` writes it, or a plain transformers model directory with
    ``config.json``). ``device``: torch device. ``batch_size``: texts per forward pass.
    Queries and documents go through ``encode_query`` / ``encode_document``, so a model
    that configures prompts for them gets them. ``normalize``: scale every vector to unit
    length (many models, MiniLM and MPNet among them, already end in a Normalize layer).
    ``trust_remote_code``: allow model code shipped in the directory to run (off).
    """

    def __init__(self, path, device: str = "cpu", batch_size: int = 32, *,
                 normalize: bool = False, trust_remote_code: bool = False) -> None:
        if not isinstance(path, (str, Path)) or not str(path):
            raise InvalidArgument(f"the model path must be a non-empty str or Path, got {path!r}")
        self.path = Path(path).expanduser()
        self.batch_size = positive_int(batch_size, "batch_size")
        self.normalize = bool(normalize)
        self.device = device
        where = f"sentence-transformers model at {str(self.path)!r}"
        if not self.path.exists():
            raise EmbedderError(f"no {where}: the path does not exist (zenstore loads models "
                                f"from a local directory only and never downloads one)")
        if not self.path.is_dir():
            raise EmbedderError(f"no {where}: it is a file, not a model directory")
        if not ((self.path / "modules.json").is_file() or (self.path / "config.json").is_file()):
            raise EmbedderError(f"no {where}: the directory has neither modules.json nor "
                                f"config.json")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbedderError(f"the sentence-transformers embedder needs the "
                                f"sentence-transformers package: {INSTALL_HINT} ({exc})") from exc
        try:
            self.model = SentenceTransformer(str(self.path), device=device, local_files_only=True,
                                             trust_remote_code=trust_remote_code)
        except Exception as exc:  # torch / transformers raise many kinds; name the cause
            raise EmbedderError(f"cannot load the {where}: {type(exc).__name__}: {exc}") from exc
        get_dim = (getattr(self.model, "get_embedding_dimension", None)  # sentence-transformers 6
                   or self.model.get_sentence_embedding_dimension)
        dim = get_dim()
        self._dim = int(dim) if dim else None

    @property
    def source(self) -> str:
        return f"sentence-transformers model {str(self.path)!r}"

    def __repr__(self) -> str:
        return f"SentenceTransformerEmbedder({str(self.path)!r}, device={self.device!r}, dim={self._dim})"

    def _embed(self, texts: list[str], kind: str) -> np.ndarray:
        name = "encode_query" if kind == "query" else "encode_document"
        encode = getattr(self.model, name, None) or self.model.encode  # older releases: encode
        return encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                      show_progress_bar=False)
