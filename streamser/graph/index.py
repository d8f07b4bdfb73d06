"""The tensor index of an opened file, recorded by the graph reader in its one pass.

While the reader (Python or compiled) builds the value, it notes two things, cheaply: every
container it reads in full (a *node*: its parent node, where it sits in that parent, the
container itself) and every tensor or storage it meets for the first time as a value (an
*entry*: its node, where it sits, the value, and the object index of its storage in the file).
Paths are built from these only when :func:`tensor_infos` is asked for them, each container's
path once, in the syntax of :mod:`.paths`; shapes, classes and file offsets come from the values
themselves.

Where a child sits is the key under which its table holds it, or one of the markers below
(a container's first path wins: a value met again is not noted again).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

import numpy as np

from .. import speedups
from ..io.arrays import Array, address_of, root_of
from ..spec.format import element_of
from ..values.lazy import LazyArray, LazyStorage
from ..values.lua import LuaFunction, LuaTable, Storage, TorchObject, gc_paused
from ..values.tensors import class_for_array
from .paths import UPVALUES, Entry, KeyOf, Part, format_part


class Place:
    """Where a child sits when it is not the value of a plain key."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


ROOT: Final = Place("root")  # the value itself
AS_KEY: Final = Place("key")  # a table's key (a tensor or table used as one)
FIELDS: Final = Place("fields")  # a torch object's field table: transparent in paths
IN_UPVALUES: Final = Place("upvalues")  # a function's upvalues
IN_PAYLOAD: Final = Place("payload")  # one of the objects of a registered class's payload

_PLAIN_KEYS: Final = frozenset({str, bytes, int, float, bool})


class IndexColumns(NamedTuple):
    """An index as parallel columns: nodes (containers) and entries (tensors, storages)."""

    parents: array[int]  # node -> its parent node (-1: the value itself)
    places: list[Any]  # node -> where it sits in its parent
    containers: list[Any]  # node -> the container
    owners: array[int]  # entry -> the node it sits in (-1: it is the value itself)
    spots: list[Any]  # entry -> where it sits in that node
    values: list[Any]  # entry -> the tensor or storage
    storage_of: array[int]  # entry -> the file's object index of its storage (-1: none)


class IndexRecorder:
    """What the reader notes while it reads (see the module docstring): columns, so that a note
    costs a few appends and no new objects."""

    __slots__ = ("columns", "storages")

    def __init__(self) -> None:
        self.columns = IndexColumns(array("q"), [], [], array("q"), [], [], array("q"))
        self.storages: set[int] = set()  # id() of storages noted (a storage may come back)

    def node(self, parent: int, place: Any, container: Any) -> int:
        columns = self.columns
        columns.parents.append(parent)
        columns.places.append(place)
        columns.containers.append(container)
        return len(columns.places) - 1

    def entry(self, node: int, place: Any, value: Any, storage: int | None) -> None:
        if type(value) is Storage:
            if id(value) in self.storages:
                return
            self.storages.add(id(value))
        columns = self.columns
        columns.owners.append(node)
        columns.spots.append(place)
        columns.values.append(value)
        columns.storage_of.append(-1 if storage is None else storage)

    def marks(self) -> tuple[int, int]:
        """How many nodes and entries there are (see :meth:`truncate`)."""
        return len(self.columns.places), len(self.columns.values)

    def truncate(self, marks: tuple[int, int]) -> None:
        """Forget the notes made after :meth:`marks` gave ``marks``."""
        nodes, entries = marks
        columns = self.columns
        for value in columns.values[entries:]:
            self.storages.discard(id(value))
        for column in (columns.parents, columns.places, columns.containers):
            del column[nodes:]
        for column in (columns.owners, columns.spots, columns.values, columns.storage_of):
            del column[entries:]

    def rebuild(self, root: Any) -> None:
        """Note again, from the value ``root`` itself, what its graph holds, and where.

        A table that repeats a key keeps the last value, as Lua does when it reads it, so an
        earlier value under that key (a tensor, a table of tensors) is no longer where its note
        says, and the same object reached again later, by a back-reference, was never noted
        there. Torch never writes such a table; a damaged or crafted file can. The reader calls
        this only when a table came out with fewer entries than it announced; the walk follows
        the value in its tables' order, noting each container and tensor at its first place,
        as the reader does, and keeps the storage indices the reader noted.
        """
        storage_of = {
            id(value): storage
            for value, storage in zip(self.columns.values, self.columns.storage_of, strict=True)
        }
        self.columns = IndexColumns(array("q"), [], [], array("q"), [], [], array("q"))
        self.storages = set()
        seen: set[int] = set()
        pending: list[tuple[int, Any, Any]] = [(-1, ROOT, root)]
        while pending:
            node, place, value = pending.pop()
            if id(value) in seen or not _may_hold(value):
                continue
            seen.add(id(value))
            if _is_entry(value):
                self.entry(node, place, value, storage_of.get(id(value), -1))
                continue
            inner = self.node(node, place, value)
            pending.extend(reversed(_children(value, inner)))

    def extend(self, parents: bytes, owners: bytes, storage_of: bytes) -> None:
        """The integer columns of notes the compiled reader made (its lists it fills itself)."""
        self.columns.parents.frombytes(parents)
        self.columns.owners.frombytes(owners)
        self.columns.storage_of.frombytes(storage_of)

    def entries(self) -> Iterator[tuple[int, Any, Any, int | None]]:
        """(node, place, value, storage index or None) per entry."""
        columns = self.columns
        for node, place, value, storage in zip(
            columns.owners, columns.spots, columns.values, columns.storage_of, strict=True
        ):
            yield node, place, value, None if storage < 0 else storage


