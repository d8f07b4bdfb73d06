"""Encodings of the primitives (int, long, double, raw bytes, arrays): binary and ascii.

The object graph code talks to a decoder or encoder through the same small set of methods and
never asks which encoding it has.
"""

from __future__ import annotations

from typing import Any

from ..io.sink import Sink
from ..spec.format import Format
from .ascii import AsciiDecoder, AsciiEncoder
from .binary import BinaryDecoder, BinaryEncoder

Decoder = BinaryDecoder | AsciiDecoder
Encoder = BinaryEncoder | AsciiEncoder


def decoder_for(fmt: Format, buffer: Any, pos: int = 0) -> Decoder:
    if fmt.ascii:
        return AsciiDecoder(buffer, pos)
    return BinaryDecoder(buffer, fmt.long_size, pos)


def encoder_for(fmt: Format, sink: Sink) -> Encoder:
    if fmt.ascii:
        return AsciiEncoder(sink)
    return BinaryEncoder(sink, fmt.long_size)


__all__ = [
    "AsciiDecoder",
    "AsciiEncoder",
    "BinaryDecoder",
    "BinaryEncoder",
    "Decoder",
    "Encoder",
    "decoder_for",
    "encoder_for",
]
