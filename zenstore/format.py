"""The on-disk contract: magic numbers, versions, records and their validation.

Everything here is pure: it turns bytes into validated values and back, and never opens
a file. ``docs/format.md`` specifies the same bytes in prose; the two must agree.

Forward-compatibility rule: a reader accepts every format version up to its own
``FORMAT_VERSION`` and refuses a newer one with :class:`FormatVersionError` naming both
versions. Unknown keys in JSON records are ignored only if their name starts with
``x-`` (extensions); anything else unknown is a newer writer's data and is refused.

Versions: 2 is version 1 plus dims that are not a multiple of 64 (zero-padded codes,
in the framed files and the store); 3 is version 2 plus payload indexes, and only a
store that has payload indexes is version 3 (``store_format_version``): zenstore before
3 cannot keep indexes up to date, so it must refuse such a store, and the only flag it
refuses is the version. Indexes change no framed file (``FILE_FORMAT_VERSION`` stays 2).
4 adds a refine tier (``StoreConfig.refine``): a refine file beside every segment (file
kind 3, header version 4); only a store created with a tier is version 4, for the same
reason (an older writer would add segments without refine files).
"""

from __future__ import annotations

import json
import re
import struct
import threading
import zlib
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import zstandard

from .errors import CorruptStore, FormatVersionError, InvalidArgument

FORMAT_VERSION = 4  # the newest store format this zenstore reads (and writes, for stores that need it)
INDEXED_FORMAT_VERSION = 3  # a store with payload indexes
REFINE_FORMAT_VERSION = 4  # a store with a refine tier, and its refine files (docs/format.md)
FILE_FORMAT_VERSION = 2  # the newest segment and base file format (unchanged by versions 3 and 4)
STORE_MAGIC = "zenstore"

METRICS = ("cosine", "ip", "l2")
SCALE_ESTIMATORS = ("unbiased", "l2")
ROTATIONS = ("none", "hadamard")
ID_TYPES = ("int", "str")
MAX_STR_ID_BYTES = 256

# --- the framed file container (segments and base matrices) ---------------------------------

FILE_MAGIC = b"\x89ZEN\r\n\x1a\n"
FILE_KIND_SEGMENT = 1
FILE_KIND_BASE = 2
FILE_KIND_REFINE = 3
FILE_KINDS = {FILE_KIND_SEGMENT: "segment", FILE_KIND_BASE: "base", FILE_KIND_REFINE: "refine"}
# the newest version of each file kind this zenstore reads: segment and base files are
# unchanged since version 2 (a newer one is a newer writer's file, FormatVersionError);
# refine files exist since version 4
FILE_KIND_VERSIONS = {FILE_KIND_SEGMENT: FILE_FORMAT_VERSION, FILE_KIND_BASE: FILE_FORMAT_VERSION,
                      FILE_KIND_REFINE: REFINE_FORMAT_VERSION}
_FILE_HEADER = struct.Struct("<8sHHIQII")  # magic, version, kind, n_sections, file_size, meta_len, header_crc
_SECTION = struct.Struct("<8sQQII")  # name, offset, length, crc32, reserved
FILE_HEADER_SIZE = _FILE_HEADER.size  # 32
SECTION_ENTRY_SIZE = _SECTION.size  # 32
SECTION_ALIGN = 64
WORD_BITS = 64  # codes are uint64 words: the coded width is the dim rounded up to a multiple


