"""streamser: read and write Lua Torch7 ``.t7`` files, byte for byte, lazily and in bounded memory.

>>> import numpy as np, streamser
>>> data = streamser.serialize({"w": np.arange(3, dtype=np.float32)})
>>> streamser.deserialize(data)["w"]
array([0., 1., 2.], dtype=float32)
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .api import deserialize, load, save, serialize
from .errors import (
    AmbiguousFormatError,
    FormatError,
    LimitError,
    StreamserError,
    TruncatedError,
    UnsupportedValueError,
)
from .values.lua import LuaFunction, LuaTable, Storage, TableStream, TorchObject

if TYPE_CHECKING:
    from .graph.paths import PathError, format_path, parse_path
    from .handle import T7File, TensorInfo, open
    from .spec.format import FORMATS
    from .streams import Reader, Writer
    from .tools import serial as serial
    from .tools.serial import add_serial_fields
    from .values.classes import ClassCodec, TdsHash, TdsVec, register_class, unregister_class

__version__ = "0.1.0"

# Names whose modules load on first use (module, attribute; None for the module itself), as
# ``load`` and ``save`` import the reader and the writer: ``import streamser`` then costs little
# more than ``import numpy`` (on Python 3.11 each dataclass alone costs about half a millisecond).
_ON_FIRST_USE: dict[str, tuple[str, str | None]] = {
    "FORMATS": (".spec.format", "FORMATS"),
    "open": (".handle", "open"),
    "T7File": (".handle", "T7File"),
    "TensorInfo": (".handle", "TensorInfo"),
    "Reader": (".streams", "Reader"),
    "Writer": (".streams", "Writer"),
    "serial": (".tools.serial", None),
    "add_serial_fields": (".tools.serial", "add_serial_fields"),
    "PathError": (".graph.paths", "PathError"),
    "format_path": (".graph.paths", "format_path"),
    "parse_path": (".graph.paths", "parse_path"),
    "ClassCodec": (".values.classes", "ClassCodec"),
    "TdsHash": (".values.classes", "TdsHash"),
    "TdsVec": (".values.classes", "TdsVec"),
    "register_class": (".values.classes", "register_class"),
    "unregister_class": (".values.classes", "unregister_class"),
}


def __getattr__(name: str) -> Any:
    """Import the module behind one of the names above when it is first asked for."""
    if name not in _ON_FIRST_USE:
        raise AttributeError(f"module 'streamser' has no attribute {name!r}")
    module_name, attribute = _ON_FIRST_USE[name]
    module = import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


__all__ = [
    "FORMATS",
    "AmbiguousFormatError",
    "ClassCodec",
    "FormatError",
    "LimitError",
    "LuaFunction",
    "LuaTable",
    "PathError",
    "Reader",
    "Storage",
    "StreamserError",
    "T7File",
    "TableStream",
    "TdsHash",
    "TdsVec",
    "TensorInfo",
    "TorchObject",
    "TruncatedError",
    "UnsupportedValueError",
    "Writer",
    "__version__",
    "add_serial_fields",
    "deserialize",
    "format_path",
    "load",
    "open",
    "parse_path",
    "register_class",
    "save",
    "serialize",
    "unregister_class",
]
