"""What one fuzz input must survive: every reading path of streamser, raising only its errors.

Shared by the atheris target (``fuzz_reader.py``) and the tests (``tests/test_fuzz.py``), so a
crasher found by either replays through exactly the same checks. Nothing here imports atheris.

An input is run through:

* ``deserialize`` with the format detected (the natural reading of a ``.t7`` file);
* ``deserialize`` with a format chosen by the first byte (binary, b32, ascii or detection again),
  over ``bytes``, ``bytearray`` or ``memoryview`` and with or without ``referenced``;
* ``Reader.read_object`` again and again while input is left (several values in one stream);
* ``repr`` and ``serialize`` of whatever was read, and ``deserialize`` of that (a value
  streamser read must be one it can write, and what it writes it must read back);
* given a scratch ``folder``: ``load(path)`` (mapped), ``load(path, mmap=False)``, ``open(path)``
  with ``tensors()``, every tensor's ``get_slice`` and ``load(copy=True)``.

Compressed input is read with ``max_decompressed=MAX_DECOMPRESSED``; together with a cap on
memory in the runner (RLIMIT_AS), a zstd bomb that is expanded before the limit is checked
fails as a ``MemoryError``.

Every array reached is touched (summed), which is where a lazy view of a mapping would fail.
Only :class:`streamser.StreamserError` may escape a step; anything else propagates and is a
crash. Python warnings raised by streamser are errors too, as in the test suite.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

import streamser
from streamser import LuaFunction, LuaTable, Storage, StreamserError, TorchObject
from streamser.io.arrays import root_of

T = TypeVar("T")

SELECTED_FORMATS: tuple[str | None, ...] = ("binary", "b32", "ascii", None)
TOUCH_LIMIT = 1 << 22  # elements summed directly; bigger (overlapping) views touch their storage
MAX_VALUES_PER_STREAM = 8  # values read one after another through a Reader
# zstd input may expand this far; a limit the caller sets must hold before anything is
# allocated (the default, half of the memory the process can use, is exercised by
# structured_fuzz.py, whose children run under an address-space cap).
MAX_DECOMPRESSED = 64 << 20
LIMITS: dict[str, Any] = {"max_decompressed": MAX_DECOMPRESSED}


class RoundTripError(AssertionError):
    """streamser wrote bytes, from a value it had read, that it cannot read back."""


def selected_format(data: bytes) -> str | None:
    """The explicit format the first byte picks (None: detect it)."""
    return SELECTED_FORMATS[data[0] % len(SELECTED_FORMATS)] if data else None


def _buffer_kind(data: bytes) -> bytes | bytearray | memoryview:
    """The input as bytes, bytearray or memoryview, chosen by its length."""
    kind = len(data) % 3
    if kind == 1:
        return bytearray(data)
    if kind == 2:
        return memoryview(data)
    return data


def _referenced(data: bytes) -> bool:
    return not data or data[-1] % 4 != 0


def clean(step: Callable[[], T]) -> T | None:
    """Run ``step``; a StreamserError means the input was refused properly (None)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return step()
    except StreamserError:
        return None


# --- touching every array ----------------------------------------------------------------------


