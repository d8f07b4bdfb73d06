"""``streamser.open``: a file opened for partial access, as safetensors' ``safe_open`` is.

Opening parses the object graph only. Binary files are mapped, and every tensor is a
copy-on-write view of the mapping, so an 8 GiB checkpoint opens in the time it takes to read its
records and nothing of its tensor data is read until touched. Ascii files cannot be mapped and
are parsed eagerly; the handle works the same. Closing the handle drops its references; views
that are still alive keep the mapping alive, so closing never invalidates them.

The tensor index is recorded by the same pass that reads the records (:mod:`.graph.index`);
paths are built when :meth:`T7File.tensors` asks for them, in the one syntax of
:mod:`.graph.paths`, which every lookup here accepts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np

from .api import deserialize, serialize_pieces
from .errors import StreamserError
from .graph import paths
from .graph.index import IndexRecorder, Paths, TensorInfo, tensor_infos
from .graph.opening import open_reading
from .io.arrays import address_of
from .io.inputs import name_of
from .io.ranged import RangeOptions
from .portable import T7Tensor
from .spec.format import Format
from .spec.limits import Limits
from .values.lazy import LazyArray, LazyStorage, materialize
from .values.lua import Storage
from .values.tensors import private_copy

_MISSING = paths.MISSING


class TensorSlice:
    """One tensor of an open file; indexing it reads only the elements asked for.

    It reads like an array (``shape``, ``dtype``, ``ndim``, slices), so it can be the source
    of ``dask.array.from_array``; it pickles as a :class:`~streamser.portable.T7Tensor` (the
    file, the tensor's path and its geometry, not its data) when the file can be opened again
    by its path or URL, and as its values otherwise.
    """

    def __init__(
        self, array: np.ndarray[Any, Any] | LazyArray, origin: Origin | None = None
    ) -> None:
        self._array = array
        self._origin = origin

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._array.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        dtype: np.dtype[Any] = self._array.dtype
        return dtype

    @property
    def ndim(self) -> int:
        return len(self._array.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self._array.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return int(self._array.shape[0]) if self._array.ndim else 0

    def __getitem__(self, index: Any) -> np.ndarray[Any, Any]:
        """A new array holding ``tensor[index]``; only those bytes of the file are read
        (of a compressed file, only the frames under them are decompressed)."""
        if isinstance(self._array, LazyArray):
            return self._array[index]
        return private_copy(self._array[index])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        if isinstance(self._array, LazyArray):  # read once; the result is already new
            return self._array.__array__(dtype)
        values = private_copy(self._array)  # a broadcast stays one, not 2**40 copies
        return values if dtype is None or values.dtype == dtype else values.astype(dtype)

    def __reduce__(self) -> tuple[Any, ...]:
        if self._origin is None:  # a file object: the values themselves
            return (TensorSlice, (np.asarray(self),))
        source, tensor_path, options = self._origin
        return (T7Tensor, (source, tensor_path, self.shape, self.dtype, options))


# How to find a tensor again in another process: the file's path or URL, the tensor's path, and
# the options the file was opened with.
Origin = tuple[Any, "str | tuple[Any, ...]", dict[str, Any]]


class T7File:
    """A ``.t7`` file opened for lazy, partial access. Use :func:`streamser.open`."""

    def __init__(
        self,
        path: str | os.PathLike[str] | BinaryIO,
        format: str | None = None,
        referenced: bool = True,
        *,
        storage_options: dict[str, Any] | None = None,
        block_size: int | None = None,
        max_concurrency: int | None = None,
        **limits: int,
    ) -> None:
        self.path = name_of(path)
        options: dict[str, Any] = {
            "format": format,
            "referenced": referenced,
            "storage_options": storage_options,
            "block_size": block_size,
            "max_concurrency": max_concurrency,
            **limits,
        }
        # How another process opens this file again (a file object cannot be).
        self._reopen: tuple[Any, dict[str, Any]] | None = None
        if isinstance(path, (str, os.PathLike)):
            self._reopen = (path, {k: v for k, v in options.items() if v is not None})
        opened = open_reading(
            path,
            format,
            referenced=referenced,
            limits=Limits.from_keywords(**limits),
            storage_options=storage_options,
            options=RangeOptions.of(block_size, max_concurrency),
        )
        reading, self._source, self.size = opened.reading, opened.source, opened.size
        assert reading.index is not None  # asked for
        self._index: IndexRecorder = reading.index
        self.root: Any = reading.value
        self.format: Format = reading.format
        self.compressed = opened.compressed  # offsets are then in the plain stream
        self.end = reading.end  # where the value ends; a file may hold more after it
        plain = self._source is None and not self.format.ascii
        self._base = _address_of_buffer(reading.buffer) if plain else None
        self._closed = False

    @property
    def lazy(self) -> bool:
        """True when tensors are read from the file when asked for, as new arrays, not views
        of a mapping: a seekable zstd file (frame by frame), a URL or an unmappable file
        object (by range). False for those when they were read whole: ascii, zstd without a
        seek table, and records with small tensors of at most 64 MiB (tensors are then views
        of that one buffer, which they keep alive; copy the ones you keep)."""
        return self._source is not None

    # --- access ---------------------------------------------------------------------------

    def __getitem__(self, path: str | tuple[Any, ...]) -> Any:
        """The value at a path as :meth:`tensors` prints it (``"model.modules[3].weight"``,
        see :mod:`streamser.graph.paths`; the dotted ``"model.modules.3.weight"`` works too) or
        at a tuple of keys. In a lazily read compressed file its tensors are read now."""
        return self._lookup(path)

    def get(self, *keys: Any, default: Any = None) -> Any:
        """The value reached by following ``keys`` from the root; ``default`` if there is none.

        A string key that is not found is also tried as a number, so ``"3"`` reaches the
        third entry of a Lua list. In a lazily read compressed file the tensors of the result
        are read now (only those: see :attr:`lazy`).
        """
        return self._resolved(paths.loose(keys), default)

    def _resolved(self, parts: tuple[Any, ...], default: Any, *, read: bool = True) -> Any:
        value = self._root()
        for depth, part in enumerate(parts):
            value = paths.child(value, part)
            if value is _MISSING:
                if default is _MISSING:
                    where = paths.format_path(parts[: depth + 1])
                    raise paths.PathError(f"{where!r} is not in {self.path}")
                return default
        return materialize(value) if read and self._source is not None else value

    def _lookup(self, path: str | tuple[Any, ...], *, read: bool = True) -> Any:
        parts = paths.parse_path(path) if isinstance(path, str) else paths.loose(path)
        return self._resolved(parts, _MISSING, read=read)

    def subtree(self, path: str | tuple[Any, ...]) -> Any:
        """The value at ``path`` as the handle holds it: the tensors of a lazily read
        compressed file stay unread (``f[path]`` reads them)."""
        return self._lookup(path, read=False)

    def keys(self) -> list[Any]:
        """The keys of the root table (or the fields of a root object), in the file's order."""
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
        origin = None if self._reopen is None else (self._reopen[0], path, self._reopen[1])
        return TensorSlice(value, origin)

    def arrays(self, *, read: bool = True) -> Iterator[tuple[str, Any]]:
        """Every distinct tensor and standalone storage with its path (as :meth:`tensors`
        prints it), as an array. The tensors of a lazily read file (compressed, or read by
        range) are read one at a time, as the iteration reaches them; with ``read=False`` they
        come as :class:`~streamser.values.lazy.LazyArray` instead, whose ``chunks`` read them a
        bounded piece at a time (what a writer streams without holding a whole tensor)."""
        self._root()
        names = Paths(self._index.columns)
        for node, place, item, _storage in self._index.entries():
            path = names.join(node, place, item) or paths.ROOT
            array = item.array if isinstance(item, Storage) else item
            if isinstance(array, LazyStorage):
                array = LazyArray(array, array.shape, (1,), 0)
            yield path, array.read() if read and isinstance(array, LazyArray) else array

    def tensors(self) -> list[TensorInfo]:
        """Every tensor and standalone storage, with its path, type, shape, strides and file
        offsets, in the file's order, each at the first path that reaches it."""
        self._root()
        return tensor_infos(self._index, self._base, self.size)

    # --- lifetime -------------------------------------------------------------------------

    def _root(self) -> Any:
        if self._closed:
            raise StreamserError(f"{self.path} is closed")
        return self.root

    def close(self) -> None:
        """Drop the handle's references; views already taken stay valid."""
        self._closed = True
        self.root = None
        self._index = IndexRecorder()

    def __enter__(self) -> T7File:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.format.name
        return f"<streamser.T7File {self.path!r} ({state})>"


def open(
    path: str | os.PathLike[str] | BinaryIO,
    format: str | None = None,
    referenced: bool = True,
    *,
    storage_options: dict[str, Any] | None = None,
    block_size: int | None = None,
    max_concurrency: int | None = None,
    **limits: int,
) -> T7File:
    """Open a ``.t7`` file for lazy, partial access (:class:`T7File`); limits as in ``load``.

    ``path`` may also be a URL (``s3://``, ``gs://``, ``https://``... through fsspec, with
    ``storage_options``) or a binary file object: both are read by range, ``block_size`` bytes
    (4 MiB) at a time, at most ``max_concurrency`` (8) requests at once.
    """
    return T7File(
        path,
        format,
        referenced,
        storage_options=storage_options,
        block_size=block_size,
        max_concurrency=max_concurrency,
        **limits,
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
