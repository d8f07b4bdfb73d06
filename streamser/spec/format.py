"""The Torch7 serialization format, as data.

Torch7 (``torch.save`` / ``torch.load`` in Lua, ``File.lua`` + ``THDiskFile.c``) has no written
spec; this module is the closest thing streamser has to one, and every other module takes its
constants from here.

Object stream
-------------
A file is one value (``torch.save``) or several in a row (``torch.File``). Every value is an
``int`` type tag followed by a payload:

====  ==============================  =====================================================
tag   type                            payload
====  ==============================  =====================================================
0     nil                             nothing
1     number                          one double
2     string                          int length, then that many raw bytes
3     table                           int index, int count, then count (key, value) objects
4     torch object                    int index, version string, class-name string, payload
5     boolean                         int 0 or 1
6     function (legacy)               int length + bytecode, then an upvalue object
7     function (legacy, recursive)    like 8
8     function                        int index, int length + bytecode, then an upvalue object
====  ==============================  =====================================================

* Indices count from 1 and grow by one for every table, torch object and function written in
  full (type 6 takes none). With ``referenced`` (the default) an object met again is written as
  its tag and earlier index only; readers register a table before its entries and a torch object
  before its payload, so cycles load.
* The version string is ``"V <n>"``. When the first string does not match ``^V (.*)$`` it *is*
  the class name and the version is 0 (files older than versioning).
* A tensor's payload is: int nDimension; long size[nDim]; long stride[nDim]; long
  storageOffset + 1; then its storage as an object (tag 4) or nil. A storage's payload is: long
  size; then size elements. A torch class without a payload of its own (nn modules, custom
  classes) writes one table object holding its fields.

Encodings
---------
``binary``: little endian; ``int`` is 4 bytes; ``long`` is the C long of the writer, 8 bytes on
64-bit Linux and macOS (formats ``binary`` / ``b64``) and 4 on Windows and 32-bit systems
(``b32``). No header, no magic number.

``ascii``: each write of n numbers prints them separated by one space and ends with one newline
(nothing for n = 0); int ``%d``, long ``%ld``, float and half ``%.9g``, double ``%.17g``. Byte and
char arrays (strings, class names, Byte/Char storages) are raw bytes followed by a newline.
Readers skip white space before a number and take one newline, if present, after each array.

>>> ELEMENTS["Float"].dtype.str, ELEMENTS["Float"].ascii_format
('<f4', '%.9g')
>>> CLASSES["torch.CudaLongTensor"].element.name, CLASSES["torch.CudaLongTensor"].is_tensor
('Long', True)
>>> FORMATS["b32"].long_size
4
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ..errors import UnsupportedValueError

# Type tags of the object stream.
TAG_NIL: Final = 0
TAG_NUMBER: Final = 1
TAG_STRING: Final = 2
TAG_TABLE: Final = 3
TAG_TORCH: Final = 4
TAG_BOOLEAN: Final = 5
TAG_FUNCTION_LEGACY: Final = 6
TAG_FUNCTION_LEGACY_RECURSIVE: Final = 7
TAG_FUNCTION: Final = 8
FUNCTION_TAGS: Final = frozenset({TAG_FUNCTION_LEGACY, TAG_FUNCTION_LEGACY_RECURSIVE, TAG_FUNCTION})
TAG_NAMES: Final = {
    TAG_NIL: "nil",
    TAG_NUMBER: "number",
    TAG_STRING: "string",
    TAG_TABLE: "table",
    TAG_TORCH: "torch object",
    TAG_BOOLEAN: "boolean",
    TAG_FUNCTION_LEGACY: "function (legacy)",
    TAG_FUNCTION_LEGACY_RECURSIVE: "function (legacy recursive)",
    TAG_FUNCTION: "function",
}

VERSION_PREFIX: Final = b"V "
CURRENT_VERSION: Final = 1

# Doubles hold every integer up to 2**53 exactly; beyond it Lua numbers are only approximate.
MAX_EXACT_INT: Final = 2**53
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1


@dataclass(frozen=True)
class ElementType:
    """One Torch element type: how it is laid out in binary files and printed in ascii ones.

    ``dtype`` is the little-endian numpy type of the binary layout; for ``Long`` it is the
    64-bit layout, and a 4-byte-long file (b32) holds int32 elements that widen to int64.
    """

    name: str
    dtype: np.dtype[np.generic]
    ascii_format: str  # printf conversion Torch7 uses in ascii mode ("" = raw bytes)

    @property
    def is_raw(self) -> bool:
        """Byte and Char arrays are raw bytes in ascii files, not numbers."""
        return self.ascii_format == ""

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def is_long(self) -> bool:
        return self.name == "Long"

    def file_dtype(self, long_size: int) -> np.dtype[np.generic]:
        """The numpy type of this element in a binary file with ``long_size``-byte longs."""
        if self.is_long and long_size == 4:
            return np.dtype("<i4")
        return self.dtype


def _element(name: str, dtype: str, ascii_format: str) -> ElementType:
    return ElementType(name, np.dtype(dtype), ascii_format)


ELEMENTS: Final[dict[str, ElementType]] = {
    e.name: e
    for e in (
        _element("Byte", "u1", ""),
        _element("Char", "i1", ""),
        _element("Short", "<i2", "%hd"),
        _element("Int", "<i4", "%d"),
        _element("Long", "<i8", "%ld"),
        _element("Float", "<f4", "%.9g"),
        _element("Double", "<f8", "%.17g"),
        _element("Half", "<f2", "%.9g"),
    )
}

# numpy dtype (kind, itemsize) -> element type, for Python values being written.
ELEMENT_BY_DTYPE: Final[dict[tuple[str, int], ElementType]] = {
    (e.dtype.kind, e.dtype.itemsize): e for e in ELEMENTS.values()
}


@dataclass(frozen=True)
class TorchClass:
    """A tensor or storage class name and what its elements are."""

    typename: str
    element: ElementType
    is_tensor: bool
    is_cuda: bool

    @property
    def storage_typename(self) -> str:
        """The class of this tensor's storage (or the storage class itself)."""
        if not self.is_tensor:
            return self.typename
        return self.typename[: -len("Tensor")] + "Storage"

    @property
    def tensor_typename(self) -> str:
        if self.is_tensor:
            return self.typename
        return self.typename[: -len("Storage")] + "Tensor"


