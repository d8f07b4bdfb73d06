"""Reading the object graph: tags, indices, back-references, torch classes.

The reader is a small stack machine rather than a recursive descent, so that nesting depth is
bounded by ``max_depth`` and never by Python's recursion limit. Each container is registered
under its index *before* its children are read (as Torch7 does), which is what makes cycles and
self-references load; a registered object is never replaced afterwards.

For binary input the same machine runs in C when ``streamser._fastread`` is built (see
:mod:`streamser.speedups`): it reads the common values and hands anything else over, having
changed nothing, to the Python loop here, which stays the reference and raises every error.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from itertools import islice
from typing import Any

import numpy as np

from ..codecs import BinaryDecoder, Decoder
from ..errors import FormatError, LimitError, TruncatedError
from ..spec.format import (
    CLASSES,
    TAG_BOOLEAN,
    TAG_FUNCTION,
    TAG_FUNCTION_LEGACY,
    TAG_FUNCTION_LEGACY_RECURSIVE,
    TAG_NAMES,
    TAG_NIL,
    TAG_NUMBER,
    TAG_STRING,
    TAG_TABLE,
    TAG_TORCH,
    TorchClass,
)
from ..spec.grammar import decode_string, number_value, read_class_header
from ..spec.limits import Limits, limit_error
from ..speedups import compiled
from ..values.lua import (
    LuaFunction,
    LuaTable,
    Storage,
    TorchObject,
    _hash_key,
    gc_paused,
    remember_class,
)
from ..values.tensors import empty_tensor, tensor_view

_PENDING = object()  # a handler pushed a frame: the value comes later
_INCOMPLETE = object()  # registered index whose Python value does not exist yet
_BAIL = object()  # the compiled loop handed the value over to the Python one


class _TableFrame:
    __slots__ = ("entries", "key", "remaining", "table")

    def __init__(self, table: LuaTable, count: int) -> None:
        self.table = table
        self.entries = table._entries
        self.remaining = count
        self.key: Any = _PENDING

    def store(self, key: Any, value: Any, at: int) -> None:
        """One entry; the reader's loop stores plain string keys itself."""
        try:
            self.entries[_hash_key(key)] = (key, value)
        except ValueError as exc:
            raise FormatError(str(exc), at) from None


class _ObjectFrame:
    """A torch object without its own payload format: one object (its field table) follows."""

    __slots__ = ("obj",)

    def __init__(self, obj: TorchObject) -> None:
        self.obj = obj

    def take(self, value: Any, at: int) -> Any:
        self.obj.fields = value
        return self.obj


class _FunctionFrame:
    """A Lua function: its upvalue object follows the bytecode."""

    __slots__ = ("function",)

    def __init__(self, function: LuaFunction) -> None:
        self.function = function

    def take(self, value: Any, at: int) -> Any:
        self.function.upvalues = value
        return self.function


_Frame = _TableFrame | _ObjectFrame | _FunctionFrame


