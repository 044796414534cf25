"""Immutable data files: atomic creation and validated, memory-mapped reading.

Segments and the base matrix are written once, under a temporary name, fsynced, then
renamed into place (and the directory fsynced), so a file under its final name is always
complete; a write that fails (a full disk) removes its temporary file. Readers check the
framing (``format.parse_file_header``) and every section's crc32 before any byte is used,
and open nothing but regular files (a FIFO in place of a segment used to block ``open``
forever). OS failures become zenstore errors naming the file and the cause
(``errors.from_os_error``): StorageFull, StorePermissionError, ResourceExhausted.
"""

from __future__ import annotations

import errno
import mmap
import os
import stat
import zlib
from dataclasses import dataclass

import numpy as np

from . import format as fmt
from .errors import CorruptStore, FileMissing, NotAStore, ZenstoreError, from_os_error
from .faults import fault

TMP_SUFFIX = ".tmp"
VERIFY_CHUNK = 4 << 20


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_framed_file(path: str, kind: int, meta: dict, sections, version: int | None = None) -> tuple[int, int]:
    """Atomically write a framed file; returns (file_size, header_crc32).

    ``sections`` is a list of ``(name, payload)`` where payload is a bytes-like object
    (e.g. a numpy array), or ``(name, (length, chunks))`` where ``chunks`` is an iterable
    of bytes-like pieces totalling ``length`` bytes, so large sections can be streamed.
    """
    specs = []
    for name, payload in sections:
        if isinstance(payload, tuple):
            length, chunks = payload
        else:
            if isinstance(payload, np.ndarray) and payload.size == 0:
                payload = b""  # memoryview cannot cast zero-sized shapes
            mv = memoryview(payload).cast("B")
            length, chunks = mv.nbytes, (mv,)
        specs.append((name, int(length), chunks))
    _, offsets, size = fmt.section_offsets(meta, [length for _, length, _ in specs])
    tmp = path + TMP_SUFFIX
    try:
        header = _write_tmp(tmp, kind, meta, specs, offsets, size, version)
        fault("file.written")  # complete, fsynced, still under its temporary name
        os.replace(tmp, path)
    except ZenstoreError:  # e.g. a merge's input turned out damaged (StoreIOError is an OSError)
        _unlink_quietly(tmp)
        raise
    except OSError as exc:
        _unlink_quietly(tmp)  # a full disk must not keep a half-written file
        raise from_os_error(exc, path, "writing a data file") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    fault("file.renamed")  # under its final name, directory not yet fsynced
    try:
        fsync_dir(os.path.dirname(path) or ".")
    except OSError as exc:  # the file stays an orphan the next writer removes
        raise from_os_error(exc, os.path.dirname(path) or ".", "syncing the directory") from exc
    return size, fmt.crc32(header)


def _write_tmp(tmp: str, kind: int, meta: dict, specs, offsets, size: int, version: int | None) -> bytes:
    """Write and fsync the framed file under its temporary name; returns its header."""
    crcs = []
    with open(tmp, "wb") as f:
        for (name, length, chunks), offset in zip(specs, offsets):
            f.seek(offset)
            crc, written = 0, 0
            for chunk in chunks:
                mv = memoryview(chunk).cast("B")
                f.write(mv)
                crc = zlib.crc32(mv, crc)
                written += mv.nbytes
            if written != length:
                raise ValueError(f"section {name!r}: wrote {written} bytes, declared {length}")
            crcs.append(crc & 0xFFFFFFFF)
            f.flush()
            fault("file.section")  # a partial temporary file, no header yet
        header = fmt.build_header(kind, meta, [(n, ln, c) for (n, ln, _), c in zip(specs, crcs)], version)
        f.seek(0)
        f.write(header)
        f.truncate(size)
        f.flush()
        os.fsync(f.fileno())
    return header


