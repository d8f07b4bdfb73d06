"""Every tensor of a ``.t7`` file to ``.npz`` or ``.safetensors``, in memory bounded by the file.

The format is chosen by the target's extension (``.npz``, ``.safetensors``; anything else is an
error). Each tensor is named by its path in the file, as :meth:`T7File.tensors
<streamser.handle.T7File.tensors>` gives it; a name is data, never a keyword argument.

* ``.safetensors`` stores every name exactly (the format reserves only ``__metadata__``, which
  is refused). The header is built from the lazy index before any data is read, then each
  tensor's bytes are streamed in bounded chunks, little endian, in C order.
* ``.npz`` (written here with :mod:`zipfile`, one ``.npy`` member per tensor, streamed, ZIP64)
  needs member names that cannot escape the folder they are extracted into. Every character of a
  name outside ``A-Z a-z 0-9 - . _ ~ [ ]`` is percent-encoded (its UTF-8 bytes as ``%XX``; ``%``
  itself becomes ``%25``), so a member name has no ``/``, ``\\`` or ``:``, and
  ``urllib.parse.unquote(member)`` gives the name back (:func:`npz_member`, :func:`npz_name`).
  A path such as ``modules[1].weight`` is its own member name.

Empty tensors (the buffers a medium or light file keeps as Torch's empty tensor) are left out
unless ``keep_empty``. A view may show more elements than its storage holds (a stride-0
expansion); exporting writes what the view shows, so a tensor whose logical size is more than
:data:`EXPANSION_BOUND` times its storage's bytes (and above :data:`EXPANSION_FLOOR`) is refused
before anything is written, unless ``allow_expanded``. Standalone storages (not tensors, e.g.
``nn.View``'s ``size``) are not exported; the report counts them.

The target is written atomically: a temporary file beside it, renamed over it when complete.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, unquote

import numpy as np

from ..errors import StreamserError
from ..handle import T7File, TensorInfo
from ..handle import open as open_t7
from ..io.arrays import ChunkSource, byte_view, iter_chunks
from ..io.atomic import replacing

EXPANSION_BOUND = 16  # a tensor may show at most this many times its storage's bytes ...
EXPANSION_FLOOR = 1 << 20  # ... unless it is no larger than this many bytes
CHUNK_BYTES = 16 << 20  # the most of one tensor held in memory while it is written
_SAFE = "-._~[]"  # besides letters and digits: characters kept as they are in .npz names
Arrays = Iterator[np.ndarray[Any, Any] | ChunkSource]  # a lazily read tensor: by chunks


class Described(Protocol):
    """What the writers read of a tensor before its data (a :class:`TensorInfo` has it)."""

    @property
    def path(self) -> str:
        """The name the tensor is written under."""

    @property
    def dtype(self) -> np.dtype[Any]:
        """Its numpy type."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Its shape."""

    @property
    def nbytes(self) -> int:
        """Bytes of its data."""


_SAFETENSORS_DTYPES = {
    ("f", 8): "F64",
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("i", 8): "I64",
    ("i", 4): "I32",
    ("i", 2): "I16",
    ("i", 1): "I8",
    ("u", 1): "U8",
    ("b", 1): "BOOL",
}


