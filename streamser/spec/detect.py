"""Telling inputs apart by their first bytes: ascii or binary, and files that are not Torch7's.

A Torch7 stream has no magic number: a binary one starts with a small little-endian type tag
(0 to 8, then three zero bytes), an ascii one with a printed number. Other formats announce
themselves, and people hand them to a ``.t7`` reader all the time (a PyTorch ``.pth`` is the
classic); :func:`foreign_format` names them, so that the error says what the file is and what
reads it, instead of "unknown type tag 67324752".
"""

from __future__ import annotations

from typing import Any, Final

from ..errors import FormatError, TruncatedError

ASCII_FIRST_BYTES = frozenset(b"0123456789+- \t\r\n")

# (magic, what it is, what to use instead), tried in order.
_SIGNATURES: Final = (
    (
        b"PK\x03\x04",
        "a zip archive: a PyTorch checkpoint (.pt, .pth) or a numpy .npz",
        "read it with torch.load (PyTorch) or numpy.load (.npz)",
    ),
    (b"PK\x05\x06", "an empty zip archive", "it holds nothing to load"),
    (b"\x93NUMPY", "a numpy .npy array", "read it with numpy.load"),
    (
        b"\x89HDF\r\n\x1a\n",
        "an HDF5 file (.h5, .hdf5: Keras, MATLAB 7.3, ...)",
        "read it with h5py",
    ),
    (
        b"\x1f\x8b",
        "gzip-compressed data",
        "decompress it first (gunzip, or streamser.deserialize(gzip.decompress(data)))",
    ),
    (b"BZh", "bzip2-compressed data", "decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it first (unxz)"),
)
_PICKLE_PROTOCOLS: Final = frozenset(range(2, 6))
_TEXT_CONTROLS: Final = frozenset(b"\t\n\r\f\v")


def sniff_ascii(buffer: Any, pos: int) -> bool:
    """Ascii streams start with a printed number; binary ones with a small little-endian int."""
    if pos >= len(buffer):
        raise TruncatedError("the input is empty", pos)
    return buffer[pos] in ASCII_FIRST_BYTES


def foreign_format(head: bytes, size: int) -> tuple[str, str] | None:
    """(what the input is, what reads it) when its first bytes say it is not a Torch7 stream.

    ``head`` is the start of the input (a few hundred bytes are plenty), ``size`` its length.
    """
    for magic, what, instead in _SIGNATURES:
        if head.startswith(magic):
            return what, instead
    if len(head) >= 2 and head[0] == 0x80 and head[1] in _PICKLE_PROTOCOLS:
        return (
            "a Python pickle (PyTorch's legacy .pt/.pth format is one)",
            "read it with torch.load (PyTorch) or pickle.load, and only if you trust it",
        )
    if _is_safetensors(head, size):
        return "a safetensors file", "read it with safetensors.safe_open or load_file"
    if _is_text(head):
        return (
            "plain text",
            "an ascii .t7 file starts with a number; check that this is the file you meant",
        )
    return None


class ForeignFormatError(FormatError):
    """The input is a file of another format (its message says which, and what reads it)."""


def refuse_foreign(buffer: Any, start: int, size: int | None = None) -> None:
    """Raise a :class:`FormatError` that names the format if ``buffer`` is not Torch7's
    (``size``: the input's length, when ``buffer`` holds only its start)."""
    head = bytes(memoryview(buffer).cast("B")[start : start + 256])
    found = foreign_format(head, len(buffer) - start if size is None else size)
    if found is not None:
        what, instead = found
        raise ForeignFormatError(f"this is {what}, not a Torch7 file: {instead}", start)


def _is_safetensors(head: bytes, size: int) -> bool:
    """An 8-byte little-endian header length, then that much JSON."""
    if len(head) < 10:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= size - 8 and head[8:9] == b"{"


def _is_text(head: bytes) -> bool:
    """Printable UTF-8 that does not start as an ascii Torch7 stream does."""
    if not head or head[0] in ASCII_FIRST_BYTES or head[0] < 0x20:
        return False
    text = head.decode("utf-8", "ignore")  # a character cut at the end of the head is fine
    if len(text.encode()) < len(head) - 3:
        return False  # not UTF-8
    return all(char.isprintable() or ord(char) in _TEXT_CONTROLS for char in text)
