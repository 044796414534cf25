"""Text inputs for bulk loading: JSON Lines of texts, embedded batch by batch.

``zenstore ingest --embedder SPEC`` reads rows that carry text instead of a vector: a JSON
Lines file (plain or ``.zst``) with an id field and a text field (``--text-field``,
default ``text``), or a BEIR corpus (its directory or its ``corpus.jsonl``: ``_id``,
``title``, ``text``). Each batch of texts is embedded when it is read -- on the loader's
read-ahead thread, so embedding the next batch overlaps encoding and committing this one
-- and comes out as an ordinary :class:`readers.RowBatch`: validation, commits,
checkpoints and resuming are the vector loader's (``ingest.py``), unchanged.

The payload of a row is its JSON object without the id, so the text stays in it under its
field name and ``zenstore.Reranker(text_field=...)`` returns it. A BEIR line (no id field,
an ``_id``) embeds ``(title + " " + text).strip()``, the BEIR/MTEB convention.

A line without the text field, or whose text is not a string, is a bad row (``--on-error``
decides); an embedder that fails or returns vectors of the wrong shape raises IngestError
naming the file and the lines of the batch, which is then not committed.
"""

from __future__ import annotations

import os

import numpy as np

from .embedders import embed_in_batches
from .errors import EmbedderError, IngestError
from .readers import JsonlReader, ReadOptions, RowBatch, _Rows, detect_format

EMBED_CHUNK = 256  # texts per embed_documents call (a server or model batches within it too)
BEIR_ID_FIELD = "_id"


def open_text_reader(path: str, options: ReadOptions, id_base: int, embedder, spec: str,
                     text_field: str = "text") -> TextJsonlReader:
    """The reader of one text input (see the module docstring), or IngestError naming
    what is wrong with it."""
    if not os.path.exists(path):
        raise IngestError(f"{path}: no such file")
    if os.path.isdir(path):
        corpus = os.path.join(path, "corpus.jsonl")
        if not os.path.isfile(corpus):
            raise IngestError(f"{path}: a directory without corpus.jsonl; --embedder reads a "
                              f"BEIR corpus directory or a JSON Lines file of texts")
        path = corpus
    fmt = detect_format(path, options.format if options.format != "beir" else "jsonl")
    if fmt != "jsonl":
        raise IngestError(f"{path}: --embedder reads text: a JSON Lines file (.jsonl, .jsonl.zst, "
                          f".ndjson) or a BEIR corpus, not {fmt} (vector files load without "
                          f"--embedder)")
    return TextJsonlReader(path, options, id_base, embedder, spec, text_field)


class TextJsonlReader(JsonlReader):
    """JSON Lines of ``{id, text, ...}`` (or BEIR ``{_id, title, text}``) -> embedded rows."""

    def __init__(self, path: str, options: ReadOptions, id_base: int, embedder, spec: str,
                 text_field: str) -> None:
        super().__init__(path, options, id_base)
        self.embedder = embedder
        self.spec = spec
        self.text_field = text_field
        self._cached: dict[int, np.ndarray] = {}  # line -> vector embedded for the training sample
        self._sampling = False

    def first_width(self) -> int | None:
        return self.embedder.dim

    def _parse(self, raw: bytes, line_no: int, rows: _Rows) -> None:
        obj = self._object(raw, line_no, rows)
        if obj is None:
            return
        id_field = self.options.id_field
        beir = id_field not in obj and BEIR_ID_FIELD in obj
        if beir:
            id_field = BEIR_ID_FIELD
        if id_field not in obj:
            rows.bad.append((line_no, f"no {self.options.id_field!r} field"))
            return
        if self.text_field not in obj:
            rows.bad.append((line_no, f"no {self.text_field!r} field (the text to embed; "
                                      f"choose another with --text-field)"))
            return
        text = obj[self.text_field]
        if not isinstance(text, str):
            rows.bad.append((line_no, f"field {self.text_field!r} is a {type(text).__name__}, not a string"))
            return
        if beir and isinstance(obj.get("title"), str):
            text = (obj["title"] + " " + text).strip()
        ext_id = obj.pop(id_field)
        rows.add(line_no, ext_id, text, obj or None)

    def _batch(self, rows: _Rows, start: int, stop: int, resume: dict) -> RowBatch:
        vectors = self._embed(rows.positions, rows.vecs, start, stop)
        lengths = np.full(len(rows.positions), vectors.shape[1], dtype=np.int64)
        return RowBatch(start, stop, rows.positions, rows.ids, vectors, lengths, rows.payloads,
                        rows.bad, resume)

    def _embed(self, positions: list[int], texts: list[str], start: int, stop: int) -> np.ndarray:
        """(n, dim) vectors of ``texts``; those the training sample embedded are reused."""
        dim = self.options.dim or self.embedder.dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        todo = []
        for i, pos in enumerate(positions):
            hit = self._cached.pop(pos, None)
            if hit is None:
                todo.append(i)
            else:
                out[i] = hit
        if todo:
            try:
                vecs = embed_in_batches(self.embedder, [texts[i] for i in todo], EMBED_CHUNK)
            except Exception as exc:  # the embedder's own code may raise anything: name it
                what = str(exc) if isinstance(exc, EmbedderError) else f"{type(exc).__name__}: {exc}"
                raise IngestError(f"{self.path}: lines {start + 1}-{stop}: embedder {self.spec!r} failed: {what}; "
                                  f"nothing of this batch was added") from exc
            if vecs.shape != (len(todo), dim):
                raise IngestError(f"{self.path}: lines {start + 1}-{stop}: embedder {self.spec!r} "
                                  f"returned vectors of shape {vecs.shape} for {len(todo)} texts; "
                                  f"the store has dimension {dim}; nothing of this batch was added")
            out[todo] = vecs
        return out

    def sample(self, n: int, metric: str) -> np.ndarray:
        """The first ``n`` rows the store accepts (a text input has no row count to spread
        a sample over), embedded once: the vectors of the batches read for it are kept
        and reused when the load reaches those lines."""
        self._sampling = True
        try:
            return super().sample(n, metric)
        finally:
            self._sampling = False

    def batches(self, offset, resume):
        for batch in super().batches(offset, resume):
            if self._sampling:
                self._cached.update(zip(batch.positions, batch.vectors))
            yield batch