def coded_dim(dim: int) -> int:
    """Width of the coded space: ``dim`` zero-padded up to a multiple of 64.

    Padding with zeros changes no inner product, norm or distance, so a store of any
    dim scores exactly like a 64-multiple store holding the same vectors padded by hand.
    """
    return -(-dim // WORD_BITS) * WORD_BITS


def format_version_for(dim) -> int:
    """The lowest format version that describes data of this dim: 1 for multiples of 64
    (byte for byte what version 1 wrote), 2 for any other dim (padded codes, docs/format.md)."""
    return 1 if isinstance(dim, int) and dim % WORD_BITS == 0 else 2


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class SectionEntry:
    name: str
    offset: int
    length: int
    crc32: int


@dataclass(frozen=True)
class FileHeader:
    """The parsed, validated header of a framed file."""

    version: int
    kind: int
    file_size: int
    meta: dict
    sections: dict  # name -> SectionEntry
    header_size: int
    digest: int = 0  # crc32 of the header bytes as stored (the manifest's ``header_crc``)


def _align(n: int) -> int:
    return (n + SECTION_ALIGN - 1) // SECTION_ALIGN * SECTION_ALIGN


def section_offsets(meta: dict, lengths: list[int]) -> tuple[int, list[int], int]:
    """(header_len, section offsets, file_size) of a framed file with these sections.

    The header is: fixed part, section table, JSON metadata; then each section starts on a
    64-byte boundary (so uint64 and float arrays can be mapped in place), zero padding
    between sections.
    """
    header_len = FILE_HEADER_SIZE + SECTION_ENTRY_SIZE * len(lengths) + len(_meta_bytes(meta))
    offsets = []
    pos = _align(header_len)
    for length in lengths:
        offsets.append(pos)
        pos = _align(pos + length)
    file_size = offsets[-1] + lengths[-1] if lengths else header_len
    return header_len, offsets, file_size


def _meta_bytes(meta: dict) -> bytes:
    return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()


def build_header(kind: int, meta: dict, sections: list[tuple[str, int, int]],
                 version: int | None = None) -> bytes:
    """Header bytes for sections given as (name, length, crc32), laid out by section_offsets.
    ``version``: the file's format version (default: the lowest that describes its dim)."""
    _, offsets, file_size = section_offsets(meta, [length for _, length, _ in sections])
    entries = []
    for (name, length, crc), offset in zip(sections, offsets):
        name_b = name.encode("ascii")
        if len(name_b) > 8:
            raise ValueError(f"section name too long: {name}")
        entries.append(_SECTION.pack(name_b.ljust(8, b"\0"), offset, length, crc, 0))
    meta_b = _meta_bytes(meta)
    # the lowest version that describes the file: 1 unless its dim is not a multiple of 64
    if version is None:
        version = format_version_for(meta.get("dim", 0))
    fixed = _FILE_HEADER.pack(FILE_MAGIC, version, kind, len(sections), file_size,
                              len(meta_b), 0)
    header = bytearray(fixed + b"".join(entries) + meta_b)
    struct.pack_into("<I", header, 28, crc32(header))
    return bytes(header)


def parse_file_header(buf, *, expect_kind: int, actual_size: int, what: str) -> FileHeader:
    """Validate the header of a framed file held in ``buf`` (bytes or mmap) before use."""
    if actual_size < FILE_HEADER_SIZE:
        raise CorruptStore(f"{what}: file is {actual_size} bytes, too short for a header")
    magic, version, kind, n_sections, file_size, meta_len, header_crc = _FILE_HEADER.unpack_from(
        buf, 0
    )
    if magic != FILE_MAGIC:
        raise CorruptStore(f"{what}: not a zenstore file (bad magic {bytes(magic)!r})")
    newest = min(FORMAT_VERSION, FILE_KIND_VERSIONS.get(expect_kind, FILE_FORMAT_VERSION))
    if version > newest or version < 1:
        raise FormatVersionError(
            f"{what}: written by format version {version}; this zenstore reads up to "
            f"version {newest} of {FILE_KINDS.get(expect_kind, 'these')} files"
        )
    if kind != expect_kind:
        raise CorruptStore(
            f"{what}: holds a {FILE_KINDS.get(kind, f'kind-{kind}')} file, expected "
            f"{FILE_KINDS[expect_kind]}"
        )
    header_len = FILE_HEADER_SIZE + SECTION_ENTRY_SIZE * n_sections + meta_len
    if n_sections > 64 or header_len > actual_size:
        raise CorruptStore(f"{what}: header claims {header_len} bytes, file has {actual_size}")
    header = bytearray(buf[:header_len])
    struct.pack_into("<I", header, 28, 0)
    if crc32(header) != header_crc:
        raise CorruptStore(
            f"{what}: header checksum mismatch (stored {header_crc:#010x}, "
            f"computed {crc32(header):#010x})"
        )
    if file_size != actual_size:
        raise CorruptStore(
            f"{what}: file is {actual_size} bytes but its header says {file_size} (truncated?)"
        )
    sections = {}
    for i in range(n_sections):
        name_b, offset, length, crc, _ = _SECTION.unpack_from(buf, FILE_HEADER_SIZE + i * SECTION_ENTRY_SIZE)
        name = name_b.rstrip(b"\0").decode("ascii", "replace")
        if offset < header_len or offset + length > file_size or offset % SECTION_ALIGN:
            raise CorruptStore(f"{what}: section {name!r} lies outside the file")
        sections[name] = SectionEntry(name, offset, length, crc)
    meta_start = FILE_HEADER_SIZE + SECTION_ENTRY_SIZE * n_sections
    try:
        meta = json.loads(bytes(buf[meta_start:header_len]))
    except ValueError as exc:
        raise CorruptStore(f"{what}: header metadata is not valid JSON") from exc
    if not isinstance(meta, dict):
        raise CorruptStore(f"{what}: header metadata is not an object")
    return FileHeader(version, kind, file_size, meta, sections, header_len,
                      crc32(bytes(buf[:header_len])))


# --- the refine tier ---------------------------------------------------------------------------

REFINE_KINDS = ("int8", "magnitude")
MAGNITUDE_BITS = (1, 2, 3, 4, 8)


@dataclass(frozen=True)
class RefineTier:
    """Which refine tier a store keeps (``zenstore/refine.py`` is its codec); recorded in
    the store config as ``to_dict()``."""

    kind: str = "int8"
    bits: int = 8  # int8: always 8; magnitude: 1, 2, 3, 4 or 8 magnitude bits per coordinate

    def __post_init__(self) -> None:
        if self.kind not in REFINE_KINDS:
            raise InvalidArgument(f"refine tier kind must be one of {REFINE_KINDS}, got {self.kind!r}")
        if not isinstance(self.bits, int) or isinstance(self.bits, bool):
            raise InvalidArgument(f"refine tier bits must be an int, got {self.bits!r}")
        if self.kind == "int8" and self.bits != 8:
            raise InvalidArgument(f"an int8 refine tier has 8 bits, got {self.bits}")
        if self.kind == "magnitude" and self.bits not in MAGNITUDE_BITS:
            raise InvalidArgument(f"magnitude refine tier bits must be one of {MAGNITUDE_BITS}, got {self.bits}")

    @classmethod
    def parse(cls, value) -> RefineTier | None:
        """A ``refine=`` argument: None, a tier, "int8", "magnitude<bits>" or a dict."""
        if value is None or isinstance(value, RefineTier):
            return value
        if isinstance(value, dict):
            unknown = set(value) - {"kind", "bits"}
            if unknown:
                raise InvalidArgument(f"refine tier has no option(s) {sorted(unknown)}")
            return cls(**value)
        if isinstance(value, str):
            if value == "int8":
                return cls("int8", 8)
            if value.startswith("magnitude") and value[len("magnitude"):].isdigit():
                return cls("magnitude", int(value[len("magnitude"):]))
        raise InvalidArgument(f"refine must be None, 'int8' or 'magnitude<bits>' (bits 1, 2, 3, 4, 8), got {value!r}")

    @property
    def name(self) -> str:
        return "int8" if self.kind == "int8" else f"magnitude{self.bits}"

    def code_bytes(self, dim: int) -> int:
        """Code bytes per row for a coded width ``dim`` (a multiple of 64)."""
        if not isinstance(dim, (int, np.integer)) or dim <= 0 or dim % WORD_BITS:
            raise InvalidArgument(f"dim must be a positive multiple of 64, got {dim!r}")
        return dim if self.kind == "int8" else self.bits * dim // 8

    def row_bytes(self, dim: int, metric: str) -> int:
        """Bytes per stored row (the refine bytes per vector)."""
        return self.code_bytes(dim) + 4 + (2 if self.kind == "magnitude" else 0) + (4 if metric == "l2" else 0)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "bits": self.bits}

    @classmethod
    def from_dict(cls, data) -> RefineTier:
        """Rebuild from a stored config (errors are CorruptStore / FormatVersionError)."""
        if not isinstance(data, dict):
            raise CorruptStore("refine tier config is not an object")
        unknown = [k for k in data if k not in ("kind", "bits") and not k.startswith("x-")]
        if unknown:
            raise FormatVersionError(f"refine tier config has fields this zenstore does not know: {unknown}")
        if data.get("kind") not in REFINE_KINDS:
            raise FormatVersionError(f"refine tier kind {data.get('kind')!r} is not one this zenstore "
                                     f"knows {REFINE_KINDS}")
        try:
            return cls(data["kind"], data.get("bits", 8))
        except InvalidArgument as exc:
            raise CorruptStore(f"refine tier config is invalid: {exc}") from exc


