"""Reading the object graph: values built from the records of :mod:`streamser.spec.grammar`.

The reader is a small stack machine rather than a recursive descent, so that nesting depth is
bounded by ``max_depth`` and never by Python's recursion limit. Each container is registered
under its index *before* its children are read (as Torch7 does), which is what makes cycles and
self-references load; a registered object is never replaced afterwards. Every part of a record
is read by the grammar's functions; this module only decides what Python value it becomes.

Given an :class:`~.index.IndexRecorder`, the reader also notes, in the same pass, where every
tensor sits (the lazy index of ``streamser.open``).

For binary input the same machine runs in C when ``streamser._fastread`` is built (see
:mod:`streamser.speedups`): it reads the common values and hands anything else over, having
changed nothing, to the Python loop here, which stays the reference and raises every error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from itertools import islice
from typing import Any, NamedTuple

from .. import speedups
from ..codecs import BinaryDecoder, Decoder
from ..errors import FormatError, StreamserError
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
from ..spec.grammar import (
    ClassPayload,
    check_objects,
    decode_string,
    number_value,
    read_class_header,
    read_count,
    read_fields_tag,
    read_geometry,
    read_storage_count,
    read_string,
)
from ..spec.limits import Limits, MemoryExhausted, depth_error, limit_error
from ..values.classes import CLASS_CODECS, ClassCodec
from ..values.lua import (
    LuaFunction,
    LuaTable,
    NativeLayout,
    Storage,
    TorchObject,
    _hash_key,
    gc_paused,
    native_layout,
    remember_class,
)
from ..values.tensors import empty_tensor, tensor_view
from .index import AS_KEY, FIELDS, IN_PAYLOAD, IN_UPVALUES, ROOT, IndexRecorder

_PENDING = object()  # a handler pushed a frame: the value comes later
_INCOMPLETE = object()  # registered index whose Python value does not exist yet
_BAIL = object()  # the compiled loop handed the value over to the Python one


class _TableFrame:
    __slots__ = ("count", "entries", "key", "node", "remaining", "table")

    def __init__(self, table: LuaTable, count: int) -> None:
        self.table = table
        self.entries = table._entries
        self.count = count
        self.remaining = count
        self.key: Any = _PENDING
        self.node = -1

    def store(self, key: Any, value: Any, at: int) -> None:
        """One entry; the reader's loop stores plain string keys itself."""
        try:
            self.entries[_hash_key(key)] = (key, value)
        except ValueError as exc:
            raise FormatError(str(exc), at) from None

    def place(self) -> Any:
        return AS_KEY if self.key is _PENDING else self.key


class _ObjectFrame:
    """A torch object without its own payload format: its field table follows."""

    __slots__ = ("node", "obj")

    def __init__(self, obj: TorchObject) -> None:
        self.obj = obj
        self.node = -1

    def take(self, value: Any, at: int) -> Any:
        self.obj.fields = value
        return self.obj

    def place(self) -> Any:
        return FIELDS


class _FunctionFrame:
    """A Lua function: its upvalue object follows the bytecode."""

    __slots__ = ("function", "node")

    def __init__(self, function: LuaFunction) -> None:
        self.function = function
        self.node = -1

    def take(self, value: Any, at: int) -> Any:
        self.function.upvalues = value
        return self.function

    def place(self) -> Any:
        return IN_UPVALUES


class _ClassFrame:
    """A registered class: the objects its payload announced, then its codec's ``fill``."""

    __slots__ = ("at", "codec", "node", "objects", "remaining", "value")

    def __init__(self, codec: ClassCodec, value: Any, count: int, at: int) -> None:
        self.codec = codec
        self.value = value
        self.remaining = count
        self.objects: list[Any] = []
        self.at = at
        self.node = -1

    def take(self, value: Any, at: int) -> Any:
        self.objects.append(value)
        self.remaining -= 1
        return _PENDING if self.remaining else self.finish()

    def finish(self) -> Any:
        with _codec_errors(self.codec, self.at):
            self.codec.fill(self.value, self.objects)
        self.objects = []
        return self.value

    def place(self) -> Any:
        return IN_PAYLOAD