class ExportError(StreamserError):
    """A file that cannot be exported as asked (a name, an expansion, an extension)."""


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote."""

    path: Path  # the file actually written
    format: str  # "npz" or "safetensors"
    arrays: int
    nbytes: int  # bytes of tensor data written
    skipped_empty: int
    skipped_storages: int

    def __str__(self) -> str:
        notes = ""
        if self.skipped_empty:
            notes += f", {_counted(self.skipped_empty, 'empty tensor')} skipped"
        if self.skipped_storages:
            notes += f", {_counted(self.skipped_storages, 'storage')} not exported"
        written = _counted(self.arrays, "array")
        return f"{self.path}: {written}, {self.nbytes:,} bytes ({self.format}){notes}"


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def npz_member(name: str) -> str:
    """The ``.npz`` member name of a tensor name (without ``.npy``): safe, reversible."""
    return quote(name, safe=_SAFE, encoding="utf-8", errors="surrogateescape")


def npz_name(member: str) -> str:
    """The tensor name of an ``.npz`` member (``np.load(...).files`` gives these)."""
    return unquote(member.removesuffix(".npy"), encoding="utf-8", errors="surrogateescape")


def export(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    format: str | None = None,
    keep_empty: bool = False,
    allow_expanded: bool = False,
) -> ExportReport:
    """Write every tensor of ``source`` to ``target`` (``.npz`` or ``.safetensors``).

    ``format`` is the ``.t7`` format of ``source`` (detected when None).
    """
    path = Path(target)
    kind, write = _writer_for(path)
    with open_t7(source, format=format) as handle:
        index = handle.tensors()
        chosen = [info for info in index if _is_tensor(info) and (keep_empty or info.nbytes)]
        for info in chosen:
            _check_expansion(info, allow_expanded)
        names = [info.path for info in chosen]
        _check_unique(names)
        positions = {name: position for position, name in enumerate(names)}
        nbytes = write(path, chosen, _arrays(handle, positions))
    storages = sum(not _is_tensor(info) for info in index)
    empty = sum(_is_tensor(info) and not info.nbytes for info in index) if not keep_empty else 0
    return ExportReport(path, kind, len(chosen), nbytes, empty, storages)


def _is_tensor(info: TensorInfo) -> bool:
    return not info.typename.endswith("Storage")


def _check_expansion(info: TensorInfo, allowed: bool) -> None:
    """Refuse a view that shows far more bytes than its storage holds (a stride-0 expansion)."""
    bound = max(EXPANSION_BOUND * info.storage_nbytes, EXPANSION_FLOOR)
    if allowed or info.nbytes <= bound:
        return
    where = f" (data at byte {info.offset})" if info.offset is not None else ""
    ratio = info.nbytes / max(info.storage_nbytes, 1)
    raise ExportError(
        f"{info.path}: a view of shape {list(info.shape)} shows {info.nbytes:,} bytes of a "
        f"storage of {info.storage_nbytes:,} bytes ({ratio:,.0f}x; the bound is "
        f"{EXPANSION_BOUND}x){where}; exporting it would write every repeated element: pass "
        "--allow-expanded (allow_expanded=True) to write it anyway"
    )


def _check_unique(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ExportError(f"two tensors have the name {name!r}")
        seen.add(name)


def _arrays(handle: T7File, wanted: dict[str, int]) -> Arrays:
    """The chosen tensors' arrays, in the index's order (views: nothing is copied here; a
    lazily read tensor comes unread, and is read by bounded chunks as it is written)."""
    expected = 0
    for path, array in handle.arrays(read=False):
        position = wanted.get(path or "<root>")
        if position is None:
            continue
        if position != expected:
            raise StreamserError(f"internal error: {path} is not where the index has it")
        expected += 1
        yield array
    if expected != len(wanted):
        raise StreamserError("internal error: the index lists tensors that were not found")


def _write_npz(path: Path, infos: Sequence[Described], arrays: Arrays) -> int:
    """One ``.npy`` member per tensor, each streamed into the archive (ZIP64, stored)."""
    total = 0
    with replacing(path) as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as archive:
        for info, array in zip(infos, arrays, strict=True):
            with archive.open(npz_member(info.path) + ".npy", "w", force_zip64=True) as member:
                _write_npy(member, array)
            total += array.size * array.dtype.itemsize
    return total


def _write_npy(member: Any, array: np.ndarray[Any, Any] | ChunkSource) -> None:
    """One ``.npy`` file: its header, then the elements in C order, a chunk at a time."""
    header = {
        "descr": np.lib.format.dtype_to_descr(array.dtype),
        "fortran_order": False,
        "shape": tuple(array.shape),  # type: ignore[union-attr]  # lazy arrays have one too
    }
    try:
        np.lib.format.write_array_header_1_0(member, header)
    except ValueError:  # a header over 64 KiB (thousands of dimensions): format 2.0
        np.lib.format.write_array_header_2_0(member, header)
    for chunk in iter_chunks(array, CHUNK_BYTES):
        member.write(byte_view(chunk))


def write_safetensors(path: Path, infos: Sequence[Described], arrays: Arrays) -> int:
    """The header from ``infos``, then each of ``arrays`` (one per info, in order), atomically;
    returns the bytes of tensor data written."""
    header = safetensors_header(infos)
    with replacing(path) as raw:
        raw.write(len(header).to_bytes(8, "little"))
        raw.write(header)
        return sum(_write_little_endian(raw, array) for array in arrays)


def safetensors_header(infos: Sequence[Described]) -> bytes:
    """The JSON header for ``infos``, padded with spaces to a multiple of 8 bytes."""
    entries: dict[str, Any] = {}
    offset = 0
    for info in infos:
        if info.path == "__metadata__":
            raise ExportError(
                "a tensor named '__metadata__' cannot be stored in .safetensors (the format "
                "reserves that key); export it to .npz"
            )
        end = offset + info.nbytes
        entries[info.path] = {
            "dtype": _safetensors_dtype(info),
            "shape": list(info.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return text + b" " * (-len(text) % 8)


def _safetensors_dtype(info: Described) -> str:
    name = _SAFETENSORS_DTYPES.get((info.dtype.kind, info.dtype.itemsize))
    if name is None:
        raise ExportError(f"{info.path}: no safetensors type for {info.dtype}")
    return name


def _write_little_endian(raw: BinaryIO, array: np.ndarray[Any, Any] | ChunkSource) -> int:
    """Write ``array`` in C order, little endian, at most :data:`CHUNK_BYTES` at a time."""
    little = array.dtype.newbyteorder("<")
    for chunk in iter_chunks(array, CHUNK_BYTES):
        if chunk.dtype != little:
            chunk = chunk.astype(little)
        raw.write(byte_view(chunk))
    return int(array.size) * array.dtype.itemsize


Writer = Callable[[Path, Sequence[Described], Arrays], int]
_WRITERS: dict[str, tuple[str, Writer]] = {
    ".npz": ("npz", _write_npz),
    ".safetensors": ("safetensors", write_safetensors),
}


def _writer_for(path: Path) -> tuple[str, Writer]:
    """The format name and writer that the extension of ``path`` asks for."""
    chosen = _WRITERS.get(path.suffix.lower())
    if chosen is None:
        choices = ", ".join(_WRITERS)
        raise ExportError(f"cannot tell the export format of {str(path)!r}: name it {choices}")
    return chosen
