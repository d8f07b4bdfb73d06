"""Tensors of a ``.t7`` file as Dask arrays, for work that outgrows one machine.

:func:`from_t7` makes a Dask array of one tensor of a checkpoint, local or remote, plain or
compressed; every task reads only its own chunk. The array's source is a :class:`T7Tensor`: the
tensor's shape and dtype, and how to find it again (the file's path or URL with its options,
and the tensor's path in the file), never its data. A worker process that receives a task opens
the file once (the handle is kept for the next tasks) and reads the rows of its chunk: mapped
from a local file, the frames under them from a compressed one, a ranged GET from object
storage.

Dask is the optional ``remote`` extra (``pip install 'streamser[remote]'``)::

    import streamser.dask
    weight = streamser.dask.from_t7("s3://bucket/model.t7", "model.modules.3.weight",
                                    storage_options={"anon": True})
    weight.std(axis=0).compute()
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import dask.array as da
import numpy as np

from .errors import StreamserError
from .handle import T7File, TensorSlice
from .handle import open as open_t7

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


def from_t7(
    source: Any,
    tensor_path: str | tuple[Any, ...],
    chunks: Any = None,
    *,
    name: str | None = None,
    **options: Any,
) -> da.Array:
    """A Dask array of the tensor at ``tensor_path`` (as for ``f[...]``) of the ``.t7`` file
    ``source``: a path, a URL, or a picklable file object.

    ``chunks`` as for ``dask.array.from_array``; by default whole rows, as many as make chunks
    of Dask's configured size (rows are what a file holds contiguously). ``options`` go to
    :func:`streamser.open` in every process that reads: ``format``, ``storage_options``,
    ``block_size``, ``max_concurrency`` and limits.
    """
    tensor = T7Tensor.open(source, tensor_path, **options)
    if chunks is None:
        chunks = ("auto", *(-1,) * (tensor.ndim - 1)) if tensor.ndim else ()
    meta = np.empty((0,) * tensor.ndim, dtype=tensor.dtype)
    array: da.Array = da.from_array(  # type: ignore[no-untyped-call]
        tensor, chunks=chunks, name=name, asarray=False, fancy=False, meta=meta
    )
    return array


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


__all__ = ["T7Tensor", "from_t7"]
