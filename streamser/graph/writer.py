"""Writing the object graph: Python values to tags, indices and payloads.

Like the reader, the writer keeps its own stack instead of recursing, so depth is unlimited.
Sharing follows Torch7's ``referenced`` rules: an object met again (same Python object; for
storages, same root buffer) is written as a back-reference to its index, and the memo holds
each object so that its ``id()`` cannot be reused while writing. With ``referenced=False``
every occurrence is written in full and a cycle is an error instead of an endless file.

Python types are dispatched through a table of plain functions (bound methods held by the
writer would make it a reference cycle, and :mod:`.memo` promises there is none); classes with a
payload of their own are written by their registered codec (:mod:`streamser.values.classes`).

For binary streams without a hook or cast, the loop runs in C (``streamser._fastwrite``) when
it is built: it writes the common values itself and hands every other value back to the Python
writer, so this module stays the definition of the output. It is given the writer's state
explicitly (:class:`CompiledState`), never by attribute names.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator, Mapping
from types import MemberDescriptorType
from typing import Any, NamedTuple

import numpy as np

from .. import speedups
from ..codecs import BinaryEncoder, Encoder
from ..codecs.binary import CHUNK_BYTES
from ..errors import UnsupportedValueError
from ..io.arrays import Array, ChunkSource, address_of, root_of
from ..io.sink import DIRECT_THRESHOLD
from ..spec.format import (
    CLASSES,
    CPU_STORAGE,
    CPU_TENSOR,
    ELEMENT_BY_DTYPE,
    TAG_BOOLEAN,
    TAG_FUNCTION_LEGACY,
    TAG_NIL,
    TAG_NUMBER,
    TAG_STRING,
    TAG_TABLE,
    TAG_TORCH,
    TorchClass,
    element_of,
)
from ..values.classes import CODEC_OF_TYPE, ClassCodec
from ..values.lazy import LazyArray, LazyStorage
from ..values.lua import (
    LuaFunction,
    LuaTable,
    Storage,
    TableStream,
    TorchObject,
    gc_paused,
    native_layout,
)
from ..values.tensors import TensorLayout, class_for_array, contiguous_strides, layout_of
from .foreign import claims_foreign, foreign_handler
from .memo import IdentityMemo, forget

# The compiled loop (None under STREAMSER_PURE=1 or without the build; see speedups).
_FAST = speedups.compiled("_fastwrite")
# Element types in the order of the compiled loop's header tables.
_FAST_ELEMENTS = (("u", 1), ("i", 1), ("i", 2), ("i", 4), ("i", 8), ("f", 2), ("f", 4), ("f", 8))

_KEY = object()  # label of a table key being written (for error paths)
_Config = tuple[tuple[bytes | None, ...], tuple[bytes | None, ...], int, int]
_Children = Iterator[tuple[Any, Any]]  # (label, value) pairs still to write


def _invalid_key(key: Any) -> bool:
    """nil and NaN cannot be Lua table keys."""
    return key is None or (isinstance(key, float) and key != key)


def _pairs(items: Any) -> _Children:
    for key, value in items:
        yield _KEY, key
        yield key, value


def _list_pairs(values: Any) -> _Children:
    for index, value in enumerate(values, 1):
        yield _KEY, index
        yield index, value


class _Frame:
    __slots__ = ("children", "label", "owner")

    def __init__(self, children: _Children, owner: int) -> None:
        self.children = children
        self.owner = owner  # id() of the container, for cycle detection without references
        self.label: Any = None


class GraphWriter:
    """Writes values through an encoder; indices and sharing persist across calls."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        referenced: bool = True,
        compact: bool = False,
        hook: Callable[[Any], Any] | None = None,
        cast: Callable[[TorchClass], TorchClass] | None = None,
    ):
        self.encoder = encoder
        self.referenced = referenced
        self.compact = compact
        self.hook = hook  # value -> the value to write in its place (memo stays on the original)
        self.cast = cast  # tensor/storage class -> the class to write it as
        self._original: Any = None  # the value before the hook, which keys the memo
        self.count = 0  # last index handed out
        self._memo = IdentityMemo()  # tables, objects, functions, tensors -> index
        self._storages = IdentityMemo()  # storage root arrays -> index
        self._active: set[int] = set()
        self._stack: list[_Frame] = []
        self._root_label = "<root>"
        self._headers: dict[tuple[str, int | float], bytes] = {}
        self._addresses = IdentityMemo()  # storage root arrays -> address of their memory
        self._fast_config: _Config | None = None  # the compiled loop's tables
        self._handlers: dict[type, _Handler] = {}  # subclasses met, resolved once per writer

    # --- the machine ------------------------------------------------------------------------

    def write_object(self, value: Any) -> None:
        with gc_paused():
            fast = speedups.active(_FAST)
            plain = self.hook is None and self.cast is None
            if fast is not None and plain and type(self.encoder) is BinaryEncoder:
                fast.write_graph(value, self._compiled_state())
            else:
                self._write_graph(value)

    def _compiled_state(self) -> CompiledState:
        """What the compiled loop works on, for one call (it holds the writer's methods, so it
        is not kept: a writer holding its own bound methods would be a reference cycle)."""
        sink = self.encoder.sink
        tensors, storages, long_size, threshold = self._compiled_config()
        return CompiledState(
            sink.buffer, sink.drain, sink.target, self.referenced, self.count,
            self._memo, self._memo.entries, self._storages, self._storages.entries,
            self._stack, self._active, self._write_from_compiled, self._set_count,
            self._class_header, tensors, storages, long_size, threshold,
        )  # fmt: skip

    def _write_from_compiled(self, value: Any, count: int) -> int:
        """The compiled loop hands ``value`` over (it has counted ``count`` indices so far)."""
        self.count = count
        self._write_nested(value)
        return self.count

    def _set_count(self, count: int) -> None:
        self.count = count

    def _compiled_config(
        self,
    ) -> tuple[tuple[bytes | None, ...], tuple[bytes | None, ...], int, int]:
        """Class headers by element type (None where Python must convert), long size, and
        the size from which strings and arrays bypass the record buffer."""
        config = self._fast_config
        if config is None:
            long_size = self.encoder.long_size
            tensors: list[bytes | None] = []
            storages: list[bytes | None] = []
            for key in _FAST_ELEMENTS:
                element = ELEMENT_BY_DTYPE[key]
                if element.file_dtype(long_size) != element.dtype:  # b32 Longs are converted
                    tensors.append(None)
                    storages.append(None)
                    continue
                tensors.append(self._class_header(CPU_TENSOR[element.name].typename, 1))
                storages.append(self._class_header(CPU_STORAGE[element.name].typename, 1))
            threshold = min(DIRECT_THRESHOLD, CHUNK_BYTES)
            config = (tuple(tensors), tuple(storages), long_size, threshold)
            self._fast_config = config
        return config

    def _write_graph(self, value: Any) -> None:
        self._stack.clear()
        self._active.clear()
        self._write_value(value)
        self._run(0)

    def _write_nested(self, value: Any) -> None:
        """Write ``value`` and all it holds, above the frames already on the stack.

        The compiled loop calls this for every value it does not write itself (with a frame on
        the stack for each of its own), including the ones that raise an error.
        """
        stack = self._stack
        if stack and stack[-1].label is _KEY and _invalid_key(value):
            raise UnsupportedValueError(f"a Lua table key cannot be {value}", self.path())
        base = len(stack)
        self._write_value(value)
        self._run(base)

    def _run(self, base: int) -> None:
        """Write the children of the frames above ``base`` until they are all written."""
        stack = self._stack
        settle = self.encoder.settle
        while len(stack) > base:
            settle()
            frame = stack[-1]
            child = next(frame.children, None)
            if child is None:
                stack.pop()
                self._active.discard(frame.owner)
                continue
            frame.label = child[0]
            if child[0] is _KEY and _invalid_key(child[1]):
                raise UnsupportedValueError(f"a Lua table key cannot be {child[1]}", self.path())
            self._write_value(child[1])

    def _write_value(self, value: Any) -> None:
        self._original = value
        if self.hook is not None:
            value = self.hook(value)
            if self._stack and self._stack[-1].label is _KEY and _invalid_key(value):
                raise UnsupportedValueError(f"a hook made a table key {value}", self.path())
        kind = type(value)
        handler = _HANDLERS.get(kind) or self._handlers.get(kind) or self._handler_for(kind)
        handler(self, value)

    def _handler_for(self, kind: type) -> _Handler:
        """Registered classes, subclasses and numpy scalars: resolved once per type."""
        handler = _write_registered if codec_of(kind) is not None else _by_ancestry(kind)
        if handler is None and claims_foreign(kind):  # torch tensors: torch is imported already
            handler = _write_foreign
        if handler is None:
            raise UnsupportedValueError(
                f"cannot write a value of type {kind.__module__}.{kind.__qualname__}", self.path()
            )
        self._handlers[kind] = handler
        return handler

    def path(self) -> str:
        """Where the value being written sits, e.g. ``<root>.model.modules[3].weight``."""
        parts = [self._root_label]
        for frame in self._stack:
            label = frame.label
            if label is _KEY:
                parts.append("[<a key>]")
                break
            if isinstance(label, str) and label.isidentifier():
                parts.append("." + label)
            elif label is not None:
                parts.append(f"[{label!r}]")
        return "".join(parts)

    def _begin(self, tag: int, obj: Any, memo: IdentityMemo) -> bool:
        """Write ``tag`` and ``obj``'s index; True when its payload must follow."""
        if self.referenced:
            index = memo.get(obj)
            if index is not None:
                self.encoder.write_record(tag, index)
                return False
        self.count += 1
        if self.referenced:
            memo.put(obj, self.count)
        self.encoder.write_record(tag, self.count)
        return True

    def _push(self, obj: Any, children: _Children) -> None:
        """Start writing ``obj``'s children (cycles are tracked on the value before the hook)."""
        key = id(self._original)
        if not self.referenced:
            if key in self._active:
                raise UnsupportedValueError(
                    "a cycle cannot be written with referenced=False (Torch7 would recurse "
                    "forever); save with referenced=True",
                    self.path(),
                )
            self._active.add(key)
        self._stack.append(_Frame(children, key))

    # --- one handler per Python type ----------------------------------------------------------

    def _write_nil(self, value: None) -> None:
        self.encoder.write_int(TAG_NIL)

    def _write_boolean(self, value: Any) -> None:
        self.encoder.write_int(TAG_BOOLEAN)
        self.encoder.write_int(1 if value else 0)

    def _write_integer(self, value: Any) -> None:
        value = int(value)
        try:
            exact = float(value)
        except OverflowError:
            exact = None
        if exact is None or int(exact) != value:
            raise UnsupportedValueError(
                f"integer {value} cannot be held exactly by a Lua number (a double)", self.path()
            )
        self.encoder.write_int(TAG_NUMBER)
        self.encoder.write_double(exact)

    def _write_number(self, value: Any) -> None:
        self.encoder.write_int(TAG_NUMBER)
        self.encoder.write_double(float(value))

    def _write_str(self, value: str) -> None:
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UnsupportedValueError(
                f"string is not encodable as UTF-8: {exc}", self.path()
            ) from None
        self._write_bytes(data)

    def _write_bytes(self, value: Any) -> None:
        self.encoder.write_int(TAG_STRING)
        self.encoder.write_string(bytes(value))

    def _write_table(self, obj: Any, count: int, children: _Children) -> None:
        if self._begin(TAG_TABLE, self._original, self._memo):
            self.encoder.write_int(count)
            if count:
                self._push(obj, children)

    def _write_dict(self, value: Mapping[Any, Any]) -> None:
        self._write_table(value, len(value), _pairs(value.items()))

    def _write_lua_table(self, value: LuaTable) -> None:
        self._write_table(value, len(value), _pairs(value._entries.values()))

    def _write_list(self, value: Any) -> None:
        self._write_table(value, len(value), _list_pairs(value))

    def _write_table_stream(self, value: TableStream) -> None:
        self._write_table(value, value.length, _pairs(value.consume()))

    def _write_class_header(self, typename: str, version: int | float) -> None:
        self.encoder.write_encoded(self._class_header(typename, version))

    def _class_header(self, typename: str, version: int | float) -> bytes:
        """The encoded version and class-name strings of a torch object (cached)."""
        key = (typename, version)
        header = self._headers.get(key)
        if header is None:
            encoder = self.encoder
            version_text = b"V " + _lua_number_text(version)
            name = typename.encode("utf-8", "surrogateescape")
            header = encoder.encode_string(version_text) + encoder.encode_string(name)
            self._headers[key] = header
        return header

    def _write_torch_object(self, value: TorchObject) -> None:
        fields = value.fields
        if _handler_of(fields) not in _TABLE_HANDLERS:
            raise UnsupportedValueError(
                f"the fields of {value.typename!r} must be a table (LuaTable, dict, list), not "
                f"{type(fields).__name__}: a class with a payload of its own needs a registered "
                "ClassCodec (streamser.register_class)",
                self.path(),
            )
        if self._begin(TAG_TORCH, self._original, self._memo):
            self._write_class_header(value.typename, value.version)
            self._push(value, iter(((None, fields),)))

    def _write_registered(self, value: Any) -> None:
        codec = codec_of(type(value))
        assert codec is not None  # chosen as the handler because there is one
        if self._begin(TAG_TORCH, self._original, self._memo):
            self._write_class_header(codec.typename, codec.version)
            objects = codec.write_head(value, self.encoder)
            self._push(value, enumerate(objects, 1))

    def _write_function(self, value: LuaFunction) -> None:
        encoder = self.encoder
        if value.tag == TAG_FUNCTION_LEGACY:
            encoder.write_int(value.tag)  # legacy functions carry no index
        elif not self._begin(value.tag, self._original, self._memo):
            return
        encoder.write_string(value.bytecode)
        self._push(value, iter((("<upvalues>", value.upvalues),)))

    def _write_tensor(self, value: Array) -> None:
        try:
            layout = layout_of(value, compact=self.compact, addresses=self._addresses)
        except UnsupportedValueError as exc:
            raise UnsupportedValueError(exc.message, self.path()) from None
        self.write_layout(layout)

    def write_layout(self, layout: TensorLayout) -> None:
        """Write the value being written as the tensor ``layout`` describes (the layout of a
        value that is not an ndarray is decided elsewhere: :mod:`streamser.torch.adapt`)."""
        if not self._begin(TAG_TORCH, self._original, self._memo):
            return
        cls = layout.cls if self.cast is None else self.cast(layout.cls)
        self._write_class_header(cls.typename, 1)
        self.encoder.write_geometry(layout.sizes, layout.strides, layout.offset)
        if layout.storage_data is None:
            self.encoder.write_int(TAG_NIL)
        else:
            storage_class = CLASSES[cls.storage_typename]
            self._write_storage(layout.storage_key, layout.storage_data, storage_class)

    def _write_storage_value(self, value: Storage) -> None:
        array = value.array
        root = root_of(array)
        whole = root.size == array.size and root.dtype == array.dtype
        if whole and root is not array:
            whole = address_of(root) == address_of(array)
        try:
            element_of(array.dtype)
        except UnsupportedValueError as exc:
            raise UnsupportedValueError(exc.message, self.path()) from None
        cls = CLASSES[value.typename]
        if self.cast is not None:
            cls = self.cast(cls)
        self._write_storage(root if whole else array, array, cls)

    def _write_foreign(self, value: Any) -> None:
        """A value of another library (a torch tensor), written by that library's adapter."""
        handler = foreign_handler(self, type(value))
        if handler is None:  # claimed when the type was first met
            raise UnsupportedValueError(f"cannot write a {type(value).__name__}", self.path())
        handler(value)

    # Tensors and storages of a compressed file read lazily (streamser.open): written exactly as
    # their arrays would be once read in full (materialize(..., whole=True)), but streamed from
    # the file a chunk at a time, so that converting a compressed file never holds a storage.

    def _write_any_storage(self, value: Storage) -> None:
        if isinstance(value.array, LazyStorage):
            self._write_lazy_storage(value)
        else:
            self._write_storage_value(value)

    def _write_lazy_storage(self, value: Storage) -> None:
        cls = CLASSES[value.typename]
        storage: Any = value.array  # a LazyStorage: its identity is the storage's
        self._write_storage(storage, storage, cls if self.cast is None else self.cast(cls))

    def _write_lazy_tensor(self, value: LazyArray) -> None:
        storage: Any = value.storage
        try:
            element = element_of(storage.dtype)
        except UnsupportedValueError as exc:
            raise UnsupportedValueError(exc.message, self.path()) from None
        if not self._begin(TAG_TORCH, self._original, self._memo):
            return
        cls = class_for_array(storage, element, tensor=True)  # a CUDA class is remembered
        cls = cls if self.cast is None else self.cast(cls)
        self._write_class_header(cls.typename, 1)
        sizes, strides, offset, data = _lazy_layout(value, compact=self.compact)
        self.encoder.write_geometry(sizes, strides, offset)
        if data is None:
            self.encoder.write_int(TAG_NIL)
        else:
            self._write_storage(data, data, CLASSES[cls.storage_typename])

    def _write_storage(self, key: Any, data: Array | ChunkSource, cls: TorchClass) -> None:
        if self._begin(TAG_TORCH, key, self._storages):
            self._write_class_header(cls.typename, 1)
            self.encoder.write_long(int(data.size))
            self.encoder.write_array(cls.element, data)


