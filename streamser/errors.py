"""The one exception family of streamser.

Every problem with input bytes raises a :class:`FormatError` (a ``ValueError``) carrying the
byte offset where it was found; problems with values handed to the writer raise
:class:`UnsupportedValueError` (also a ``TypeError``) naming the path to the value. Callers can
catch :class:`StreamserError` for everything, or the builtin they already expect.
"""

from __future__ import annotations


class StreamserError(ValueError):
    """Base class of every error streamser raises on purpose."""


class FormatError(StreamserError):
    """The input is not a valid Torch7 stream. ``offset`` is the byte position, when known."""

    def __init__(self, message: str, offset: int | None = None) -> None:
        self.message = message
        self.offset = offset
        where = f" (at byte {offset})" if offset is not None else ""
        super().__init__(message + where)


class TruncatedError(FormatError, EOFError):
    """The input ended in the middle of a value."""


class LimitError(FormatError):
    """The input asks for more than a configured limit allows (nesting, lengths, objects)."""


class AmbiguousFormatError(FormatError):
    """Format detection found more than one reading of the input; pass ``format=``."""


class UnsupportedValueError(StreamserError, TypeError):
    """A Python value that cannot be written as a Torch7 value. ``path`` locates it."""

    def __init__(self, message: str, path: str = "") -> None:
        self.message = message
        self.path = path
        where = f" at {path}" if path else ""
        super().__init__(message + where)