def _is_entry(value: Any) -> bool:
    return isinstance(value, (np.ndarray, LazyArray, Storage))


def _may_hold(value: Any) -> bool:
    """Whether ``value`` is a tensor or a container (strings and numbers are neither)."""
    return not isinstance(value, (str, bytes, int, float, bool, type(None), np.generic))


def _children(value: Any, node: int) -> list[tuple[int, Any, Any]]:
    """(node, place, child) for what the reader reads inside ``value``, in its order."""
    if type(value) is LuaTable:
        found = []
        for key, item in value.items():
            found.append((node, AS_KEY, key))
            found.append((node, key, item))
        return found
    if isinstance(value, TorchObject):
        return [(node, FIELDS, value.fields)]
    if isinstance(value, LuaFunction):
        return [(node, IN_UPVALUES, value.upvalues)]
    if isinstance(value, Mapping):  # a registered class's payload: keys and values
        return [(node, IN_PAYLOAD, part) for pair in value.items() for part in pair]
    if isinstance(value, (list, tuple)):
        return [(node, IN_PAYLOAD, part) for part in value]
    return []


class TensorInfo(NamedTuple):
    """Where one tensor (or storage) of a file lives, without reading its data.

    ``offset`` is the byte position in the file of the tensor's first element and
    ``storage_offset`` that of its storage's first element (None for ascii files, for b32 Long
    data and for empty tensors). ``storage`` is the object index of its storage in the file
    (None without one): tensors with the same ``storage`` share memory. ``strides`` are
    Torch's, in elements.
    """

    path: str
    typename: str
    shape: tuple[int, ...]
    dtype: np.dtype[Any]
    nbytes: int
    offset: int | None
    storage_offset: int | None
    storage_nbytes: int
    strides: tuple[int, ...] = ()
    storage: int | None = None


class Paths:
    """Path strings of the nodes and entries of an index, each node's built once."""

    def __init__(self, columns: IndexColumns) -> None:
        self._parents = columns.parents
        self._places = columns.places
        self._containers = columns.containers
        self._texts: dict[int, str] = {-1: ""}
        self._positions: dict[int, dict[int, tuple[int, bool]]] = {}

    def of_node(self, node: int) -> str:
        """The path of node ``node`` ("" for the root), built bottom-up without recursion."""
        texts = self._texts
        chain = []
        while node not in texts:
            chain.append(node)
            node = self._parents[node]
        for index in reversed(chain):
            parent, place = self._parents[index], self._places[index]
            texts[index] = self.join(parent, place, self._containers[index])
        return texts[chain[0]] if chain else texts[node]

    def join(self, node: int, place: Any, child: Any) -> str:
        """The path of ``child``, sitting at ``place`` in node ``node``."""
        prefix = self.of_node(node)
        part = self._part(node, place, child)
        return prefix if part is None else prefix + format_part(part, not prefix)

    def _part(self, node: int, place: Any, child: Any) -> Part | None:
        if type(place) in _PLAIN_KEYS:
            return place  # type: ignore[no-any-return]
        if place is FIELDS or place is ROOT:
            return None
        if place is IN_UPVALUES:
            return UPVALUES
        if place is AS_KEY:
            return KeyOf(self._position(node, child)[0])
        if place is IN_PAYLOAD:
            return self._found(node, child)
        return Entry(self._position(node, place)[0])  # a key compared by identity

    def _found(self, node: int, child: Any) -> Part | None:
        """Where a registered class's value holds ``child``: a key, a position, a key's."""
        container = self._containers[node]
        if isinstance(container, (list, tuple)):
            for number, item in enumerate(container, 1):
                if item is child:
                    return number
            return None
        number, is_key = self._position(node, child)
        if is_key:
            return KeyOf(number)
        key = next(k for k, v in _pairs(container) if v is child)
        return key if type(key) in _PLAIN_KEYS else Entry(number)

    def _position(self, node: int, item: Any) -> tuple[int, bool]:
        """(1-based entry number, is a key) of ``item`` in node ``node``'s table."""
        positions = self._positions.get(node)
        if positions is None:
            positions = {}
            for number, (key, value) in enumerate(_pairs(self._containers[node]), 1):
                positions.setdefault(id(value), (number, False))
                positions[id(key)] = (number, True)
            self._positions[node] = positions
        return positions.get(id(item), (0, False))


