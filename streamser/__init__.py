"""streamser: read and write Lua Torch7 ``.t7`` files, byte for byte, lazily and in bounded memory.

>>> import numpy as np, streamser
>>> data = streamser.serialize({"w": np.arange(3, dtype=np.float32)})
>>> streamser.deserialize(data)["w"]
array([0., 1., 2.], dtype=float32)
"""

from __future__ import annotations

from .api import deserialize, load, save, serialize
from .errors import (
    AmbiguousFormatError,
    FormatError,
    LimitError,
    StreamserError,
    TruncatedError,
    UnsupportedValueError,
)
from .graph.paths import PathError, format_path, parse_path
from .handle import T7File, TensorInfo, open
from .spec.format import FORMATS
from .streams import Reader, Writer
from .tools import serial as serial
from .tools.serial import add_serial_fields
from .values.classes import ClassCodec, TdsHash, TdsVec, register_class, unregister_class
from .values.lua import LuaFunction, LuaTable, Storage, TableStream, TorchObject

__version__ = "0.1.0"

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