@dataclass
class MappedFile:
    """A validated framed file mapped read-only; arrays returned alias the mapping."""

    path: str
    header: fmt.FileHeader
    buf: mmap.mmap | bytes

    def array(self, name: str, dtype, shape) -> np.ndarray:
        entry = self.header.sections.get(name)
        if entry is None:
            raise CorruptStore(f"{self.path}: section {name!r} is missing")
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if len(shape) else 1
        if entry.length != count * dtype.itemsize:
            raise CorruptStore(
                f"{self.path}: section {name!r} has {entry.length} bytes, expected "
                f"{count * dtype.itemsize} for shape {tuple(shape)}"
            )
        if count == 0:
            return np.zeros(shape, dtype=dtype)
        return np.frombuffer(self.buf, dtype=dtype, count=count, offset=entry.offset).reshape(shape)

    def release(self, name: str, upto: int) -> None:
        """Drop this process's resident pages of section ``name`` below byte ``upto``.

        Mapped pages that were read stay resident (and count in RSS) until unmapped;
        merges stream whole segments and call this as they go, so a merge of gigabytes
        runs in bounded memory. The file is immutable, so pages read again come back.
        """
        entry = self.header.sections.get(name)
        if entry is None or not hasattr(self.buf, "madvise"):
            return
        end = (entry.offset + min(upto, entry.length)) // mmap.PAGESIZE * mmap.PAGESIZE
        start = entry.offset // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            self.buf.madvise(mmap.MADV_DONTNEED, start, end - start)

    def verify_sections(self, fd: int | None = None) -> None:
        """Check every section's crc32, reading the file (not the mapping) in chunks.

        ``fd``: a descriptor of the very file that was mapped. Reopening by path raced
        with a concurrent merge: a reader mapped a segment, the writer unlinked it, and
        the reopen raised FileNotFoundError instead of letting the reader retry.
        """
        if fd is None:
            fd = _open_regular(self.path)
            try:
                return self.verify_sections(fd)
            finally:
                os.close(fd)
        for entry in self.header.sections.values():
            crc, left, pos = 0, entry.length, entry.offset
            while left:
                try:
                    chunk = os.pread(fd, min(left, VERIFY_CHUNK), pos)
                except OSError as exc:
                    raise from_os_error(exc, self.path, "reading a data file") from exc
                if not chunk:
                    break
                crc = zlib.crc32(chunk, crc)
                left -= len(chunk)
                pos += len(chunk)
            if left or (crc & 0xFFFFFFFF) != entry.crc32:
                raise CorruptStore(
                    f"{self.path}: section {entry.name!r} checksum mismatch (stored "
                    f"{entry.crc32:#010x}, computed {crc & 0xFFFFFFFF:#010x})"
                )


_NOT_REGULAR = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _open_regular(path: str) -> int:
    """A read-only descriptor of ``path``, which must be a regular file. Opened
    non-blocking: a FIFO in place of a data file would otherwise block ``open`` until
    some process opened it for writing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError as exc:
        raise FileMissing(f"{path}: file listed in the catalog is missing") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP, errno.ENXIO, errno.ENODEV):
            raise CorruptStore(f"{path}: cannot be opened as a data file ({os.strerror(exc.errno)})") from exc
        raise from_os_error(exc, path, "opening a data file") from exc
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise from_os_error(exc, path, "opening a data file") from exc
    if not stat.S_ISREG(mode):
        os.close(fd)
        what = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
        raise CorruptStore(f"{path}: is {what}, not a data file")
    return fd


def open_data_file(path: str) -> int:
    """A read-only descriptor of the regular file ``path``; ``FileMissing`` if it is gone."""
    return _open_regular(path)


def open_framed_file(path: str, kind: int, *, verify: bool = True, fd: int | None = None) -> MappedFile:
    """Map and validate a framed file. ``verify`` also checks every section's crc32.
    ``fd``: a descriptor of ``path`` opened earlier (by ``open_data_file``; it stays the
    caller's), so a file unlinked since then is still the one read."""
    fd = _open_regular(path) if fd is None else os.dup(fd)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            raise CorruptStore(f"{path}: file is empty")
        try:
            buf = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise from_os_error(exc, path, f"mapping a data file of {size} bytes") from exc
        header = fmt.parse_file_header(buf, expect_kind=kind, actual_size=size, what=path)
        mapped = MappedFile(path, header, buf)
        if verify:
            mapped.verify_sections(fd)  # the mapped file, even if unlinked meanwhile
    finally:
        os.close(fd)
    return mapped


def check_digest(path: str, mapped: MappedFile, header_crc: int) -> None:
    """The manifest records each file's header crc32: a valid file that is not the one
    the catalog committed (another store's, an older one restored) is refused."""
    if mapped.header.digest != header_crc:
        raise CorruptStore(f"{path}: header crc32 {mapped.header.digest:#010x} differs from the "
                           f"catalog's {header_crc:#010x} (not the file the catalog refers to)")


def require_dir(path: str) -> None:
    if not os.path.isdir(path):
        raise NotAStore(f"{path}: no such store directory")
