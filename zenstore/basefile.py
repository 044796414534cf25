"""The base-matrix file: the k-means base rows (fp16) and the rotation, written once.

A store has one base file (``base-NNNNNN.zbase``, framed and checksummed like segments);
the manifest names it with its size and header crc32, and every segment's rows are
grouped by its rows. Readers validate it against the store config before building the
codec from it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from . import format as fmt
from .errors import CorruptStore, InvalidArgument
from .files import check_digest, open_framed_file, write_framed_file
from .rotation import Rotation


@dataclass(frozen=True)
class BaseMatrix:
    """A store's trained base: the base rows (fp16, in the rotated space) and the rotation.

    ``store.base()`` returns it and ``store.train(base=...)`` adopts it, so several stores
    (the shards of a sharded store) share one estimator and their scores compare exactly.
    """

    matrix: np.ndarray  # (n_base, dim) float16
    rotation: Rotation

    @property
    def n_base(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def validate(self, dim: int) -> None:
        width = fmt.coded_dim(dim)  # base rows live in the coded (padded, rotated) space
        m = self.matrix
        if not isinstance(m, np.ndarray) or m.dtype != np.float16 or m.ndim != 2 or m.shape[1] != width:
            raise InvalidArgument(f"base matrix must be a float16 array of shape (n, {width}), got "
                                  f"{getattr(m, 'dtype', type(m).__name__)} {getattr(m, 'shape', '')}")
        if not 1 <= m.shape[0] <= 1 << 20 or not np.all(np.isfinite(m)):
            raise InvalidArgument("base matrix must have 1..2^20 finite rows")
        try:
            self.rotation.validate(dim)
        except (ValueError, AttributeError) as exc:
            raise InvalidArgument(f"base rotation does not fit dim {dim}: {exc}") from exc


def base_filename(n: int) -> str:
    return f"base-{n:06d}.zbase"


def write_base(root: str, n: int, base16: np.ndarray, rotation: Rotation) -> fmt.BaseRecord:
    rel = base_filename(n)
    meta = {
        "dim": int(base16.shape[1]),
        "n_base": int(base16.shape[0]),
        "rotation_rounds": int(rotation.signs.shape[0]),
    }
    sections = [
        ("base", np.ascontiguousarray(base16, dtype="<f2")),
        ("rsigns", np.ascontiguousarray(rotation.signs, dtype=np.int8)),
        ("rperms", np.ascontiguousarray(rotation.perms, dtype="<u4")),
    ]
    size, header_crc = write_framed_file(os.path.join(root, rel), fmt.FILE_KIND_BASE, meta, sections)
    return fmt.BaseRecord(rel, int(base16.shape[0]), size, header_crc)


def load_base(root: str, record: fmt.BaseRecord, config: fmt.StoreConfig) -> tuple[np.ndarray, Rotation]:
    path = os.path.join(root, record.file)
    mapped = open_framed_file(path, fmt.FILE_KIND_BASE, verify=True)
    if mapped.header.file_size != record.size:
        raise CorruptStore(f"{path}: size {mapped.header.file_size} differs from catalog {record.size}")
    check_digest(path, mapped, record.header_crc)
    meta = mapped.header.meta
    width = config.coded_dim  # the base file describes the coded space (= dim for v1 stores)
    if meta.get("dim") != width or meta.get("n_base") != record.n_base:
        raise CorruptStore(f"{path}: header dim/n_base {meta.get('dim')}/{meta.get('n_base')} "
                           f"differ from the catalog's {width}/{record.n_base}")
    rounds = meta.get("rotation_rounds")
    if not isinstance(rounds, int) or not 0 <= rounds <= 16:
        raise CorruptStore(f"{path}: bad rotation_rounds {rounds!r}")
    base = np.array(mapped.array("base", "<f2", (record.n_base, width)))
    if not np.all(np.isfinite(base)):
        raise CorruptStore(f"{path}: base matrix has non-finite values")
    rotation = Rotation(
        np.array(mapped.array("rsigns", np.int8, (rounds, width))),
        np.array(mapped.array("rperms", "<u4", (rounds, width))),
    )
    try:
        rotation.validate(config.dim)
    except ValueError as exc:
        raise CorruptStore(f"{path}: {exc}") from exc
    return base, rotation