def _classes() -> dict[str, TorchClass]:
    table: dict[str, TorchClass] = {}
    for element in ELEMENTS.values():
        cpu = f"torch.{element.name}"
        # Torch's CUDA float type has no element name: torch.CudaTensor / torch.CudaStorage.
        cuda = "torch.Cuda" if element.name == "Float" else f"torch.Cuda{element.name}"
        for prefix, is_cuda in ((cpu, False), (cuda, True)):
            for suffix, is_tensor in (("Tensor", True), ("Storage", False)):
                name = prefix + suffix
                table[name] = TorchClass(name, element, is_tensor, is_cuda)
    return table


CLASSES: Final[dict[str, TorchClass]] = _classes()

# The CPU class Torch7 uses for each element type.
CPU_TENSOR: Final[dict[str, TorchClass]] = {
    c.element.name: c for c in CLASSES.values() if c.is_tensor and not c.is_cuda
}
CPU_STORAGE: Final[dict[str, TorchClass]] = {
    c.element.name: c for c in CLASSES.values() if not c.is_tensor and not c.is_cuda
}


@dataclass(frozen=True)
class Format:
    """A way of encoding the object stream: ascii, or binary with a given ``long`` size."""

    name: str
    ascii: bool
    long_size: int  # bytes of a C long in binary files; unused for ascii


FORMATS: Final[dict[str, Format]] = {
    "binary": Format("binary", ascii=False, long_size=8),
    "b64": Format("b64", ascii=False, long_size=8),
    "b32": Format("b32", ascii=False, long_size=4),
    "ascii": Format("ascii", ascii=True, long_size=8),
}


def get_format(name: str) -> Format:
    """Look up a format name, with an error that lists the choices."""
    try:
        return FORMATS[name]
    except (KeyError, TypeError):
        choices = ", ".join(repr(n) for n in FORMATS)
        raise ValueError(f"unknown format {name!r}: expected one of {choices}") from None


def element_of(dtype: np.dtype[Any], path: str = "") -> ElementType:
    element = ELEMENT_BY_DTYPE.get((dtype.kind, dtype.itemsize))
    if element is None or dtype.kind not in "uif":
        raise UnsupportedValueError(
            f"numpy dtype {dtype} has no Torch7 tensor type (use uint8, int8, int16, int32, "
            "int64, float16, float32 or float64)",
            path,
        )
    return element


def default_class(dtype: np.dtype[Any], *, tensor: bool, path: str = "") -> TorchClass:
    element = element_of(dtype, path)
    return (CPU_TENSOR if tensor else CPU_STORAGE)[element.name]