_Handler = Callable[[GraphWriter, Any], None]

# Plain functions, not bound methods (see the module docstring), by exact type.
_HANDLERS: dict[type, _Handler] = {
    type(None): GraphWriter._write_nil,
    bool: GraphWriter._write_boolean,
    int: GraphWriter._write_integer,
    float: GraphWriter._write_number,
    str: GraphWriter._write_str,
    bytes: GraphWriter._write_bytes,
    bytearray: GraphWriter._write_bytes,
    dict: GraphWriter._write_dict,
    list: GraphWriter._write_list,
    tuple: GraphWriter._write_list,
    LuaTable: GraphWriter._write_lua_table,
    TorchObject: GraphWriter._write_torch_object,
    TableStream: GraphWriter._write_table_stream,
    LuaFunction: GraphWriter._write_function,
    Storage: GraphWriter._write_any_storage,
    np.ndarray: GraphWriter._write_tensor,
    LazyArray: GraphWriter._write_lazy_tensor,
}
_write_registered: _Handler = GraphWriter._write_registered
_write_foreign: _Handler = GraphWriter._write_foreign

# For types not in the table: the first ancestor (or abstract base) that says how to write it.
_ANCESTORS: tuple[tuple[Any, _Handler], ...] = (
    ((bool, np.bool_), GraphWriter._write_boolean),
    (np.ndarray, GraphWriter._write_tensor),
    (numbers.Integral, GraphWriter._write_integer),
    (numbers.Real, GraphWriter._write_number),
    (str, GraphWriter._write_str),
    ((bytes, bytearray, memoryview), GraphWriter._write_bytes),
    (LuaTable, GraphWriter._write_lua_table),
    (Mapping, GraphWriter._write_dict),
    ((list, tuple), GraphWriter._write_list),
    (TorchObject, GraphWriter._write_torch_object),
    (LuaFunction, GraphWriter._write_function),
    (Storage, GraphWriter._write_any_storage),
    (LazyArray, GraphWriter._write_lazy_tensor),
)
_TABLE_HANDLERS = frozenset(
    {GraphWriter._write_dict, GraphWriter._write_lua_table, GraphWriter._write_list,
     GraphWriter._write_table_stream}
)  # fmt: skip


