"""Sizes and durations as people write and read them: ``64M`` in, ``1.00 GiB`` out."""

from __future__ import annotations

import re

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes in ``text``: a number with an optional binary suffix (``512M``, ``4G``, ``1.5GiB``).

    >>> parse_size("64M"), parse_size("4G"), parse_size("1000")
    (67108864, 4294967296, 1000)
    """
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (expected e.g. 64M, 1G, 512MiB)")
    number, unit = match.groups()
    return int(float(number) * _UNITS[unit.upper()])


def parse_sizes(text: str) -> list[int]:
    """A comma-separated list of sizes, e.g. ``256M,1G,4G``."""
    return [parse_size(part) for part in text.split(",") if part.strip()]


def format_bytes(count: float | None) -> str:
    """A byte count in binary units, 3 significant digits: ``1.00G``, ``512M``, ``-3.2M``.

    >>> format_bytes(1 << 30), format_bytes(3 * (1 << 19)), format_bytes(None)
    ('1.00G', '1.50M', '-')
    """
    if count is None:
        return "-"
    sign = "-" if count < 0 else ""
    value = abs(float(count))
    for unit in ("B", "K", "M", "G", "T"):
        if value < 1000 or unit == "T":
            break
        value /= 1024
    if unit == "B":
        return f"{sign}{value:.0f}B"
    return f"{sign}{_three_digits(value)}{unit}"


def _three_digits(value: float) -> str:
    digits = 2 if value < 10 else 1 if value < 100 else 0
    return f"{value:.{digits}f}"


def format_seconds(seconds: float | None) -> str:
    """A duration with 3 significant digits: ``12.3ms``, ``1.23s``.

    >>> format_seconds(0.01234), format_seconds(1.234), format_seconds(123.4)
    ('12.3ms', '1.23s', '123s')
    """
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{_three_digits(seconds * 1000)}ms"
    return f"{_three_digits(seconds)}s"


def format_rate(amount: float, seconds: float | None, unit: str) -> str:
    """``amount`` per second: ``GB/s`` (10^9 bytes) for ``unit="bytes"``, else ``k rec/s``.

    >>> format_rate(2e9, 1.0, "bytes"), format_rate(50000, 0.5, "records")
    ('2.00GB/s', '100k rec/s')
    """
    if not seconds or seconds <= 0:
        return "-"
    rate = amount / seconds
    if unit == "bytes":
        if rate >= 1e8:
            return f"{_three_digits(rate / 1e9)}GB/s"
        return f"{_three_digits(rate / 1e6)}MB/s"
    if rate >= 1e3:
        return f"{_three_digits(rate / 1e3)}k rec/s"
    return f"{_three_digits(rate)} rec/s"
