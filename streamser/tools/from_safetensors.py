"""A ``.safetensors`` file as a value for ``streamser.save``: one tensor at a time, mapped.

safetensors' own ``safe_open`` checks the file (header, offsets, sizes) and gives the names in
the order of their data. The data is then mapped, one read-only ``np.memmap`` per tensor, at the
byte offsets of the header (which streamser reads as well, since ``safe_open`` does not tell
them, and checks against what ``safe_open`` says). The value is a flat table ``{name: tensor}``
produced while it is written (a :class:`~streamser.TableStream`), so the writer holds one
tensor's mapping at a time, and a plain binary save copies each tensor file to file in the
kernel (``copy_file_range``, for tensors of 16 MiB and more): their data never passes
through the process.

Names stay as they are (``"0.weight"``), not split into nested tables at the dots: a name is
data (a dot may belong to it), and PyTorch's ``load_state_dict`` wants them flat, which is how
:func:`streamser.torch.load_state_dict` reads the result. The header's ``__metadata__`` (a map
of strings) has no place in a table of tensors: :attr:`SafetensorsFile.metadata` gives it.

Types: F64, F32, F16, I64, I32, I16, I8 and U8 are Torch7's Double, Float, Half, Long, Int,
Short, Char and Byte, and are written from the mapping. BOOL, BF16, the F8 types and U16, U32,
U64 have no Torch7 type: they are read as torch tensors over a copy-on-write mapping (still no
copy) and need a cast, exactly as torch tensors given to ``save`` do (``cast="float32"`` for
BF16 and F8, ``"torch.BoolTensor=torch.ByteTensor"`` for BOOL, see
:mod:`streamser.spec.pytorch_types`). Reading those needs PyTorch.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import FormatError, UnsupportedValueError
from ..values.lua import TableStream

PathLike = str | os.PathLike[str]
MAX_HEADER = 100 << 20  # safetensors' own bound on the JSON header

# safetensors type -> numpy type of a Torch7 element type.
_NUMPY = {
    "F64": "<f8",
    "F32": "<f4",
    "F16": "<f2",
    "I64": "<i8",
    "I32": "<i4",
    "I16": "<i2",
    "I8": "i1",
    "U8": "u1",
}
# safetensors type -> (numpy type of its bytes, torch dtype they are viewed as).
_TORCH = {
    "BOOL": ("?", "bool"),
    "BF16": ("<u2", "bfloat16"),
    "F8_E4M3": ("u1", "float8_e4m3fn"),
    "F8_E5M2": ("u1", "float8_e5m2"),
    "F8_E8M0": ("u1", "float8_e8m0fnu"),
    "U16": ("<u2", "uint16"),
    "U32": ("<u4", "uint32"),
    "U64": ("<u8", "uint64"),
}


@dataclass(frozen=True)
class Entry:
    """One tensor of the file: its name, safetensors type, shape and bytes in the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SafetensorsFile:
    """An opened ``.safetensors`` file: its tensors' entries in data order, and their arrays."""

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        """The file."""
        names, metadata = _checked_by_safetensors(self.path)
        self.metadata: dict[str, str] = metadata
        """The header's ``__metadata__`` (empty when there is none); not written to ``.t7``."""
        start, entries = read_header(self.path)
        if [entry.name for entry in entries] != names:
            raise FormatError(f"{self.path}: safe_open and the header disagree on the names")
        self.data_start: int = start
        """Byte offset of the data section (the header's offsets count from here)."""
        self.entries: list[Entry] = entries
        """The tensors, in the order of their data."""

    @property
    def nbytes(self) -> int:
        """Bytes of tensor data in the file."""
        return sum(entry.end - entry.begin for entry in self.entries)

    def array(self, entry: Entry) -> Any:
        """The tensor of ``entry``, mapped: an ``np.memmap`` view, or a torch tensor over one."""
        if entry.dtype in _NUMPY:
            return self._mapped(entry, np.dtype(_NUMPY[entry.dtype]), "r")
        if entry.dtype not in _TORCH:
            raise UnsupportedValueError(f"safetensors type {entry.dtype} has no reader", entry.name)
        raw, torch_name = _TORCH[entry.dtype]
        torch = _import_torch(entry)
        mapped = self._mapped(entry, np.dtype(raw), "c")  # writable: torch shares it silently
        return torch.from_numpy(mapped).view(getattr(torch, torch_name))

    def _mapped(
        self, entry: Entry, dtype: np.dtype[Any], mode: Literal["r", "c"]
    ) -> np.ndarray[Any, Any]:
        if entry.begin == entry.end:
            return np.zeros(entry.shape, dtype)
        offset = self.data_start + entry.begin
        mapped = np.memmap(self.path, dtype, mode, offset, shape=(math.prod(entry.shape),))
        shaped: np.ndarray[Any, Any] = mapped.reshape(entry.shape)
        return shaped

    def items(self) -> Iterator[tuple[str, Any]]:
        """``(name, tensor)`` in data order, each mapped only when it is asked for."""
        for entry in self.entries:
            yield entry.name, self.array(entry)

    def table(self) -> TableStream:
        """The tensors as a flat table written while it is read (see the module docstring)."""
        return TableStream(len(self.entries), self.items())


def _checked_by_safetensors(path: Path) -> tuple[list[str], dict[str, str]]:
    """Names in data order and metadata, from safetensors' own checked reading of the file."""
    try:
        import safetensors
    except ImportError:
        raise UnsupportedValueError("reading .safetensors needs: pip install safetensors") from None
    try:
        with safetensors.safe_open(path, framework="numpy") as handle:
            return list(handle.offset_keys()), dict(handle.metadata() or {})
    except safetensors.SafetensorError as exc:
        raise FormatError(f"{path}: not a valid .safetensors file: {exc}") from None


def read_header(path: Path) -> tuple[int, list[Entry]]:
    """(where the data section starts, entries in data order) from the file's JSON header."""
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        if length > MAX_HEADER:
            raise FormatError(f"{path}: a header of {length:,} bytes", 0)
        header = json.loads(file.read(length))
    entries = [_entry(name, fields) for name, fields in header.items() if name != "__metadata__"]
    entries.sort(key=lambda entry: entry.begin)
    return 8 + length, entries


def _entry(name: str, fields: dict[str, Any]) -> Entry:
    begin, end = fields["data_offsets"]
    entry = Entry(name, fields["dtype"], tuple(fields["shape"]), begin, end)
    raw = _NUMPY.get(entry.dtype) or _TORCH.get(entry.dtype, ("",))[0]
    if raw and end - begin != math.prod(entry.shape) * np.dtype(raw).itemsize:
        raise FormatError(f"{name}: {end - begin} bytes for a {entry.dtype} {list(entry.shape)}")
    return entry


def _import_torch(entry: Entry) -> Any:
    try:
        return importlib.import_module("torch")
    except ImportError:
        raise UnsupportedValueError(
            f"a {entry.dtype} tensor has no Torch7 type; converting it needs PyTorch "
            "(pip install torch) and a cast",
            entry.name,
        ) from None
