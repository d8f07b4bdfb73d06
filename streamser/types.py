"""The option strings of the public API as ``Literal`` types, so that a type checker catches a
misspelt option (``format="asci"``, ``serial="lite"``) before it fails at run time.

>>> import typing
>>> typing.get_args(FormatName)
('binary', 'b64', 'b32', 'ascii')
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, TypeAlias

FormatName: TypeAlias = Literal["binary", "b64", "b32", "ascii"]
"""A ``.t7`` encoding: ``binary`` (8-byte longs, as ``b64``), ``b32`` (4-byte longs), ``ascii``."""

SerialMode: TypeAlias = Literal["heavy", "medium", "light"]
"""How much of an nn module is written, as dpnn's ``nn.Serial``: everything, no training
buffers, no gradients either (:mod:`streamser.tools.serial`)."""

Compression: TypeAlias = Literal["zstd"]
"""The compressed container: ``zstd``, in the seekable zstd format."""

CastSpec: TypeAlias = str | Mapping[str, str]
"""A cast (:func:`streamser.tools.cast.resolve_cast`): ``"cpu"``, ``"float32"``,
``"cpu+float16"``, ``"torch.BoolTensor=torch.ByteTensor"``, or a mapping of class names. Casts
join with ``+``, so this one stays a string."""

__all__ = ["CastSpec", "Compression", "FormatName", "SerialMode"]