def _root(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    return root_of(array)  # through the wrappers of as_strided views too


def _children(value: Any) -> list[Any]:
    if isinstance(value, LuaTable):
        return [part for pair in value.items() for part in pair]
    if isinstance(value, TorchObject):
        return [value.fields]
    if isinstance(value, LuaFunction):
        return [value.upvalues]
    if isinstance(value, Storage):
        return [value.array]
    if isinstance(value, dict):
        return [part for pair in value.items() for part in pair]
    if isinstance(value, (list, tuple)):
        return list(value)
    return []


def arrays_in(value: Any) -> Iterator[np.ndarray[Any, Any]]:
    """Every distinct ndarray reachable from ``value`` (keys included), without recursion."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, np.ndarray):
            yield item
        else:
            stack.extend(_children(item))


def show(value: Any) -> None:
    """``repr`` must work on anything read (cycles, tables keyed by themselves)."""
    if value is not None:
        repr(value)


def touch(value: Any) -> int:
    """Read every element of every array reachable from ``value``; the number of arrays.

    A view with more elements than ``TOUCH_LIMIT`` can only come from overlapping strides
    (inputs are far smaller), so its whole storage is read instead of every repetition.
    """
    count = 0
    with np.errstate(all="ignore"):
        for array in arrays_in(value):
            target = array if array.size <= TOUCH_LIMIT else _root(array)
            np.asarray(target).sum()
            count += 1
    return count


# --- the checks --------------------------------------------------------------------------------


def _round_trip(value: Any, fmt: str) -> None:
    """A value streamser read must be written (or refused) and read back."""
    written = clean(lambda: streamser.serialize(value, format=fmt))
    if written is None:
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = streamser.deserialize(written, format=fmt)
    except StreamserError as exc:
        raise RoundTripError(f"serialize({fmt}) wrote bytes deserialize refuses: {exc}") from exc
    touch(again)


def _read_stream(data: bytes | bytearray | memoryview, fmt: str | None) -> list[Any]:
    reader = streamser.Reader(data, format=fmt)
    values = []
    for _ in range(MAX_VALUES_PER_STREAM):
        values.append(reader.read_object())
        if reader.at_end():
            break
    return values


def check_bytes(data: bytes) -> None:
    """The in-memory checks: detection, an explicit format, a Reader, a round trip."""
    value = clean(lambda: streamser.deserialize(data, **LIMITS))
    touch(value)
    show(value)
    if value is not None:
        _round_trip(value, "binary")
    fmt = selected_format(data)
    buffer = _buffer_kind(data)
    referenced = _referenced(data)
    explicit = clean(
        lambda: streamser.deserialize(buffer, format=fmt, referenced=referenced, **LIMITS)
    )
    touch(explicit)
    show(explicit)
    if explicit is not None and fmt is not None:
        _round_trip(explicit, fmt)
    touch(clean(lambda: _read_stream(buffer, fmt)))


def check_file(data: bytes, folder: Path) -> None:
    """The file checks: mapped and eager ``load``, and an ``open`` handle, tensors touched."""
    path = folder / "input.t7"
    temp = folder / "input.t7.tmp"
    temp.write_bytes(data)
    os.replace(temp, path)  # never truncate a file that old views might still map
    fmt = selected_format(data)
    touch(clean(lambda: streamser.load(path, **LIMITS)))
    touch(clean(lambda: streamser.load(path, format=fmt, mmap=False, **LIMITS)))
    handle = clean(lambda: streamser.open(path, **LIMITS))
    if handle is None:
        return
    with handle:
        size = getattr(handle, "size", len(data))  # of the plain stream, if compressed
        for info in clean(handle.tensors) or []:
            check_tensor_info(info, size)
        touch(clean(handle.load))
        for path_key in _slice_paths(handle):
            tensor = clean(lambda key=path_key: handle.get_slice(key))
            if tensor is not None and len(tensor):
                touch(clean(lambda t=tensor: t[:1]))
        touch(clean(lambda: handle.load(copy=True)))


class TensorInfoError(AssertionError):
    """``open(path).tensors()`` placed a tensor outside the file it was read from."""


def check_tensor_info(info: streamser.TensorInfo, file_size: int) -> None:
    """File offsets, where given, lie inside the file: the storage, and the tensor in it."""
    if info.storage_offset is None or info.offset is None:
        return
    start, end = info.storage_offset, info.storage_offset + info.storage_nbytes
    if not 0 <= start <= end <= file_size or not start <= info.offset <= end:
        raise TensorInfoError(
            f"{info.path}: storage at bytes [{start}, {end}), tensor at {info.offset}, "
            f"in a file of {file_size} bytes ({info.typename})"
        )


def _slice_paths(handle: streamser.T7File) -> list[tuple[Any, ...]]:
    """Key tuples of the tensors directly under the root (what ``get_slice`` can address)."""
    root = handle.load()
    if isinstance(root, np.ndarray):
        return [()] if root.ndim else []
    container = root.fields if isinstance(root, TorchObject) else root
    if not isinstance(container, LuaTable):
        return []
    return [
        (key,)
        for key, item in container.items()
        if isinstance(key, (str, int)) and isinstance(item, (np.ndarray, Storage))
    ]


def check(data: bytes, folder: Path | None = None) -> None:
    """Every check; the file checks too when ``folder`` (a scratch directory) is given."""
    check_bytes(data)
    if folder is not None and data:
        check_file(data, folder)


def check_in_scratch(data: bytes) -> None:
    """``check`` with the file checks, in a temporary directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="streamser-fuzz-") as folder:
        check(data, Path(folder))