def _pairs(container: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(container, LuaTable):
        return iter(container._entries.values())
    if isinstance(container, Mapping):
        return iter(container.items())
    return iter(())


def tensor_infos(recorder: IndexRecorder, base: int | None, size: int) -> list[TensorInfo]:
    """The index rows of ``recorder``'s entries; offsets are in a file mapped at ``base``."""
    paths = Paths(recorder.columns)

    def row_of(path: str, value: Any, storage: int | None) -> TensorInfo:
        return info_of(path, value, storage, base, size)

    fast = speedups.active(_ROWS)
    with gc_paused():  # many new rows: no collection should scan the file's graph meanwhile
        if fast is not None:
            rows: list[TensorInfo] = fast.rows(
                recorder.columns, base, size, paths.join, row_of, TensorInfo
            )
            return rows
        return [
            row_of(paths.join(node, place, value) or "<root>", value, storage)
            for node, place, value, storage in recorder.entries()
        ]


def info_of(path: str, value: Any, storage: int | None, base: int | None, size: int) -> TensorInfo:
    """One row: ``value`` is an ndarray, a :class:`Storage` or a :class:`LazyArray`."""
    if isinstance(value, LazyArray):
        return _lazy_info(path, value.storage, value.shape, value.strides, value.offset, storage)
    if isinstance(value, Storage) and isinstance(value.array, LazyStorage):
        lazy = value.array
        return _lazy_info(path, lazy, lazy.shape, (1,), 0, storage, value.typename)
    if isinstance(value, Storage):
        array, typename = value.array, value.typename
    else:
        array, typename = value, None
    root = root_of(array)
    if typename is None:
        typename = class_for_array(root, element_of(array.dtype), tensor=True).typename
    placed = base is not None and array.size > 0
    itemsize = array.itemsize
    return TensorInfo(
        path,
        typename,
        array.shape,
        array.dtype,
        array.nbytes,
        _offset(array, base, size) if placed else None,
        _offset(root, base, size) if placed else None,
        root.nbytes,
        tuple(stride // itemsize for stride in array.strides),
        storage,
    )


def _offset(array: Array, base: int | None, size: int) -> int | None:
    """Where ``array``'s data sits in the file; None unless it is a view of the file's bytes
    (b32 Long data is a widened copy)."""
    offset = address_of(array) - (base or 0)
    return offset if 0 <= offset < size else None


def _lazy_info(
    path: str,
    storage: LazyStorage,
    shape: tuple[int, ...],
    strides: tuple[int, ...],
    offset: int,
    number: int | None,
    typename: str | None = None,
) -> TensorInfo:
    """A row for a lazily read compressed file (offsets in the plain stream)."""
    if typename is None:
        typename = class_for_array(storage, element_of(storage.dtype), tensor=True).typename  # type: ignore[arg-type]
    nbytes = int(np.prod(shape, dtype=np.int64)) * storage.dtype.itemsize if shape else 0
    placed = nbytes and storage.file_dtype == storage.dtype  # b32 Longs are widened on reading
    return TensorInfo(
        path,
        typename,
        tuple(shape),
        storage.dtype,
        nbytes,
        storage.start + offset * storage.dtype.itemsize if placed else None,
        storage.start if placed else None,
        storage.count * storage.dtype.itemsize,
        tuple(strides),
        number,
    )


__all__ = ["IndexColumns", "IndexRecorder", "Paths", "TensorInfo", "info_of", "tensor_infos"]


# The compiled rows (``_fastread.rows``), configured by the reader's import.
_ROWS = speedups.compiled("_fastread")
