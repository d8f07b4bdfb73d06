"""Python shapes of the Lua values that have no Python twin.

* :class:`LuaTable` - a Lua table: an ordered mapping that takes any Lua key, tables and arrays
  included (by identity), and keeps Lua's rule that ``true`` and ``1`` are different keys.
* :class:`TorchObject` - an instance of any Torch class other than tensors and storages
  (``nn.Linear``, custom classes, unknown ones): class name, version and a field table.
* :class:`Storage` - a Torch storage on its own, kept apart from tensors (which are plain
  ``numpy.ndarray`` views of a storage's array).
* :class:`LuaFunction` - opaque bytecode plus upvalues; never executed.

Tables, objects and functions compare and hash by identity, as Lua values do.
"""

from __future__ import annotations

import gc
import numbers
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from types import MemberDescriptorType
from typing import Any, NamedTuple

import numpy as np

from ..spec.format import CLASSES, TorchClass, default_class

_BOOL_KEY = object()  # marks boolean keys so that True and 1 stay apart
_IDENTITY_KEY = object()  # marks reference-typed keys, compared by identity


def _hash_key(key: Any) -> Any:
    """The dict key under which a Lua key is stored."""
    kind = type(key)
    if kind is str or kind is int:
        return key
    if kind is float:
        if key != key:
            raise ValueError("a Lua table key cannot be NaN")
        return key
    if kind is bytes:
        try:
            return key.decode("utf-8")  # the same Lua string as the str
        except UnicodeDecodeError:
            return key
    if isinstance(key, (bool, np.bool_)):
        return (_BOOL_KEY, bool(key))
    if isinstance(key, numbers.Integral):
        return int(key)
    if isinstance(key, numbers.Real):
        return _hash_key(float(key))
    if key is None:
        raise ValueError("a Lua table key cannot be nil")
    return (_IDENTITY_KEY, id(key))


