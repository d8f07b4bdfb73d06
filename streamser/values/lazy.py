"""Tensors that are read when asked for, not when the file is opened.

A tensor of a plain binary file is a view of the file's mapping; a compressed file, a file object
or a URL has no such mapping, so its lazy reader (:class:`~streamser.io.seekable.FrameDecoder`)
gives each storage a :class:`LazyStorage` (where its elements are in the plain stream, and the
byte source to read them from: frames of a zstd file, or ranges of a file or object) and each
tensor a :class:`LazyArray` (its geometry over that storage). Neither holds any tensor data. They
are turned into ordinary numpy arrays by :func:`materialize`, which reads each storage's needed
elements once (a ranged source fetches them together: neighbours in one request, big ones in
parallel pieces), so tensors that shared a storage share memory afterwards too; or row by row by
:meth:`LazyArray.__getitem__`, which reads only the frames or blocks under the rows asked for.
Both pickle as their source (a URL's filesystem and path, never the data) and geometry, so a
lazy tensor can be a source for ``dask.array.from_array``."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import FormatError
from ..io.arrays import byte_view
from ..spec.format import CLASSES
from ..spec.limits import memory_errors_as_limits, out_of_memory
from .lua import LuaFunction, LuaTable, Storage, TorchObject, remember_class, remembered_class
from .tensors import check_extent, tensor_view

Array = np.ndarray[Any, Any]


class LazyStorage:
    """``count`` elements of a storage at byte ``start`` of a lazily read plain stream."""

    __slots__ = ("__weakref__", "count", "dtype", "file_dtype", "source", "start")

    def __init__(
        self, source: Any, start: int, count: int, file_dtype: np.dtype[Any], dtype: np.dtype[Any]
    ) -> None:
        self.source = source  # a ByteSource: a FrameSource, a RangedSource
        self.start = start
        self.count = count
        self.file_dtype = file_dtype  # as stored (b32 Longs: 4 bytes)
        self.dtype = dtype  # as loaded

    @property
    def shape(self) -> tuple[int]:
        return (self.count,)

    @property
    def size(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return self.count * self.file_dtype.itemsize

    def read(self, first: int = 0, end: int | None = None) -> Array:
        """Elements ``first:end`` as a new array (only their frames are decompressed, only
        their bytes fetched: a big read as parallel range requests)."""
        end = self.count if end is None else end
        with memory_errors_as_limits("reading a tensor", self.offset_of(first)):
            array = np.empty(end - first, dtype=self.file_dtype)
            self.source.read_into(self.offset_of(first), byte_view(array))
            return self.loaded(array)

    def offset_of(self, element: int) -> int:
        """Byte position of element ``element`` in the source."""
        return self.start + element * self.file_dtype.itemsize

    def loaded(self, array: Array) -> Array:
        """Elements as read from the file, in the dtype they load as (b32 Longs widen)."""
        return array if self.file_dtype == self.dtype else array.astype(self.dtype)

    def chunks(self, max_bytes: int, first: int = 0, end: int | None = None) -> Iterator[Array]:
        """Elements ``first:end`` as new arrays of at most about ``max_bytes`` each, read in
        order: what a writer streams from a compressed file without holding the storage."""
        end = self.count if end is None else end
        step = max(1, max_bytes // self.file_dtype.itemsize)
        for start in range(first, end, step):
            yield self.read(start, min(end, start + step))

    def view(
        self, sizes: tuple[int, ...], strides: tuple[int, ...], offset: int, at: int
    ) -> LazyArray:
        """A tensor of this storage, checked as :func:`.tensors.tensor_view` checks."""
        check_extent(self.count, sizes, strides, offset, at)
        # numpy refuses a shape whose non-zero sizes multiply past its index type, even when
        # another size is 0 (an empty tensor can still be "too big")
        if math.prod(size for size in sizes if size) * self.dtype.itemsize > sys.maxsize:
            raise FormatError(f"tensor geometry cannot be viewed: {list(sizes)} is too big", at)
        if not sizes:  # Torch's 0-d tensor: no elements, as a size-0 array (as when mapped)
            return LazyArray(self, (0,), (1,), offset)
        return LazyArray(self, sizes, strides, offset)

    def __repr__(self) -> str:
        return f"LazyStorage({self.dtype}, {self.count} elements at byte {self.start})"


class LazyArray:
    """A lazily read tensor: shape, dtype and where its elements are, but no data.

    ``np.asarray(lazy)`` reads it whole; ``lazy[10:20]`` reads only those rows.
    """

    __slots__ = ("__weakref__", "offset", "shape", "storage", "strides")

    def __init__(
        self,
        storage: LazyStorage,
        shape: tuple[int, ...],
        strides: tuple[int, ...],
        offset: int,
    ) -> None:
        self.storage = storage
        self.shape = shape
        self.strides = strides  # in elements, as Torch counts them
        self.offset = offset  # in elements, 0-based

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.storage.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 0

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def span(self) -> tuple[int, int]:
        """(first, end) storage elements this tensor reaches."""
        return check_extent(self.storage.count, self.shape, self.strides, self.offset, 0)

    def view_of(self, piece: Array, first: int) -> Array:
        """This tensor as a view of ``piece``, which holds storage elements from ``first``."""
        if first + piece.shape[0] < self.offset:  # an empty tensor past the piece read
            return np.empty(self.shape or (0,), dtype=self.dtype)
        return tensor_view(piece, self.shape, self.strides, self.offset - first, 0)

    def read(self) -> Array:
        """The tensor as an array; it holds only the storage elements the tensor reaches."""
        first, end = self.span()
        return self.view_of(self.storage.read(first, end), first)

    def is_contiguous(self) -> bool:
        """Whether the elements lie in C order, back to back, in the storage."""
        expected = 1
        for size, stride in zip(reversed(self.shape), reversed(self.strides), strict=True):
            if size != 1 and stride != expected:
                return False
            expected *= size
        return True

    def chunks(self, max_bytes: int) -> Iterator[Array]:
        """The tensor's elements in C order, as new contiguous 1-d arrays of at most about
        ``max_bytes`` each, each read from only the frames under it.

        This is how a tensor of a compressed file is streamed (written, exported) in bounded
        memory: a contiguous tensor is read in slices of its storage, a strided one in blocks of
        rows whose span in the storage fits ``max_bytes`` (row by row, one dimension deeper, if
        one row's span is bigger). The pieces are fresh arrays, which the caller may keep.
        """
        if self.size == 0:
            return
        first, end = self.span()
        if (end - first) * self._itemsize() <= max_bytes:
            yield np.ascontiguousarray(self.read()).reshape(-1)
        elif self.is_contiguous():
            yield from self.storage.chunks(max_bytes, first, end)
        else:
            yield from self._row_chunks(max_bytes)

    def _itemsize(self) -> int:
        """Bytes an element takes while read (b32 Longs widen from 4 bytes to 8)."""
        return max(self.storage.file_dtype.itemsize, self.dtype.itemsize)

    def _row_chunks(self, max_bytes: int) -> Iterator[Array]:
        rows = self.shape[0]
        first, end = self._rows(0, 1).span()
        extent = end - first  # storage elements one row reaches
        budget = max(1, max_bytes // self._itemsize())
        if extent > budget and self.ndim > 1:  # one row is too big: go one dimension deeper
            for row in range(rows):
                offset = self.offset + row * self.strides[0]
                inner = LazyArray(self.storage, self.shape[1:], self.strides[1:], offset)
                yield from inner.chunks(max_bytes)
            return
        stride = self.strides[0]
        step = rows if stride == 0 else max(1, (budget - extent) // stride + 1)
        for start in range(0, rows, step):  # each block spans at most the budget
            block = self._rows(start, min(rows, start + step))
            with memory_errors_as_limits("reading a tensor", block.storage.offset_of(block.offset)):
                chunk = np.ascontiguousarray(block.read()).reshape(-1)
            yield chunk

    def __array__(self, dtype: Any = None, copy: Any = None) -> Array:
        array = self.read()
        return array if dtype is None else array.astype(dtype, copy=False)

    def __getitem__(self, index: Any) -> Array:
        """``lazy[index]`` as a new array, reading only the rows the index selects."""
        with memory_errors_as_limits("reading a tensor", self.storage.offset_of(self.offset)):
            return self._select(index)

    def _select(self, index: Any) -> Array:
        head, rest = (index[0], index[1:]) if isinstance(index, tuple) and index else (index, ())
        # The rows read are a fresh array: the result is copied again only if the index leaves
        # it strided, so that it never keeps more of the storage alive than it shows.
        if not self.shape or not isinstance(head, (int, np.integer, slice)):
            return np.asarray(self.read()[index], order="C")
        rows = range(self.shape[0])[head]
        if isinstance(rows, int):
            return np.asarray(self._rows(rows, rows + 1).read()[(0, *rest)], order="C")
        if len(rows) == 0:  # no row: never as much as an empty array of the whole shape
            return np.array(np.empty((0, *self.shape[1:]), self.dtype)[(slice(None), *rest)])
        low, high = min(rows[0], rows[-1]), max(rows[0], rows[-1])
        local = slice(rows.start - low, None if rows.stop - low < 0 else rows.stop - low, rows.step)
        return np.asarray(self._rows(low, high + 1).read()[(local, *rest)], order="C")

    def _rows(self, start: int, stop: int) -> LazyArray:
        return LazyArray(
            self.storage,
            (stop - start, *self.shape[1:]),
            self.strides,
            self.offset + start * self.strides[0],
        )

    def __repr__(self) -> str:
        return f"LazyArray({self.dtype}, shape={list(self.shape)})"


def materialize(value: Any, *, whole: bool = False) -> Any:
    """``value`` with every lazy tensor and storage read into memory.

    Each storage is read once and its tensors become views of that one array, so sharing
    survives; tables, objects and functions are copied (the lazy originals are left alone),
    keeping identity, sharing and cycles. A storage is read over the span its tensors in
    ``value`` reach, or entirely with ``whole`` (what loading the plain file gives, and what a
    byte-exact rewrite needs).
    """
    spans: dict[int, list[Any]] = {}  # id(LazyStorage) -> [storage, first, end]
    for item in _reachable(value):
        if isinstance(item, LazyArray):
            first, end = item.span()
            storage = item.storage
        elif isinstance(item, Storage) and isinstance(item.array, LazyStorage):
            storage, first, end = item.array, 0, item.array.count
        else:
            continue
        if whole:
            first, end = 0, storage.count
        if end > first:
            span = spans.setdefault(id(storage), [storage, first, end])
            span[1], span[2] = min(span[1], first), max(span[2], end)
    pieces = _read_storages(list(spans.values()))

    def leaf(item: Any) -> Any:
        if isinstance(item, LazyArray):
            first, piece = pieces.get(id(item.storage), (0, None))
            if piece is None:
                return np.empty(item.shape or (0,), dtype=item.dtype)
            return item.view_of(piece, first)
        if isinstance(item, Storage) and isinstance(item.array, LazyStorage):
            found = pieces.get(id(item.array))
            array = found[1] if found is not None else np.empty(0, dtype=item.array.dtype)
            return Storage._make(array, CLASSES[item.typename])
        return _NOT_A_LEAF

    return _copy_graph(value, leaf)


def _read_storages(spans: list[list[Any]]) -> dict[int, tuple[int, Array]]:
    """Each ``[storage, first, end]`` read, by ``id(storage)``: ``(first, elements)``.

    The reads of one source go out together: a file read by range coalesces neighbours into
    one request and runs the requests in parallel (``read_spans``); other sources read one
    storage after another. A CUDA class remembered for a storage carries over to its array.
    Running out of memory is a :class:`~streamser.errors.LimitError` at the storage it struck.
    """
    at: int | None = None
    try:
        arrays: dict[int, tuple[Any, int, Array]] = {}
        for storage, first, end in spans:
            at = storage.offset_of(first)
            arrays[id(storage)] = (storage, first, np.empty(end - first, storage.file_dtype))
        by_source: dict[int, tuple[Any, list[tuple[int, memoryview]]]] = {}
        for storage, first, array in arrays.values():
            request = (storage.offset_of(first), byte_view(array))
            by_source.setdefault(id(storage.source), (storage.source, []))[1].append(request)
        for source, requests in by_source.values():
            read_spans = getattr(source, "read_spans", None)
            if read_spans is not None:  # read together: the first of them stands for all
                at = min(offset for offset, _ in requests)
                read_spans(requests)
                continue
            for offset, view in requests:
                at = offset
                source.read_into(offset, view)
        read: dict[int, tuple[int, Array]] = {}
        for key, (storage, first, array) in arrays.items():
            at = storage.offset_of(first)  # b32 Longs widen into a new array here
            read[key] = (first, _remembering(storage, storage.loaded(array)))
        return read
    except MemoryError:
        raise out_of_memory("reading tensors", at) from None


def _remembering(storage: LazyStorage, array: Array) -> Array:
    """``array`` with the CUDA class remembered for ``storage``, if any."""
    cls = remembered_class(storage)  # type: ignore[arg-type]  # remembered by identity
    if cls is not None:
        remember_class(array, cls)
    return array


_NOT_A_LEAF = object()
_END = object()


def _reachable(value: Any) -> Iterator[Any]:
    """Every value reachable from ``value``, each container once (cycles allowed)."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        yield item
        slots = _slots(item)
        if slots is not None:
            seen.add(id(item))
            stack.extend(slots)


def _slots(item: Any) -> list[Any] | None:
    """The values a container holds, in order (a table's keys and values alternate)."""
    if isinstance(item, LuaTable):
        return [part for pair in item._entries.values() for part in pair]
    if isinstance(item, TorchObject):
        return [item.fields]
    if isinstance(item, LuaFunction):
        return [item.upvalues]
    if isinstance(item, list):  # tds.Vec (values.classes), or a list made in Python
        return list(item)
    if isinstance(item, (LazyArray, Storage)):
        return []
    return None


class _Copy:
    """A container being copied: its new twin, the originals still to copy, a pending key."""

    __slots__ = ("key", "new", "slots")

    def __init__(self, new: Any, slots: list[Any]) -> None:
        self.new = new
        self.slots = iter(slots)
        self.key: Any = _END

    def take(self, copied: Any) -> None:
        new = self.new
        if isinstance(new, LuaTable):
            if self.key is _END:
                self.key = copied
            else:
                new[self.key] = copied
                self.key = _END
        elif isinstance(new, list):
            new.append(copied)
        elif isinstance(new, TorchObject):
            new.fields = copied
        else:
            new.upvalues = copied


def _copy_graph(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """Copy tables, objects and functions, mapping leaves through ``leaf``; iterative."""
    memo: dict[int, Any] = {}

    def begin(item: Any) -> tuple[Any, _Copy | None]:
        found = memo.get(id(item), _END)
        if found is not _END:
            return found, None
        new: Any
        if isinstance(item, (LuaTable, list)):
            new = type(item)()  # a tds.Hash or tds.Vec stays one
        elif isinstance(item, TorchObject):
            new = TorchObject(item.typename, None, item.version)
        elif isinstance(item, LuaFunction):
            new = LuaFunction(item.bytecode, None, tag=item.tag)
        else:
            new = leaf(item)
            if new is _NOT_A_LEAF:
                return item, None
            memo[id(item)] = new
            return new, None
        memo[id(item)] = new
        slots = _slots(item)
        return new, _Copy(new, slots or [])

    root, frame = begin(value)
    stack = [frame] if frame is not None else []
    while stack:
        top = stack[-1]
        child = next(top.slots, _END)
        if child is _END:
            stack.pop()
            if stack:
                stack[-1].take(top.new)
            continue
        copied, frame = begin(child)
        if frame is None:
            top.take(copied)
        else:
            stack.append(frame)
    return root


__all__ = ["LazyArray", "LazyStorage", "materialize"]
