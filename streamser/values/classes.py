"""Torch classes that write their own payload: the registry, and tds.Hash / tds.Vec built in.

A Torch class without a ``write`` method of its own is written as one table of its fields, and
streamser reads any such class, known or not, as a :class:`~streamser.values.lua.TorchObject`.
A class with its own ``__write`` / ``__read`` (Lua's ``tds`` containers, custom classes) lays out
its payload as it likes; streamser cannot guess that layout, so it refuses such a payload with
an error naming the class, and reads it once a :class:`ClassCodec` is registered for the name.

Nearly every such payload is some numbers or strings followed by a number of objects (tds.Hash:
a long ``n``, then ``n`` keys and values). A codec says exactly that much:

* :meth:`ClassCodec.read_head` reads the numbers and strings (in whatever format the stream
  has) and returns a new, empty value and how many objects follow;
* :meth:`ClassCodec.fill` puts those objects, once read, into the value;
* :meth:`ClassCodec.write_head` writes the numbers and strings of a value and returns the
  objects that follow.

The objects themselves are read and written by streamser, so they may be anything (tensors,
tables, other registered classes), they are shared and back-referenced as usual, the value is
registered before them (cycles load), and every consumer follows the same codec: ``load``, the
lazy index of ``open``, ``streamser dis`` and ``verify``, and the writer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Protocol

from ..spec.grammar import PayloadReader
from .lua import LuaTable


class PayloadWriter(Protocol):
    """What a registered class writes at the head of its payload (the writer's encoder)."""

    def write_int(self, value: int) -> None: ...
    def write_long(self, value: int) -> None: ...
    def write_double(self, value: float) -> None: ...
    def write_string(self, data: bytes) -> None: ...


class ClassCodec(ABC):
    """How one Torch class that writes its own payload is read and written.

    Subclass it, set :attr:`typename` (the class name in files) and :attr:`python_type` (the type
    its values are read as, and recognised by when written), and register an instance with
    :func:`register_class`. See :class:`TdsHashCodec` for a complete one in a dozen lines.
    """

    typename: ClassVar[str]
    python_type: ClassVar[type]
    version: ClassVar[int | float] = 0  # written in the class header as "V <version>"

    @abstractmethod
    def read_head(self, payload: PayloadReader, version: int | float) -> tuple[Any, int]:
        """Read the payload's own numbers and strings; a new empty value, and how many objects
        follow it in the stream."""

    @abstractmethod
    def fill(self, value: Any, objects: list[Any]) -> None:
        """Put the objects read after the head into ``value`` (the one ``read_head`` made)."""

    @abstractmethod
    def write_head(self, value: Any, payload: PayloadWriter) -> Iterable[Any]:
        """Write the numbers and strings of ``value``'s payload; the objects that follow."""


CLASS_CODECS: dict[str, ClassCodec] = {}  # class name in files -> codec
CODEC_OF_TYPE: dict[type, ClassCodec] = {}  # python_type -> codec, for the writer


def register_class(codec: ClassCodec) -> ClassCodec:
    """Read and write ``codec.typename`` with ``codec`` from now on (replacing any earlier one).

    >>> class Pair(list): ...
    >>> class PairCodec(ClassCodec):
    ...     typename, python_type = "my.Pair", Pair
    ...     def read_head(self, payload, version): return Pair(), 2
    ...     def fill(self, value, objects): value.extend(objects)
    ...     def write_head(self, value, payload): return list(value)
    >>> _ = register_class(PairCodec())
    >>> import streamser
    >>> streamser.deserialize(streamser.serialize(Pair(["a", 1])))
    ['a', 1]
    >>> _ = unregister_class("my.Pair")
    """
    previous = CLASS_CODECS.get(codec.typename)
    if previous is not None:
        CODEC_OF_TYPE.pop(previous.python_type, None)
    CLASS_CODECS[codec.typename] = codec
    CODEC_OF_TYPE[codec.python_type] = codec
    return codec


def unregister_class(typename: str) -> ClassCodec | None:
    """Forget the codec of ``typename``; its payloads are refused again. The codec, if any."""
    codec = CLASS_CODECS.pop(typename, None)
    if codec is not None:
        CODEC_OF_TYPE.pop(codec.python_type, None)
    return codec


# --- tds (torch/tds): hash.lua and vec.lua ---------------------------------------------------


class TdsHash(LuaTable):
    """A ``tds.Hash``: a mapping (string and number keys) kept apart from Lua tables only so
    that it is written back as a ``tds.Hash``; entries keep the file's order."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TdsHash" + super().__repr__().removeprefix("LuaTable")


class TdsVec(list[Any]):
    """A ``tds.Vec``: a list (Lua counts its elements from 1, as ``f["v"][1]`` does)."""

    __slots__ = ("__weakref__",)

    def __repr__(self) -> str:
        return f"TdsVec({super().__repr__()})"


class TdsHashCodec(ClassCodec):
    """``hash:__write``: ``writeLong(#self)``, then each key and value as an object."""

    typename = "tds.Hash"
    python_type = TdsHash

    def read_head(self, payload: PayloadReader, version: int | float) -> tuple[Any, int]:
        return TdsHash(), 2 * payload.read_long()

    def fill(self, value: Any, objects: list[Any]) -> None:
        pairs = iter(objects)
        for key in pairs:
            value[key] = next(pairs)

    def write_head(self, value: Any, payload: PayloadWriter) -> Iterator[Any]:
        payload.write_long(len(value))
        return (part for pair in value.items() for part in pair)


class TdsVecCodec(ClassCodec):
    """``vec:__write``: ``writeLong(#self)``, then each element as an object."""

    typename = "tds.Vec"
    python_type = TdsVec

    def read_head(self, payload: PayloadReader, version: int | float) -> tuple[Any, int]:
        return TdsVec(), payload.read_long()

    def fill(self, value: Any, objects: list[Any]) -> None:
        value.extend(objects)

    def write_head(self, value: Any, payload: PayloadWriter) -> Iterator[Any]:
        payload.write_long(len(value))
        return iter(value)


register_class(TdsHashCodec())
register_class(TdsVecCodec())

__all__ = [
    "ClassCodec",
    "PayloadWriter",
    "TdsHash",
    "TdsHashCodec",
    "TdsVec",
    "TdsVecCodec",
    "register_class",
    "unregister_class",
]