class LuaTable(MutableMapping[Any, Any]):
    """A Lua table: keys and values in the file's order, any Lua value as a key.

    >>> t = LuaTable([(1, "a"), (2, "b"), (True, "yes")])
    >>> t[1], t[True], len(t)
    ('a', 'yes', 3)
    >>> LuaTable.from_list(["x", "y"]).to_list()
    ['x', 'y']
    """

    __slots__ = ("__weakref__", "_entries")

    def __init__(self, items: Iterable[tuple[Any, Any]] | Mapping[Any, Any] = ()) -> None:
        self._entries: dict[Any, tuple[Any, Any]] = {}
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            self[key] = value

    @classmethod
    def from_list(cls, values: Iterable[Any]) -> LuaTable:
        """A list-like table with keys 1..n, as Lua writes ``{a, b, c}``."""
        table = cls()
        table._entries = {i: (i, v) for i, v in enumerate(values, 1)}
        return table

    def __getitem__(self, key: Any) -> Any:
        return self._entries[_hash_key(key)][1]

    def __setitem__(self, key: Any, value: Any) -> None:
        hashed = _hash_key(key)
        entry = self._entries.get(hashed)
        # An existing key keeps its original Python object (and its place in the order).
        self._entries[hashed] = (key if entry is None else entry[0], value)

    def __delitem__(self, key: Any) -> None:
        del self._entries[_hash_key(key)]

    def __contains__(self, key: object) -> bool:
        try:
            return _hash_key(key) in self._entries
        except ValueError:
            return False

    def __iter__(self) -> Iterator[Any]:
        return (key for key, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def items(self) -> Any:
        """(key, value) pairs in order; a fast path over the mixin's one lookup per key."""
        return list(self._entries.values())

    def values(self) -> Any:
        return [value for _, value in self._entries.values()]

    def is_list(self) -> bool:
        """True when the keys are exactly the integers 1..n (in any order)."""
        n = len(self._entries)
        return all(type(k) is int and 1 <= k <= n for k in self._entries)

    def to_list(self) -> list[Any]:
        """The values of keys 1..n as a list; ``ValueError`` if the table is not list-like."""
        if not self.is_list():
            raise ValueError("table has keys other than 1..n; use items() instead")
        return [self._entries[i][1] for i in range(1, len(self._entries) + 1)]

    def to_dict(self) -> dict[Any, Any]:
        """A plain dict (shallow); fails on keys Python cannot hash such as arrays."""
        return dict(self._entries.values())

    __eq__ = object.__eq__  # Lua tables are reference values
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        if not self._entries:
            return "LuaTable()"
        entries = list(self._entries.values())[:8]
        shown = ", ".join(f"{_short_repr(k)}: {_short_repr(v)}" for k, v in entries)
        more = ", ..." if len(self._entries) > 8 else ""
        return f"LuaTable({{{shown}{more}}})"


def _short_repr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype})"
    if isinstance(value, (LuaTable, TorchObject)):
        return f"<{type(value).__name__} of {len(value)}>"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class TorchObject(Mapping[Any, Any]):
    """An instance of a Torch class (``nn.Linear``, a custom class, an unknown one).

    Fields read like a dict (``obj["weight"]``) or like attributes (``obj.weight``). ``fields``
    is normally a :class:`LuaTable`; a class that wrote something else keeps that value as is.
    """

    __slots__ = ("__weakref__", "fields", "typename", "version")

    def __init__(self, typename: str, fields: Any = None, version: int | float = 1) -> None:
        self.typename = typename
        """The Torch class name, as ``torch.typename`` gives it (``"nn.Linear"``)."""
        self.version = version
        """The version written before the class name (``"V 1"``); 0 in files older than that."""
        self.fields: Any = LuaTable() if fields is None else fields
        """The object's fields: a :class:`LuaTable`, or whatever its class wrote instead."""

    def _table(self) -> Mapping[Any, Any] | None:
        """The fields as a mapping; None for a payload that is not a plain table (which a
        damaged file can make anything, even this object itself)."""
        fields = self.fields
        if isinstance(fields, Mapping) and not isinstance(fields, TorchObject):
            return fields
        return None

    def __getitem__(self, key: Any) -> Any:
        table = self._table()
        if table is None:
            raise KeyError(key)
        return table[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.fields[key] = value

    def __contains__(self, key: object) -> bool:
        table = self._table()
        return table is not None and key in table

    def __iter__(self) -> Iterator[Any]:
        table = self._table()
        return iter(table) if table is not None else iter(())

    def __len__(self) -> int:
        table = self._table()
        return len(table) if table is not None else 0

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return object.__getattribute__(self, "_table")()[name]
        except (AttributeError, KeyError, TypeError):
            raise AttributeError(
                f"{type(self).__name__} {self.typename!r} has no field {name!r}"
            ) from None

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __repr__(self) -> str:
        names = ", ".join(k if isinstance(k, str) else _short_repr(k) for k in list(self)[:8])
        return f"TorchObject({self.typename!r}, version={self.version}, fields=[{names}])"


class LuaFunction:
    """A serialized Lua function, kept opaque: bytecode and upvalues, never executed.

    ``tag`` is the type tag it was read with (8, or the legacy 6 and 7), so that it is written
    back unchanged.
    """

    __slots__ = ("__weakref__", "bytecode", "tag", "upvalues")

    def __init__(self, bytecode: bytes, upvalues: Any = None, tag: int = 8) -> None:
        self.bytecode = bytecode
        """The function as ``string.dump`` gave it (Lua 5.1 / LuaJIT bytecode)."""
        self.upvalues = LuaTable() if upvalues is None else upvalues
        """The values the function closes over, as a table indexed from 1."""
        self.tag = tag
        """The type tag it was read with (8, or the legacy 6 and 7)."""

    def __repr__(self) -> str:
        return f"LuaFunction(<{len(self.bytecode)} bytes of bytecode>, tag={self.tag})"


class Storage:
    """A Torch storage on its own: a flat array and its class name.

    Tensors are numpy views of ``storage.array``; a storage written on its own stays a
    ``Storage`` so that it loads back as one. ``np.asarray(storage)`` gives the array.
    """

    __slots__ = ("__weakref__", "array", "typename")

    def __init__(self, array: Any, typename: str | None = None) -> None:
        array = np.asarray(array)
        if array.ndim != 1:
            raise ValueError(f"a storage is one-dimensional, got shape {array.shape}")
        self.array: np.ndarray[Any, Any] = array
        """The storage's elements: a flat array, which the file's tensors view."""
        self.typename = typename or default_class(array.dtype, tensor=False).typename
        """The Torch class name (``"torch.FloatStorage"``, ``"torch.CudaStorage"``, ...)."""
        remember_class(array, CLASSES[self.typename])

    @classmethod
    def _make(cls, array: np.ndarray[Any, Any], torch_class: TorchClass) -> Storage:
        """The reader's constructor: ``array`` is already a flat array of the right type."""
        storage = object.__new__(cls)
        storage.array = array
        storage.typename = torch_class.typename
        if torch_class.is_cuda:
            remember_class(array, torch_class)
        return storage

    @property
    def dtype(self) -> np.dtype[Any]:
        """The numpy type of the elements."""
        dtype: np.dtype[Any] = self.array.dtype
        return dtype

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, index: Any) -> Any:
        return self.array[index]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        if dtype is None and not copy:
            return self.array
        return np.array(self.array, dtype=dtype, copy=True)

    def __repr__(self) -> str:
        return f"Storage({self.typename}, size={len(self)})"


