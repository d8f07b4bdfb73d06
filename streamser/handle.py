"""``streamser.open``: a file opened for partial access, as safetensors' ``safe_open`` is.

Opening parses the object graph only. Binary files are mapped, and every tensor is a
copy-on-write view of the mapping, so an 8 GiB checkpoint opens in the time it takes to read its
records and nothing of its tensor data is read until touched. Ascii files cannot be mapped and
are parsed eagerly; the handle works the same. Closing the handle drops its references; views
that are still alive keep the mapping alive, so closing never invalidates them.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from .api import deserialize, serialize_pieces
from .errors import StreamserError
from .graph.loading import read_buffer, read_lazily
from .graph.walk import walk
from .io.arrays import address_of, root_of
from .io.compression import is_zstd
from .io.mapping import buffer_of
from .spec.format import Format, element_of
from .spec.limits import Limits
from .values.lazy import LazyArray, LazyStorage, materialize
from .values.lua import LuaTable, Storage, TorchObject
from .values.tensors import class_for_array

if TYPE_CHECKING:  # imported on first use, with zstandard
    from .io.seekable import FrameSource

_MISSING = object()


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor (or storage) of a file lives, without reading its data.

    ``offset`` is the byte position in the file of the tensor's first element and
    ``storage_offset`` that of its storage's first element (None for ascii files and for
    empty tensors); tensors with the same ``storage_offset`` share one storage.
    """

    path: str
    typename: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    nbytes: int
    offset: int | None
    storage_offset: int | None
    storage_nbytes: int