# --- the store configuration ------------------------------------------------------------------


def default_scale_blocks(dim: int, metric: str) -> int:
    """Default number of per-vector fp16 scale blocks.

    One block: measured against two in docs/design.md ("Choosing the estimator and the
    block count"); with the aux term it puts 7680-dim vectors at exactly 964 bytes.
    """
    return 1


@dataclass(frozen=True)
class StoreConfig:
    """Everything needed to rebuild the codec of a store; fixed when the store is created."""

    dim: int = 7680
    metric: str = "cosine"
    n_base: int = 1024
    scale_blocks: int = 0  # 0: pick default_scale_blocks(dim, metric)
    scale_estimator: str = "unbiased"
    rotation: str = "hadamard"
    train_sample: int = 65536
    min_rows_per_base: int = 16
    segment_fanout: int = 8
    seed: int = 0
    extensions: dict = field(default_factory=dict)
    refine: dict | None = None  # RefineTier.to_dict(), or None: no refine tier (docs/refine.md)

    def __post_init__(self) -> None:
        if self.scale_blocks == 0:
            object.__setattr__(self, "scale_blocks", default_scale_blocks(self.dim, self.metric))
        tier = RefineTier.parse(self.refine)  # "int8", "magnitude4", a tier or a dict
        object.__setattr__(self, "refine", None if tier is None else tier.to_dict())
        self.validate()

    def validate(self) -> None:
        def bad(msg):
            raise InvalidArgument(f"invalid store option: {msg}")

        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            bad(f"dim must be a positive int, got {self.dim!r}")
        if self.metric not in METRICS:
            bad(f"metric must be one of {METRICS}, got {self.metric!r}")
        if not isinstance(self.n_base, int) or not 1 <= self.n_base <= 1 << 20:
            bad(f"n_base must be an int in [1, 2^20], got {self.n_base!r}")
        words = self.words
        if not isinstance(self.scale_blocks, int) or self.scale_blocks < 1 or words % self.scale_blocks:
            bad(f"scale_blocks must divide the number of 64-bit code words ({words} for dim "
                f"{self.dim}), got {self.scale_blocks!r}")
        if self.scale_estimator not in SCALE_ESTIMATORS:
            bad(f"scale_estimator must be one of {SCALE_ESTIMATORS}, got {self.scale_estimator!r}")
        if self.rotation not in ROTATIONS:
            bad(f"rotation must be one of {ROTATIONS}, got {self.rotation!r}")
        if not isinstance(self.train_sample, int) or self.train_sample < 1:
            bad(f"train_sample must be a positive int, got {self.train_sample!r}")
        if not isinstance(self.min_rows_per_base, int) or self.min_rows_per_base < 1:
            bad(f"min_rows_per_base must be a positive int, got {self.min_rows_per_base!r}")
        if not isinstance(self.segment_fanout, int) or self.segment_fanout < 2:
            bad(f"segment_fanout must be an int >= 2, got {self.segment_fanout!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            bad(f"seed must be a non-negative int, got {self.seed!r}")

    @property
    def coded_dim(self) -> int:
        """The width vectors are rotated and coded in: ``dim`` padded to a multiple of 64."""
        return coded_dim(self.dim)

    @property
    def words(self) -> int:
        return self.coded_dim // WORD_BITS

    @property
    def format_version(self) -> int:
        """The format version a store of this config is written with (docs/format.md):
        4 with a refine tier, else the lowest that describes its dim (payload indexes
        raise a store's version to 3: ``store_format_version``)."""
        return REFINE_FORMAT_VERSION if self.refine is not None else format_version_for(self.dim)

    @property
    def refine_tier(self) -> RefineTier | None:
        return None if self.refine is None else RefineTier(**self.refine)

    @property
    def refine_bytes_per_vector(self) -> int:
        """Refine-file bytes per row (0 without a refine tier), apart from the hot code."""
        tier = self.refine_tier
        return 0 if tier is None else tier.row_bytes(self.coded_dim, self.metric)

    @property
    def bytes_per_vector(self) -> int:
        """Vector data per row: sign bits + fp16 scales + one fp16 aux term (codec.py)."""
        return self.coded_dim // 8 + 2 * self.scale_blocks + 2

    def to_dict(self) -> dict:
        data = asdict(self)
        if data["refine"] is None:  # stores without a refine tier keep their exact bytes
            del data["refine"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> StoreConfig:
        if not isinstance(data, dict):
            raise CorruptStore("store config is not an object")
        known = {f for f in cls.__dataclass_fields__}
        unknown = [k for k in data if k not in known and not k.startswith("x-")]
        if unknown:
            raise FormatVersionError(f"store config has fields this zenstore does not know: {unknown}")
        if data.get("refine") is not None:
            RefineTier.from_dict(data["refine"])  # CorruptStore / FormatVersionError
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, InvalidArgument) as exc:
            raise CorruptStore(f"store config is invalid: {exc}") from exc

    def with_options(self, **options) -> StoreConfig:
        return replace(self, **options)


# --- the manifest: which files make up the store ---------------------------------------------


SEGMENT_FILE = "segments/seg-{:08d}.zseg"
REFINE_FILE = "segments/seg-{:08d}.zref"  # the refine file beside segment N (same rows, same order)
_BASE_FILE = re.compile(r"base-[0-9]{6}\.zbase")


def _check_int(value, what: str, lo: int = 0, hi: int = (1 << 63) - 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise CorruptStore(f"manifest is malformed: {what} must be an int in [{lo}, {hi}], got {value!r}")
    return value


def _record_fields(data, cls, what: str, optional: tuple[str, ...] = ()) -> dict:
    """The fields of a manifest sub-record: a JSON object with exactly ``cls``'s fields
    (``optional`` ones may be absent; ``x-`` extensions are ignored; any other key is a
    newer writer's)."""
    if not isinstance(data, dict):
        raise CorruptStore(f"manifest is malformed: {what} is not an object")
    known = set(cls.__dataclass_fields__)
    unknown = [k for k in data if k not in known and not k.startswith("x-")]
    if unknown:
        raise FormatVersionError(f"manifest {what} has fields this zenstore does not know: {unknown}")
    missing = known - set(data) - set(optional)
    if missing:
        raise CorruptStore(f"manifest is malformed: {what} lacks {sorted(missing)}")
    return {k: data[k] for k in known if k in data}


@dataclass(frozen=True)
class RefineRecord:
    """The refine file of one segment: its name (derived from the segment id), size and
    header crc32 (as for segments, a valid file that is not this one is refused)."""

    file: str
    size: int
    header_crc: int

    @classmethod
    def from_dict(cls, data, segment_id: int) -> RefineRecord:
        f = _record_fields(data, cls, "refine record")
        if f["file"] != REFINE_FILE.format(segment_id):
            raise CorruptStore(f"manifest is malformed: segment {segment_id} has refine file {f['file']!r}")
        return cls(f["file"], _check_int(f["size"], "refine size"),
                   _check_int(f["header_crc"], "refine header_crc", 0, 0xFFFFFFFF))


@dataclass(frozen=True)
class SegmentRecord:
    id: int
    file: str
    rows: int
    deleted: int
    size: int
    header_crc: int
    refine: RefineRecord | None = None  # stores with a refine tier only (format version 3)

    @property
    def live(self) -> int:
        return self.rows - self.deleted

    @property
    def files(self) -> tuple[str, ...]:
        """The segment's files: the segment and, with a refine tier, its refine file."""
        return (self.file,) if self.refine is None else (self.file, self.refine.file)

    def to_dict(self) -> dict:
        data = asdict(self)
        if self.refine is None:  # segments without a refine file keep their exact bytes
            del data["refine"]
        return data

    @classmethod
    def from_dict(cls, data) -> SegmentRecord:
        refine = None
        if isinstance(data, dict) and "refine" in data:
            data = dict(data)
            raw = data.pop("refine")
            refine = RefineRecord.from_dict(raw, data.get("id") if isinstance(data.get("id"), int) else -1)
        f = _record_fields(data, cls, "segment record", optional=("refine",))  # read above
        rec = cls(_check_int(f["id"], "segment id", 1), f["file"], _check_int(f["rows"], "rows"),
                  _check_int(f["deleted"], "deleted"), _check_int(f["size"], "size"),
                  _check_int(f["header_crc"], "header_crc", 0, 0xFFFFFFFF), refine)
        # the name is derived from the id: a manifest never points outside the store
        if rec.file != SEGMENT_FILE.format(rec.id):
            raise CorruptStore(f"manifest is malformed: segment {rec.id} has file {rec.file!r}")
        if rec.deleted > rec.rows:
            raise CorruptStore(f"manifest segment record is inconsistent: {rec}")
        return rec


@dataclass(frozen=True)
class BaseRecord:
    file: str
    n_base: int
    size: int
    header_crc: int

    @classmethod
    def from_dict(cls, data) -> BaseRecord:
        f = _record_fields(data, cls, "base record")
        if not isinstance(f["file"], str) or not _BASE_FILE.fullmatch(f["file"]):
            raise CorruptStore(f"manifest is malformed: base file {f['file']!r}")
        return cls(f["file"], _check_int(f["n_base"], "n_base", 1, 1 << 20), _check_int(f["size"], "size"),
                   _check_int(f["header_crc"], "header_crc", 0, 0xFFFFFFFF))


PAYLOAD_INDEX_KINDS = ("keyword", "int", "float")  # = filters.INDEX_KINDS (a test holds them equal)
MAX_INDEX_FIELD_BYTES = 400  # UTF-8 bytes of an indexed field's dotted path (LMDB keys: 511)


def index_field_problem(name) -> str | None:
    """Why ``name`` cannot be an indexed field (a dotted payload path), or None."""
    if not isinstance(name, str):
        return f"a field name must be a str, got {type(name).__name__}"
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return f"field {name[:60]!r} is not valid UTF-8"
    if not 0 < size <= MAX_INDEX_FIELD_BYTES:
        return f"a field name must have 1..{MAX_INDEX_FIELD_BYTES} UTF-8 bytes, got {size}"
    if "" in name.split("."):
        return f"field {name[:60]!r} has an empty path segment (a dotted path looks like 'meta.lang')"
    return None


@dataclass(frozen=True)
class PayloadIndexSpec:
    """One payload index: the dotted payload path it indexes and its kind."""

    field: str
    kind: str

    @classmethod
    def from_dict(cls, data) -> PayloadIndexSpec:
        f = _record_fields(data, cls, "payload index record")
        problem = index_field_problem(f["field"])
        if problem is not None or f["kind"] not in PAYLOAD_INDEX_KINDS:
            raise CorruptStore(f"manifest is malformed: payload index {data!r}: {problem or 'unknown kind'}")
        return cls(f["field"], f["kind"])


@dataclass(frozen=True)
class Manifest:
    generation: int = 0
    next_segment_id: int = 1
    id_type: str | None = None
    base: BaseRecord | None = None
    segments: tuple[SegmentRecord, ...] = ()
    payload_indexes: tuple[PayloadIndexSpec, ...] = ()  # sorted by field; absent from JSON when empty

    @property
    def count(self) -> int:
        return sum(s.live for s in self.segments)

    @property
    def indexed(self) -> dict[str, str]:
        """field -> index kind of every payload index."""
        return {p.field: p.kind for p in self.payload_indexes}

    def to_dict(self) -> dict:
        out = {
            "generation": self.generation,
            "next_segment_id": self.next_segment_id,
            "id_type": self.id_type,
            "base": asdict(self.base) if self.base else None,
            "segments": [s.to_dict() for s in self.segments],
        }
        if self.payload_indexes:  # a store without indexes keeps its version-1 manifest
            out["payload_indexes"] = [asdict(p) for p in self.payload_indexes]
        return out

    @classmethod
    def from_dict(cls, data) -> Manifest:
        # every field is type-checked: a damaged manifest must raise CorruptStore here,
        # not a TypeError later, and must never name a file outside the store
        f = _record_fields(data, cls, "manifest", optional=("payload_indexes",))
        indexes = ()
        if "payload_indexes" in f:
            raw = f["payload_indexes"]
            if not isinstance(raw, list) or not raw:
                raise CorruptStore("manifest is malformed: payload_indexes is not a non-empty list")
            indexes = tuple(PayloadIndexSpec.from_dict(p) for p in raw)
            if [p.field for p in indexes] != sorted({p.field for p in indexes}):
                raise CorruptStore("manifest is malformed: payload indexes are not sorted by field, or repeat one")
        if not isinstance(f["segments"], list):
            raise CorruptStore("manifest is malformed: segments is not a list")
        base = None if f["base"] is None else BaseRecord.from_dict(f["base"])
        segs = tuple(SegmentRecord.from_dict(s) for s in f["segments"])
        m = cls(_check_int(f["generation"], "generation"), _check_int(f["next_segment_id"], "next_segment_id", 1),
                f["id_type"], base, segs, indexes)
        if m.id_type not in (None, *ID_TYPES):
            raise CorruptStore(f"manifest has unknown id type {m.id_type!r}")
        if segs and (m.id_type is None or base is None):
            raise CorruptStore("manifest lists segments but no id type or base matrix")
        if len({s.id for s in segs}) != len(segs):
            raise CorruptStore("manifest lists a segment twice")
        for s in segs:
            if s.id >= m.next_segment_id:
                raise CorruptStore(f"manifest segment record is inconsistent: {s}")
        return m


def store_format_version(config: StoreConfig, manifest: Manifest) -> int:
    """The format a store has: its config's (1, 2 for a dim that is not a multiple of 64,
    4 with a refine tier), raised to 3 by payload indexes."""
    return max(config.format_version, INDEXED_FORMAT_VERSION if manifest.payload_indexes else 0)


def dumps_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def loads_json(raw: bytes, what: str):
    try:
        return json.loads(bytes(raw))
    except ValueError as exc:
        raise CorruptStore(f"{what} is not valid JSON") from exc


# --- catalog key encodings ---------------------------------------------------------------------


def segment_key(segment_id: int) -> bytes:
    return struct.pack(">Q", segment_id)


def id_key(ext_id) -> bytes:
    """Catalog key of an external id: ints sort numerically, strings by their UTF-8 bytes."""
    if isinstance(ext_id, str):
        return b"s" + ext_id.encode("utf-8")
    return b"i" + struct.pack(">Q", (int(ext_id) + (1 << 63)) & 0xFFFFFFFFFFFFFFFF)


# --- compressed catalog values -------------------------------------------------------------------

_ZSTD_LEVEL = 3
_COL_HEADER = struct.Struct("<4sBBHQ")  # tag, kind, encoding, reserved, n
COL_INT64 = 1
COL_STR = 2
COL_UINT32 = 3
ENC_RAW = 0
ENC_DELTA_SHUFFLE = 1


def compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL, write_checksum=True).compress(raw)


_LOCAL = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    """This thread's decompression context. Making one costs ~10x decompressing a small
    payload (measured ~60 vs ~6 us per payload), and instances must not be shared by
    threads; each decompressobj() on it is a fresh, independent frame."""
    dctx = getattr(_LOCAL, "dctx", None)
    if dctx is None:
        dctx = _LOCAL.dctx = zstandard.ZstdDecompressor()
    return dctx


def decompress(blob: bytes, what: str, max_size: int = 1 << 34) -> bytes:
    """Exactly one whole zstd frame, content checksum verified.

    Streamed, not one-shot: the one-shot decoder allocates the frame's declared content
    size up front, so one flipped bit in that field asked for gigabytes (MemoryError).
    The streaming decoder checks the declared size against the real content; a record
    that ends early or carries bytes after its frame is corrupt too.
    """
    try:
        dobj = _decompressor().decompressobj()
        out = dobj.decompress(bytes(blob))
    except zstandard.ZstdError as exc:
        raise CorruptStore(f"{what}: compressed record is corrupt ({exc})") from exc
    if not dobj.eof or dobj.unused_data or len(out) > max_size:
        raise CorruptStore(f"{what}: compressed record is truncated or has trailing bytes")
    return out


def decode_payload(blob: bytes, what: str) -> dict:
    """A stored payload: zstd frame (checksummed) of UTF-8 JSON that must be an object."""
    raw = decompress(blob, what)
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise CorruptStore(f"{what}: stored payload is not valid JSON") from exc
    if not isinstance(value, dict):
        raise CorruptStore(f"{what}: stored payload is not a JSON object")
    return value


def encode_column(values: np.ndarray) -> bytes:
    """Encode an id or row column for the catalog: header + body, zstd-compressed.

    int64 columns are delta-encoded and byte-shuffled (all first bytes, then all second
    bytes...) before compression: ids that are close together become runs of zero bytes.
    uint32 columns (tombstoned rows) use the same scheme; str columns are UTF-8 strings
    with a uint32 offset table.
    """
    if values.dtype == object or values.dtype.kind in "US":
        encoded = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype="<u4")
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        body = offsets.tobytes() + b"".join(encoded)
        head = _COL_HEADER.pack(b"ZCOL", COL_STR, ENC_RAW, 0, len(encoded))
        return compress(head + body)
    kind, dtype = (COL_INT64, "<i8") if values.dtype.kind == "i" else (COL_UINT32, "<u4")
    arr = np.ascontiguousarray(values, dtype=dtype)
    delta = np.diff(arr, prepend=arr.dtype.type(0)) if arr.size else arr
    shuffled = np.ascontiguousarray(delta).view(np.uint8).reshape(-1, arr.itemsize).T.tobytes()
    head = _COL_HEADER.pack(b"ZCOL", kind, ENC_DELTA_SHUFFLE, 0, arr.size)
    return compress(head + shuffled)