class TableStream:
    """A table whose entries are produced while it is written, never all held in memory.

    ``TableStream(len(names), ((n, load(n)) for n in names))`` writes a table of ``length``
    entries pulled one at a time from ``items``; each tensor can be freed as soon as it is
    written. It can be written once (the iterator is consumed); a count that does not match
    the items is an error, since the table's size comes first in the file.
    """

    __slots__ = ("__weakref__", "_items", "length")

    def __init__(self, length: int, items: Iterable[tuple[Any, Any]]) -> None:
        if length < 0:
            raise ValueError(f"a table cannot have {length} entries")
        self.length = length
        self._items: Iterable[tuple[Any, Any]] | None = items

    def consume(self) -> Iterator[tuple[Any, Any]]:
        """The entries, checked against ``length``; a second call is an error."""
        from ..errors import UnsupportedValueError

        items, self._items = self._items, None
        if items is None:
            raise UnsupportedValueError("a TableStream can be written only once")
        count = 0
        for key, value in items:
            count += 1
            if count > self.length:
                raise UnsupportedValueError(f"TableStream declared {self.length} entries, got more")
            yield key, value
        if count != self.length:
            raise UnsupportedValueError(f"TableStream declared {self.length} entries, got {count}")

    def __repr__(self) -> str:
        return f"TableStream({self.length} entries)"


# Root arrays whose Torch class is not the default for their dtype (CUDA classes), so that a
# CUDA tensor loaded on the CPU is written back under its own name. Keyed by id() with a weak
# reference that removes the entry when the array dies, since ndarrays are not hashable.
_CLASS_OF_ROOT: dict[int, tuple[weakref.ref[Any], TorchClass]] = {}


def remember_class(root: np.ndarray[Any, Any], cls: TorchClass) -> None:
    """Record that ``root`` (a storage's array) is of ``cls`` where its dtype cannot say so."""
    if not cls.is_cuda:
        return
    key = id(root)
    _CLASS_OF_ROOT[key] = (weakref.ref(root, lambda _ref: _CLASS_OF_ROOT.pop(key, None)), cls)


def remembered_class(root: np.ndarray[Any, Any]) -> TorchClass | None:
    entry = _CLASS_OF_ROOT.get(id(root))
    if entry is None or entry[0]() is not root:
        return None
    return entry[1]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a graph of many new objects is built or walked.

    Nothing made during a read or write becomes garbage before it ends, but the collector would
    scan the growing graph again and again (about a third of the time for 100,000 small
    tensors). Only the outermost pause re-enables it.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class NativeLayout(NamedTuple):
    """What the compiled loops (``_fastread.c``, ``_fastwrite.c``) touch directly, named once.

    They build and read these values at C speed through the ``__slots__`` members below (each a
    member descriptor, whose offset C uses), and call the helpers for the rare cases. Nothing
    else of this module's private layout is visible to them: renaming a slot here changes what
    :func:`native_layout` hands over, and a missing one fails at import, in Python.
    """

    table_type: type[LuaTable]
    table_entries: MemberDescriptorType  # LuaTable._entries: dict hashed key -> (key, value)
    object_type: type[TorchObject]
    object_typename: MemberDescriptorType
    object_version: MemberDescriptorType
    object_fields: MemberDescriptorType
    storage_type: type[Storage]
    storage_array: MemberDescriptorType
    storage_typename: MemberDescriptorType
    hash_key: Callable[[Any], Any]  # the dict key of a Lua key (_hash_key)
    remember_class: Callable[[Any, TorchClass], None]
    class_of_root: dict[int, Any]  # roots with a CUDA class (non-empty: look before writing)


def _slot(cls: type, name: str) -> MemberDescriptorType:
    descriptor = vars(cls)[name]
    if not isinstance(descriptor, MemberDescriptorType):
        raise TypeError(f"{cls.__name__}.{name} is not a slot")
    return descriptor


def native_layout() -> NativeLayout:
    return NativeLayout(
        LuaTable, _slot(LuaTable, "_entries"),
        TorchObject, _slot(TorchObject, "typename"), _slot(TorchObject, "version"),
        _slot(TorchObject, "fields"),
        Storage, _slot(Storage, "array"), _slot(Storage, "typename"),
        _hash_key, remember_class, _CLASS_OF_ROOT,
    )  # fmt: skip
