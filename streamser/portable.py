"""Tensors that travel between processes as "file + path + geometry", never as data.

A :class:`T7Tensor` names one tensor of a ``.t7`` file: the file's path or URL (with the options
it was opened with), the tensor's path in it, and its shape and type. It reads like an array
(``shape``, ``dtype``, ``ndim``, ``__getitem__`` with slices) and pickles in a few hundred
bytes, so Dask workers (:mod:`streamser.dask`) or any other process can receive it and read only
the rows they index: each process opens the file once (a few handles are kept per process) and
reads from its mapping, its compressed frames, or by range from object storage.
:meth:`streamser.T7File.get_slice` gives slices that pickle as one.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import StreamserError

if TYPE_CHECKING:
    from .handle import T7File, TensorSlice

_OPEN_HANDLES = 8  # files a process keeps open for the tensors it reads


class T7Tensor:
    """One tensor of a ``.t7`` file, readable by slices: a source for ``dask.array.from_array``.

    It has ``shape``, ``dtype``, ``ndim`` and ``__getitem__``; it pickles as the file, the
    tensor's path and its geometry (not as data), so that another process reopens the file
    (once: handles are cached) and reads only what it indexes.
    """

    def __init__(
        self,
        source: Any,
        tensor_path: str | tuple[Any, ...],
        shape: tuple[int, ...],
        dtype: np.dtype[Any],
        options: dict[str, Any] | None = None,
    ) -> None:
        self.source = source
        self.tensor_path = tensor_path
        self.shape = tuple(shape)
        self.dtype = np.dtype(dtype)
        self.options = dict(options or {})

    @classmethod
    def open(cls, source: Any, tensor_path: str | tuple[Any, ...], **options: Any) -> T7Tensor:
        """The tensor at ``tensor_path`` of the file ``source`` (parsed now, for its shape)."""
        piece = _slice_of(source, tensor_path, options)
        return cls(source, tensor_path, piece.shape, piece.dtype, options)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, index: Any) -> np.ndarray[Any, Any]:
        """A new array holding ``tensor[index]``; only the rows it selects are read."""
        piece = _slice_of(self.source, self.tensor_path, self.options)
        if piece.shape != self.shape or piece.dtype != self.dtype:
            raise StreamserError(
                f"{self.tensor_path!r} is now {piece.dtype} {list(piece.shape)}, not "
                f"{self.dtype} {list(self.shape)}: the file changed since it was opened"
            )
        return piece[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        array = self[...]
        return array if dtype is None else array.astype(dtype, copy=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (T7Tensor, (self.source, self.tensor_path, self.shape, self.dtype, self.options))

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return (_key(self.source, self.options), self.tensor_path, self.shape, self.dtype.str)

    def __repr__(self) -> str:
        return (
            f"T7Tensor({self.tensor_path!r} of {self.source!r}, {self.dtype}, {list(self.shape)})"
        )


_handles: OrderedDict[Any, tuple[Any, T7File]] = OrderedDict()  # key -> (source, handle)
_handles_lock = threading.Lock()


def _slice_of(
    source: Any, tensor_path: str | tuple[Any, ...], options: dict[str, Any]
) -> TensorSlice:
    """The tensor through this process's open handle of the file (opened on first use)."""
    return _handle(source, options).get_slice(tensor_path)


def _handle(source: Any, options: dict[str, Any]) -> T7File:
    key = _key(source, options)
    with _handles_lock:
        found = _handles.get(key)
        if found is not None:
            _handles.move_to_end(key)
            return found[1]
    from .handle import open as open_t7  # the handle module imports this one

    handle = open_t7(source, **options)
    with _handles_lock:
        handle = _handles.setdefault(key, (source, handle))[1]  # the source kept: ids stay unique
        while len(_handles) > _OPEN_HANDLES:
            _handles.popitem(last=False)
    return handle


def _key(source: Any, options: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies an opened file: its path or URL (a file object: itself) and options."""
    named = os.fspath(source) if isinstance(source, (str, os.PathLike)) else ("object", id(source))
    return (named, repr(sorted(options.items())))


__all__ = ["T7Tensor"]