class GraphReader:
    """Reads values from a decoder, remembering indexed objects across calls (like torch.File)."""

    def __init__(self, decoder: Decoder, *, referenced: bool = True, limits: Limits | None = None):
        self.decoder = decoder
        self.referenced = referenced
        self.limits = limits or Limits()
        decoder.max_string = self.limits.max_string
        self.objects: dict[int, Any] = {}
        self._indexed = 0  # tables, torch objects and functions read so far
        self._stack: list[_Frame] = []
        # The compiled loop, for binary input only; FASTREAD is looked up here, per reader.
        self._compiled = FASTREAD if type(decoder) is BinaryDecoder else None

    # --- the machine ------------------------------------------------------------------------

    def read_object(self) -> Any:
        with gc_paused():
            if self._compiled is not None:
                value = self._read_compiled(self._compiled)
                if value is not _BAIL:
                    return value
            return self._read_graph()

    def _read_compiled(self, fast: Any) -> Any:
        """The value as the compiled loop reads it, or ``_BAIL`` with the reader unchanged.

        The C code adds new indices to ``objects`` and returns the decoder's and the reader's
        counters; when it bails (or fails) the indices it added, the last ones in the dict's
        order, are taken out again, so that the Python loop starts from the same state.
        """
        decoder, objects, limits = self.decoder, self.objects, self.limits
        known = len(objects)
        try:
            result = fast.read(
                decoder.buffer, decoder.pos, decoder.long_size, decoder.longs_read,
                self._indexed, objects, self.referenced, limits.max_depth, decoder.max_string,
                limits.max_table, limits.max_objects,
            )  # fmt: skip
        except BaseException:
            self._forget_after(known)
            raise
        if result is None:
            self._forget_after(known)
            return _BAIL
        value, decoder.pos, decoder.longs_read, self._indexed = result
        return value

    def _forget_after(self, known: int) -> None:
        """Unregister the indices added after the first ``known`` ones."""
        for index in list(islice(self.objects, known, None)):
            del self.objects[index]

    def _read_graph(self) -> Any:
        decoder, dispatch, stack = self.decoder, _DISPATCH, self._stack
        read_int = decoder.read_int
        stack.clear()
        value: Any
        while True:
            at = decoder.pos
            tag = read_int()
            handler = dispatch.get(tag)
            if handler is None:
                raise FormatError(f"unknown type tag {tag}", at)
            value = handler(self, at)
            while value is not _PENDING:
                if not stack:
                    return value
                frame = stack[-1]
                if isinstance(frame, _TableFrame):  # the commonest frame, stepped in place
                    key = frame.key
                    if key is _PENDING:
                        if value is None:
                            raise FormatError("a table key is nil", at)
                        frame.key = value
                        break
                    frame.key = _PENDING
                    if type(key) is str:
                        frame.entries[key] = (key, value)
                    else:
                        frame.store(key, value, at)
                    frame.remaining -= 1
                    if frame.remaining:
                        break
                    value = frame.table
                else:
                    value = frame.take(value, at)
                stack.pop()

    def _push(self, frame: _Frame, at: int) -> Any:
        if len(self._stack) >= self.limits.max_depth:
            raise LimitError(
                f"values nest deeper than max_depth={self.limits.max_depth}; "
                "pass a larger max_depth= if the file is trusted",
                at,
            )
        self._stack.append(frame)
        return _PENDING

    def _seen(self, index: int, at: int) -> Any:
        """The object registered under ``index``, or None when it must be read in full."""
        if self.referenced:
            found = self.objects.get(index)
            if found is _INCOMPLETE:
                raise FormatError(f"object {index} is referenced from inside its own payload", at)
            if found is not None:
                return found
        self._count_object(at)
        return None

    def _count_object(self, at: int) -> None:
        self._indexed += 1
        if self._indexed > self.limits.max_objects:
            raise limit_error("the number of objects", "max_objects", self.limits.max_objects, at)

    # --- one handler per tag ----------------------------------------------------------------

    def _read_nil(self, at: int) -> None:
        return None

    def _read_number(self, at: int) -> int | float:
        return number_value(self.decoder.read_double())

    def _read_boolean(self, at: int) -> bool:
        return self.decoder.read_int() == 1

    def _read_string(self, at: int) -> str | bytes:
        return decode_string(self.decoder.read_string())

    def _read_table(self, at: int) -> Any:
        decoder = self.decoder
        index = decoder.read_int()
        found = self._seen(index, at)
        if found is not None:
            return found
        count = decoder.read_int()
        if count < 0:
            raise FormatError(f"table claims {count} entries", at)
        if 2 * count * decoder.min_record > decoder.remaining():
            raise TruncatedError(
                f"table claims {count} entries but only {decoder.remaining()} bytes are left", at
            )
        if count > self.limits.max_table:
            limit = self.limits.max_table
            raise limit_error(f"a table of {count:,} entries", "max_table", limit, at)
        table = LuaTable()
        if self.referenced:
            self.objects[index] = table
        if count == 0:
            return table
        return self._push(_TableFrame(table, count), at)

    def _read_function(self, at: int) -> Any:
        return self._read_indexed_function(at, TAG_FUNCTION)

    def _read_legacy_recursive_function(self, at: int) -> Any:
        return self._read_indexed_function(at, TAG_FUNCTION_LEGACY_RECURSIVE)

    def _read_indexed_function(self, at: int, tag: int) -> Any:
        index = self.decoder.read_int()
        found = self._seen(index, at)
        if found is not None:
            return found
        function = LuaFunction(self.decoder.read_string(), None, tag=tag)
        if self.referenced:
            self.objects[index] = function
        return self._push(_FunctionFrame(function), at)

    def _read_legacy_function(self, at: int) -> Any:
        """Tag 6 functions carry no index and are never shared."""
        self._count_object(at)
        function = LuaFunction(self.decoder.read_string(), None, tag=TAG_FUNCTION_LEGACY)
        return self._push(_FunctionFrame(function), at)

    def _read_torch(self, at: int) -> Any:
        decoder = self.decoder
        index = decoder.read_int()
        if self.referenced:
            found = self.objects.get(index)
            if found is not None:
                if found is _INCOMPLETE:
                    raise FormatError(f"object {index} is referenced inside its own payload", at)
                return found
        self._count_object(at)
        version, name = read_class_header(decoder)
        cls = _CLASS_BY_NAME.get(name)
        if cls is not None:
            if self.referenced:
                self.objects[index] = _INCOMPLETE
            value = self._read_tensor(cls, at) if cls.is_tensor else self._read_storage(cls, at)
            if self.referenced:
                self.objects[index] = value
            return value
        obj = TorchObject(_class_name(name), None, version)
        if self.referenced:
            self.objects[index] = obj
        return self._push(_ObjectFrame(obj), at)

    def _read_tensor(self, cls: TorchClass, at: int) -> np.ndarray[Any, Any]:
        sizes, strides, offset = self.decoder.read_geometry()
        storage = self._read_tensor_storage(cls)
        if storage is None:
            if sizes and all(sizes):
                raise FormatError(f"tensor of size {list(sizes)} has no storage", at)
            array = empty_tensor(cls.element)
            remember_class(array, CLASSES[cls.storage_typename])
            return array
        return tensor_view(storage.array, sizes, strides, offset, at)

    def _read_tensor_storage(self, tensor_class: TorchClass) -> Storage | None:
        """A tensor's storage: nil, a back-reference, or a storage object read in place."""
        decoder = self.decoder
        where = decoder.pos
        tag = decoder.read_int()
        if tag == TAG_NIL:
            return None
        if tag != TAG_TORCH:
            found = TAG_NAMES.get(tag, f"type tag {tag}")
            raise FormatError(f"a tensor's storage must be a storage or nil, found {found}", where)
        storage = self._read_torch(where)
        if not isinstance(storage, Storage):
            found = getattr(storage, "typename", type(storage).__name__)
            raise FormatError(f"a tensor's storage must be a storage, found {found}", where)
        if storage.typename != tensor_class.storage_typename and (
            CLASSES[storage.typename].element is not tensor_class.element
        ):
            raise FormatError(f"{tensor_class.typename} cannot use a {storage.typename}", where)
        return storage

    def _read_storage(self, cls: TorchClass, at: int) -> Storage:
        decoder = self.decoder
        count = decoder.read_long()
        if count < 0:
            raise FormatError(f"storage claims {count} elements", at)
        array = decoder.read_array(cls.element, count)
        return Storage._make(array, cls)