_Frame = _TableFrame | _ObjectFrame | _FunctionFrame | _ClassFrame


@contextmanager
def _codec_errors(codec: ClassCodec, at: int) -> Iterator[None]:
    """Errors of a registered codec become FormatErrors naming its class and the offset."""
    try:
        yield
    except StreamserError:
        raise
    except Exception as error:
        message = f"the payload of {codec.typename} does not read: {error}"
        raise FormatError(message, at) from error


class GraphReader:
    """Reads values from a decoder, remembering indexed objects across calls (like torch.File)."""

    def __init__(
        self,
        decoder: Decoder,
        *,
        referenced: bool = True,
        limits: Limits | None = None,
        index: IndexRecorder | None = None,
        keep_objects: bool = True,
    ):
        """``keep_objects=False``: no other value will be read with this reader, so
        :attr:`objects` (what later values may refer back to) need not be kept."""
        self.decoder = decoder
        self.keep_objects = keep_objects
        self.referenced = referenced
        self.limits = limits or Limits()
        self.index = index  # notes where each tensor sits, when given
        decoder.max_string = self.limits.max_string
        self.objects: dict[int, Any] = {}
        self._indexed = 0  # tables, torch objects and functions read so far
        self.replaced = False  # whether a table repeated a key (its last value won)
        self._stack: list[_Frame] = []
        self._full: Any = None  # the last tensor or storage read in full (for the index)
        self._last_index = 0  # the index of the last torch object met where a value stands
        self._tensor_storage: int | None = None  # the index of the last tensor's storage
        compiled = _FASTREAD if type(decoder) is BinaryDecoder else None
        self._compiled = speedups.active(compiled)

    # --- the machine ------------------------------------------------------------------------

    def read_object(self) -> Any:
        with gc_paused():
            if self._compiled is not None:
                value = self._read_compiled(self._compiled)
                if value is not _BAIL:
                    return value  # (the compiled loop hands over tables that repeat a key)
            value = self._read_graph()
            if self.replaced and self.index is not None:
                self.index.rebuild(value)
            return value

    def _read_compiled(self, fast: Any) -> Any:
        """The value as the compiled loop reads it, or ``_BAIL`` with the reader unchanged.

        The C code adds new indices to ``objects`` (and notes to the index) and returns the
        decoder's and the reader's counters; when it bails (or fails) what it added, the last
        keys in the dict's order and the last notes, is taken out again, so that the Python loop
        starts from the same state.
        """
        decoder, objects, limits, index = self.decoder, self.objects, self.limits, self.index
        known = len(objects)
        notes = None
        if index is not None:
            columns = index.columns
            lists = (columns.places, columns.containers, columns.spots, columns.values)
            notes = (*lists, index.storages)
        marks = None if index is None else index.marks()
        try:
            result = fast.read(
                decoder.buffer, decoder.pos, decoder.long_size, decoder.longs_read,
                self._indexed, objects, self.referenced, limits.max_depth, decoder.max_string,
                limits.max_table, limits.max_objects, notes, self.keep_objects,
            )  # fmt: skip
        except MemoryError:  # the Python loop reads it again and knows the record's offset
            self._undo(known, marks)
            return _BAIL
        except BaseException:
            self._undo(known, marks)
            raise
        if result is None:
            self._undo(known, marks)
            return _BAIL
        value, decoder.pos, decoder.longs_read, self._indexed, *columns = result
        if index is not None:
            index.extend(*columns)
        return value

    def _undo(self, known: int, marks: tuple[int, int] | None) -> None:
        """Unregister the indices added after the first ``known`` ones, drop later notes."""
        for index in list(islice(self.objects, known, None)):
            del self.objects[index]
        if marks is not None and self.index is not None:
            self.index.truncate(marks)

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
            try:
                value = handler(self, at)
            except MemoryError:
                raise MemoryExhausted(at) from None
            while value is not _PENDING:
                if not stack:
                    return value
                frame = stack[-1]
                if type(frame) is _TableFrame:  # the commonest frame, stepped in place
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
                    if len(frame.entries) < frame.count:  # a key came twice: the last won
                        self.replaced = True
                    value = frame.table
                else:
                    value = frame.take(value, at)  # type: ignore[union-attr]
                    if value is _PENDING:
                        break
                stack.pop()

    def _place(self) -> tuple[int, Any]:
        """(node, place) of the value about to be read, for the index."""
        stack = self._stack
        if not stack:
            return -1, ROOT
        frame = stack[-1]
        return frame.node, frame.place()

    def _push(self, frame: _Frame, container: Any, at: int) -> Any:
        if len(self._stack) >= self.limits.max_depth:
            raise depth_error(self.limits.max_depth, at)
        if self.index is not None:
            frame.node = self.index.node(*self._place(), container)
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

    def _register(self, index: int, value: Any) -> None:
        if self.referenced:
            self.objects[index] = value

    # --- one handler per tag ----------------------------------------------------------------

    def _read_nil(self, at: int) -> None:
        return None

    def _read_number(self, at: int) -> int | float:
        return number_value(self.decoder.read_double())

    def _read_boolean(self, at: int) -> bool:
        return self.decoder.read_int() == 1

    def _read_string(self, at: int) -> str | bytes:
        return decode_string(read_string(self.decoder))

    def _read_table(self, at: int) -> Any:
        decoder = self.decoder
        index = decoder.read_int()
        found = self._seen(index, at)
        if found is not None:
            return found
        count = read_count(decoder, at, self.limits.max_table)
        table = LuaTable()
        self._register(index, table)
        if count == 0:
            return table
        return self._push(_TableFrame(table, count), table, at)

    def _read_function(self, at: int) -> Any:
        return self._read_indexed_function(at, TAG_FUNCTION)

    def _read_legacy_recursive_function(self, at: int) -> Any:
        return self._read_indexed_function(at, TAG_FUNCTION_LEGACY_RECURSIVE)

    def _read_indexed_function(self, at: int, tag: int) -> Any:
        index = self.decoder.read_int()
        found = self._seen(index, at)
        if found is not None:
            return found
        function = LuaFunction(read_string(self.decoder), None, tag=tag)
        self._register(index, function)
        return self._push(_FunctionFrame(function), function, at)

    def _read_legacy_function(self, at: int) -> Any:
        """Tag 6 functions carry no index and are never shared."""
        self._count_object(at)
        function = LuaFunction(read_string(self.decoder), None, tag=TAG_FUNCTION_LEGACY)
        return self._push(_FunctionFrame(function), function, at)

    def _read_torch(self, at: int) -> Any:
        """A torch object where a value stands; the index notes tensors and storages."""
        value = self._torch(at)
        index = self.index
        if index is not None:
            if type(value) is Storage:  # read now or earlier (a tensor's): noted once
                index.entry(*self._place(), value, self._last_index)
            elif value is self._full:
                index.entry(*self._place(), value, self._tensor_storage)
            self._full = None
        return value

    def _torch(self, at: int) -> Any:
        decoder = self.decoder
        index = decoder.read_int()
        self._last_index = index
        if self.referenced:
            found = self.objects.get(index)
            if found is not None:
                if found is _INCOMPLETE:
                    raise FormatError(f"object {index} is referenced inside its own payload", at)
                return found
        self._count_object(at)
        version, name = read_class_header(decoder)
        cls = _CLASS_BY_NAME.get(name)
        if cls is None:
            return self._read_other(index, version, _class_name(name), at)
        self._register(index, _INCOMPLETE)
        value = self._read_tensor(cls, at) if cls.is_tensor else self._read_storage(cls, at)
        self._register(index, value)
        self._full = value
        return value

    def _read_other(self, index: int, version: int | float, typename: str, at: int) -> Any:
        """A class that is neither a tensor nor a storage: registered, or a field table."""
        codec = CLASS_CODECS.get(typename)
        if codec is not None:
            return self._read_registered(codec, index, version, at)
        obj = TorchObject(typename, None, version)
        self._register(index, obj)
        self._push(_ObjectFrame(obj), obj, at)
        where = self.decoder.pos
        read_fields_tag(self.decoder, typename)
        return self._read_table(where)

    def _read_registered(self, codec: ClassCodec, index: int, version: Any, at: int) -> Any:
        with _codec_errors(codec, at):
            value, count = codec.read_head(ClassPayload(self.decoder), version)
        check_objects(self.decoder, count, codec.typename, at)
        self._register(index, value)
        frame = _ClassFrame(codec, value, count, at)
        if count == 0:
            return frame.finish()
        return self._push(frame, value, at)

    def _read_tensor(self, cls: TorchClass, at: int) -> Any:
        geometry = read_geometry(self.decoder, at)
        storage = self._read_tensor_storage(cls)
        sizes = geometry.sizes
        if storage is None:
            if sizes and all(sizes):
                raise FormatError(f"tensor of size {list(sizes)} has no storage", at)
            array = empty_tensor(cls.element)
            remember_class(array, CLASSES[cls.storage_typename])
            return array
        return tensor_view(storage.array, sizes, geometry.strides, geometry.offset, at)

    def _read_tensor_storage(self, tensor_class: TorchClass) -> Storage | None:
        """A tensor's storage: nil, a back-reference, or a storage object read in place."""
        decoder = self.decoder
        where = decoder.pos
        tag = decoder.read_int()
        self._tensor_storage = None
        if tag == TAG_NIL:
            return None
        if tag != TAG_TORCH:
            found = TAG_NAMES.get(tag, f"type tag {tag}")
            raise FormatError(f"a tensor's storage must be a storage or nil, found {found}", where)
        storage = self._torch(where)
        self._tensor_storage = self._last_index
        if not isinstance(storage, Storage):
            found = getattr(storage, "typename", type(storage).__name__)
            raise FormatError(f"a tensor's storage must be a storage, found {found}", where)
        if storage.typename != tensor_class.storage_typename and (
            CLASSES[storage.typename].element is not tensor_class.element
        ):
            raise FormatError(f"{tensor_class.typename} cannot use a {storage.typename}", where)
        return storage

    def _read_storage(self, cls: TorchClass, at: int) -> Storage:
        count = read_storage_count(self.decoder, at)
        array = self.decoder.read_array(cls.element, count)
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