def decode_column(blob: bytes, what: str) -> np.ndarray:
    raw = decompress(blob, what)
    if len(raw) < _COL_HEADER.size:
        raise CorruptStore(f"{what}: column record too short")
    tag, kind, enc, _, n = _COL_HEADER.unpack_from(raw, 0)
    body = memoryview(raw)[_COL_HEADER.size :]
    if tag != b"ZCOL":
        raise CorruptStore(f"{what}: not a column record")
    if kind == COL_STR:
        need = 4 * (n + 1)
        if len(body) < need:
            raise CorruptStore(f"{what}: string column truncated")
        offsets = np.frombuffer(body[:need], dtype="<u4")
        data = bytes(body[need:])
        if offsets[-1] != len(data) or np.any(np.diff(offsets.astype(np.int64)) < 0):
            raise CorruptStore(f"{what}: string column offsets are inconsistent")
        out = np.empty(n, dtype=object)
        try:
            for i in range(n):
                out[i] = data[offsets[i] : offsets[i + 1]].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorruptStore(f"{what}: string column is not UTF-8") from exc
        return out
    if kind not in (COL_INT64, COL_UINT32) or enc != ENC_DELTA_SHUFFLE:
        raise CorruptStore(f"{what}: unknown column kind {kind}/encoding {enc}")
    dtype = np.dtype("<i8") if kind == COL_INT64 else np.dtype("<u4")
    if len(body) != n * dtype.itemsize:
        raise CorruptStore(f"{what}: column has {len(body)} bytes for {n} values")
    delta = np.frombuffer(bytes(body), dtype=np.uint8).reshape(dtype.itemsize, n).T.copy().view(dtype)
    return np.cumsum(delta.ravel(), dtype=dtype).astype(np.int64 if kind == COL_INT64 else np.uint32)