def _by_ancestry(kind: type) -> _Handler | None:
    for bases, handler in _ANCESTORS:
        if issubclass(kind, bases):
            return handler
    return None


def _handler_of(value: Any) -> _Handler | None:
    kind = type(value)
    if codec_of(kind) is not None:
        return _write_registered
    return _HANDLERS.get(kind) or _by_ancestry(kind)


def codec_of(kind: type) -> ClassCodec | None:
    """The registered codec of ``kind`` or of its nearest registered ancestor."""
    if not CODEC_OF_TYPE:
        return None
    for ancestor in kind.__mro__:
        codec = CODEC_OF_TYPE.get(ancestor)
        if codec is not None:
            return codec
    return None


class CompiledState(NamedTuple):
    """What the compiled loop (``_fastwrite.write_graph``) works on, handed over explicitly.

    It writes records into ``buffer`` (the sink's, drained by ``drain`` once it holds
    ``target`` bytes), numbers objects from ``count``, keeps the two memos' ``entries`` in
    their documented layout (see :mod:`.memo`), mirrors its frames on ``stack`` (placeholder
    :class:`_Frame` objects, so that errors raised in Python name the path) and, with
    ``referenced=False``, the ids in ``active``. It numbers objects on from ``indexed``. Every
    value it does not write itself goes to ``write_nested(value, count) -> count``;
    ``set_count`` takes its count when it returns.
    """

    buffer: bytearray
    drain: Callable[[], None]
    target: int
    referenced: bool
    indexed: int  # indices handed out so far (the writer's count)
    memo: IdentityMemo  # tables, objects, functions, tensors -> index
    memo_entries: dict[int, tuple[Any, Any]]
    storages: IdentityMemo  # storage roots -> index
    storage_entries: dict[int, tuple[Any, Any]]
    stack: list[_Frame]
    active: set[int]
    write_nested: Callable[[Any, int], int]
    set_count: Callable[[int], None]
    class_header: Callable[[str, int | float], bytes]
    tensor_headers: tuple[bytes | None, ...]  # per element type, in _FAST_ELEMENTS order
    storage_headers: tuple[bytes | None, ...]
    long_size: int
    threshold: int  # strings and arrays from this size go through Python (write_large)