# Plain functions, not bound methods: a reader holding its own methods would be a reference
# cycle, keeping everything it read (``objects``) alive until the cyclic collector runs.
_DISPATCH: dict[int, Callable[[GraphReader, int], Any]] = {
    TAG_NIL: GraphReader._read_nil,
    TAG_NUMBER: GraphReader._read_number,
    TAG_STRING: GraphReader._read_string,
    TAG_TABLE: GraphReader._read_table,
    TAG_TORCH: GraphReader._read_torch,
    TAG_BOOLEAN: GraphReader._read_boolean,
    TAG_FUNCTION_LEGACY: GraphReader._read_legacy_function,
    TAG_FUNCTION_LEGACY_RECURSIVE: GraphReader._read_legacy_recursive_function,
    TAG_FUNCTION: GraphReader._read_function,
}


_CLASS_BY_NAME: dict[bytes, TorchClass] = {name.encode(): cls for name, cls in CLASSES.items()}


@lru_cache(maxsize=4096)
def _class_name(raw: bytes) -> str:
    """Class names as text; undecodable bytes survive a round trip as surrogates."""
    return raw.decode("utf-8", "surrogateescape")


def _configure_compiled() -> Any:
    """``streamser._fastread`` given the types and helpers values are made of, or None."""
    module = compiled("_fastread")
    if module is None:
        return None
    elements = list(dict.fromkeys(cls.element for cls in CLASSES.values()))
    module.configure(
        LuaTable, TorchObject, Storage, _hash_key, remember_class, _class_name, _INCOMPLETE,
        [
            (
                name, cls.typename, cls.is_tensor, cls.is_cuda, elements.index(cls.element),
                cls.element.is_long, cls.element.dtype, cls.element.dtype.newbyteorder("="),
                cls, CLASSES[cls.storage_typename],
            )
            for name, cls in _CLASS_BY_NAME.items()
        ],
    )  # fmt: skip
    return module


# The compiled loop (None under STREAMSER_PURE=1 or without the build). Readers made while it is
# None read in pure Python: tests set it to None to compare the two.
FASTREAD: Any = _configure_compiled()