class ReaderHooks(NamedTuple):
    """What the compiled reader is given besides :class:`NativeLayout` (see ``_fastread.pyi``)."""

    class_name: Callable[[bytes], str]  # raw class name -> typename
    incomplete: object  # registered while a tensor's or storage's payload is read
    classes: list[tuple[Any, ...]]  # one row per tensor and storage class, see _class_rows()
    registered: dict[str, ClassCodec]  # classes with payloads of their own: Python reads them
    root: object  # index places (see .index)
    as_key: object
    fields: object


def _class_rows() -> list[tuple[Any, ...]]:
    """(name bytes, typename, is_tensor, is_cuda, element number, is_long, dtype, empty-tensor
    dtype, TorchClass, TorchClass of its storage) per tensor and storage class."""
    elements = list(dict.fromkeys(cls.element for cls in CLASSES.values()))
    return [
        (
            name, cls.typename, cls.is_tensor, cls.is_cuda, elements.index(cls.element),
            cls.element.is_long, cls.element.dtype, cls.element.dtype.newbyteorder("="),
            cls, CLASSES[cls.storage_typename],
        )
        for name, cls in _CLASS_BY_NAME.items()
    ]  # fmt: skip


def _configure_compiled() -> Any:
    """``streamser._fastread`` given the layout and helpers values are made of, or None."""
    module = speedups.compiled("_fastread")
    if module is None:
        return None
    layout: NativeLayout = native_layout()
    hooks = ReaderHooks(_class_name, _INCOMPLETE, _class_rows(), CLASS_CODECS, ROOT, AS_KEY, FIELDS)
    module.configure(layout, hooks)
    return module


# The compiled loop (None under STREAMSER_PURE=1 or without the build); readers made inside
# ``speedups.pure_python()`` do without it.
_FASTREAD: Any = _configure_compiled()