class TensorSlice:
    """One tensor of an open file; indexing it reads only the elements asked for."""

    def __init__(self, array: np.ndarray[Any, Any] | LazyArray) -> None:
        self._array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = self._array.dtype
        return dtype

    def __len__(self) -> int:
        return int(self._array.shape[0]) if self._array.ndim else 0

    def __getitem__(self, index: Any) -> np.ndarray[Any, Any]:
        """A new array holding ``tensor[index]``; only those bytes of the file are read
        (of a compressed file, only the frames under them are decompressed)."""
        if isinstance(self._array, LazyArray):
            return self._array[index]
        return np.array(self._array[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        if isinstance(self._array, LazyArray):  # read once; the result is already new
            return self._array.__array__(dtype)
        return np.array(self._array, dtype=dtype)


class T7File:
    """A ``.t7`` file opened for lazy, partial access. Use :func:`streamser.open`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        format: str | None = None,
        referenced: bool = True,
        **limits: int,
    ) -> None:
        self.path = os.fspath(path)
        with builtins.open(self.path, "rb") as fileobj:
            buffer, start, _ = buffer_of(fileobj, mmap=True)
        bounds = Limits.from_keywords(**limits)
        lazy = None
        if is_zstd(buffer, start):
            lazy = read_lazily(buffer, start, format, referenced=referenced, limits=bounds)
        self._source: FrameSource | None = None
        if lazy is not None:
            reading, self._source = lazy
            self.size = self._source.size
        else:
            reading = read_buffer(buffer, start, format, referenced=referenced, limits=bounds)
            self.size = len(reading.buffer)
        self.root: Any = reading.value
        self.format: Format = reading.format
        self.compressed = reading.buffer is not buffer  # offsets are then in the plain stream
        self.end = reading.end  # where the value ends; a file may hold more after it
        plain = lazy is None and not self.format.ascii
        self._base = _address_of_buffer(reading.buffer) if plain else None
        self._closed = False

    @property
    def lazy(self) -> bool:
        """True for a compressed file read frame by frame (seekable zstd): its tensors are
        read from the file when asked for, as new arrays, not views of a mapping."""
        return self._source is not None

    # --- access ---------------------------------------------------------------------------

    def __getitem__(self, path: str | tuple[Any, ...]) -> Any:
        """The value at a dotted path (``"model.modules.3.weight"``) or a tuple of keys."""
        return self._lookup(path)

    def get(self, *keys: Any, default: Any = None) -> Any:
        """The value reached by following ``keys`` from the root; ``default`` if there is none.

        A string key that is not found is also tried as a number, so ``"3"`` reaches the
        third entry of a Lua list. In a lazily read compressed file the tensors of the result
        are read now (only those: see :attr:`lazy`).
        """
        value = self._find(keys, default)
        return materialize(value) if self._source is not None else value

    def _find(self, keys: tuple[Any, ...], default: Any) -> Any:
        value = self._root()
        for depth, key in enumerate(keys):
            value = _child(value, key)
            if value is _MISSING:
                if default is _MISSING:
                    where = ".".join(str(k) for k in keys[: depth + 1])
                    raise KeyError(f"{where!r} is not in {self.path}")
                return default
        return value

    def _lookup(self, path: str | tuple[Any, ...], *, read: bool = True) -> Any:
        keys = _split(path) if isinstance(path, str) else tuple(path)
        if read:
            return self.get(*keys, default=_MISSING)
        return self._find(keys, _MISSING)

    def keys(self) -> list[Any]:
        root = self._root()
        return list(root) if isinstance(root, Mapping) else []

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, (str, tuple)):
            return False
        try:
            self._lookup(path, read=False)
        except KeyError:
            return False
        return True

    def load(self, path: str | tuple[Any, ...] = (), *, copy: bool = False) -> Any:
        """The subtree at ``path`` (the whole value by default).

        Tensors stay views of the mapping unless ``copy`` is set; then the subtree's tensors
        (and only those) are read into memory, and the result no longer depends on the file.
        A lazily read compressed file always reads them (``copy`` changes nothing): the
        whole file's storages in full, a subtree's over the elements its tensors reach.
        """
        if self._source is not None:
            return self[path] if path else materialize(self._root(), whole=True)
        value = self[path] if path else self._root()
        return _copied(value) if copy else value

    def get_slice(self, path: str | tuple[Any, ...]) -> TensorSlice:
        """A tensor whose rows can be read selectively: ``f.get_slice(p)[10:20]``."""
        value = self._lookup(path, read=False)
        if isinstance(value, Storage):
            value = value.array
        if isinstance(value, LazyStorage):
            value = LazyArray(value, value.shape, (1,), 0)
        if not isinstance(value, (np.ndarray, LazyArray)):
            raise TypeError(f"{path!r} is a {type(value).__name__}, not a tensor")
        return TensorSlice(value)

    def arrays(self) -> Iterator[tuple[str, np.ndarray[Any, Any]]]:
        """Every distinct tensor with its path, as an array; the tensors of a lazily read
        compressed file are read one at a time, as the iteration reaches them."""
        for path, item, _depth, again in walk(self._root()):
            if again:
                continue
            if isinstance(item, np.ndarray):
                yield path, item
            elif isinstance(item, LazyArray):
                yield path, item.read()

    def tensors(self) -> list[TensorInfo]:
        """Every tensor and standalone storage, with its path, type, shape and file offsets."""
        return [self._info(path, item) for path, item in _arrays(self._root())]

    def _info(self, path: str, item: Any) -> TensorInfo:
        if isinstance(item, LazyArray) or isinstance(getattr(item, "array", None), LazyStorage):
            return _lazy_info(path, item)
        storage_typename = item.typename if isinstance(item, Storage) else None
        array: np.ndarray[Any, Any] = item.array if isinstance(item, Storage) else item
        root = root_of(array)
        element = element_of(array.dtype)
        cls = class_for_array(root, element, tensor=storage_typename is None)
        offset = self._file_offset(array) if array.size else None
        storage_offset = self._file_offset(root) if offset is not None else None
        return TensorInfo(
            path=path,
            typename=storage_typename or cls.typename,
            shape=tuple(array.shape),
            dtype=array.dtype,
            nbytes=int(array.nbytes),
            offset=offset,
            storage_offset=storage_offset,
            storage_nbytes=int(root.nbytes),
        )

    def _file_offset(self, array: np.ndarray[Any, Any]) -> int | None:
        """Where ``array``'s data sits in the file; None unless it is a view of the file's
        bytes (ascii data is parsed, b32 Longs are widened copies)."""
        if self._base is None:
            return None
        offset = address_of(array) - self._base
        return offset if 0 <= offset < self.size else None

    # --- lifetime -------------------------------------------------------------------------

    def _root(self) -> Any:
        if self._closed:
            raise StreamserError(f"{self.path} is closed")
        return self.root

    def close(self) -> None:
        """Drop the handle's references; views already taken stay valid."""
        self._closed = True
        self.root = None

    def __enter__(self) -> T7File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.format.name
        return f"<streamser.T7File {self.path!r} ({state})>"


def open(
    path: str | os.PathLike[str],
    format: str | None = None,
    referenced: bool = True,
    **limits: int,
) -> T7File:
    """Open a ``.t7`` file for lazy, partial access (:class:`T7File`); limits as in ``load``."""
    return T7File(path, format, referenced, **limits)


def _split(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split(".") if part) if path else ()


def _child(value: Any, key: Any) -> Any:
    container = value.fields if isinstance(value, TorchObject) else value
    if isinstance(container, (LuaTable, Mapping)):
        if key in container:
            return container[key]
        if isinstance(key, str):
            number = _as_number(key)
            if number is not None and number in container:
                return container[number]
        return _MISSING
    if isinstance(container, (list, tuple)) and isinstance(key, (int, str)):
        index = _as_number(key) if isinstance(key, str) else key
        if isinstance(index, int) and 1 <= index <= len(container):
            return container[index - 1]  # Lua lists count from 1
    return _MISSING


def _as_number(text: str) -> int | float | None:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def _arrays(value: Any) -> Iterator[tuple[str, Any]]:
    for path, item, _depth, again in walk(value):
        if not again and isinstance(item, (np.ndarray, Storage, LazyArray)):
            yield path or "<root>", item


def _lazy_info(path: str, item: LazyArray | Storage) -> TensorInfo:
    """Index entry of a tensor of a lazily read compressed file (offsets in the plain stream)."""
    storage: LazyStorage
    shape: tuple[int, ...]
    if isinstance(item, Storage):
        storage = item.array  # type: ignore[assignment]  # a lazy storage, as tested above
        typename, shape, offset = item.typename, storage.shape, 0
    else:
        storage = item.storage
        cls = class_for_array(storage, element_of(storage.dtype), tensor=True)  # type: ignore[arg-type]
        typename, shape, offset = cls.typename, item.shape, item.offset
    nbytes = int(np.prod(shape, dtype=np.int64)) * storage.dtype.itemsize if shape else 0
    placed = nbytes and storage.file_dtype == storage.dtype  # b32 Longs are widened on reading
    return TensorInfo(
        path=path,
        typename=typename,
        shape=tuple(shape),
        dtype=storage.dtype,
        nbytes=nbytes,
        offset=storage.start + offset * storage.dtype.itemsize if placed else None,
        storage_offset=storage.start if placed else None,
        storage_nbytes=storage.count * storage.dtype.itemsize,
    )


def _copied(value: Any) -> Any:
    """``value`` with every tensor read into memory; sharing between tensors is kept."""
    # One copy of the subtree's storages into a writable buffer; the reader's views of it keep
    # every sharing between tensors, and a stride-0 expansion stays as small as its storage.
    return deserialize(bytearray().join(serialize_pieces(value)), format="binary")


def _address_of_buffer(buffer: Any) -> int | None:
    try:
        return address_of(np.frombuffer(buffer, dtype=np.uint8, count=1))
    except (TypeError, ValueError):
        return None


__all__ = ["T7File", "TensorInfo", "TensorSlice", "open"]