class WriterHooks(NamedTuple):
    """Set up once: the frame type it mirrors and its label slot, the label of keys, and the
    memo's ``forget`` (for the weak references it makes)."""

    frame_type: type[_Frame]
    frame_label: MemberDescriptorType
    key_label: object
    forget: Callable[[Any, int], None]


def _lazy_layout(
    tensor: LazyArray, *, compact: bool
) -> tuple[tuple[int, ...], tuple[int, ...], int, Any]:
    """(sizes, strides, offset, storage or None) of a lazy tensor, as ``layout_of`` gives them
    for the array it reads as: the strides it was read with; a tensor without elements keeps
    only its offset; ``compact`` makes the elements a storage of their own, unless the tensor
    shows memory more than once (stride 0), which keeps its storage rather than expand."""
    storage = tensor.storage
    if tensor.size == 0:
        if compact or storage.count == 0 or tensor.offset > storage.count:
            return (), (), 0, None
        return (), (), tensor.offset, storage
    first, end = tensor.span()
    if compact and end - first >= tensor.size:
        return tensor.shape, contiguous_strides(tensor.shape), 0, tensor
    return tensor.shape, tuple(tensor.strides), tensor.offset, storage


def _lua_number_text(value: int | float) -> bytes:
    """How Lua's ``tostring`` prints a version number (``%.14g``)."""
    if isinstance(value, int) or float(value).is_integer():
        return b"%d" % int(value)
    return b"%.14g" % value


if _FAST is not None:
    _FAST.setup(native_layout(), WriterHooks(_Frame, vars(_Frame)["label"], _KEY, forget))
