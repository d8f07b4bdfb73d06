"""Telling formats apart by their first bytes."""

from __future__ import annotations

from typing import Any

from ..errors import TruncatedError

ASCII_FIRST_BYTES = frozenset(b"0123456789+- \t\r\n")


def sniff_ascii(buffer: Any, pos: int) -> bool:
    """Ascii streams start with a printed number; binary ones with a small little-endian int."""
    if pos >= len(buffer):
        raise TruncatedError("the input is empty", pos)
    return buffer[pos] in ASCII_FIRST_BYTES
