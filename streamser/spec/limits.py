"""Bounds on what one read may build, and the error that names the keyword to raise them."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import LimitError


@dataclass(frozen=True)
class Limits:
    """Bounds on what one read may build, each overridable by its keyword in ``load``,
    ``deserialize``, ``open`` and ``Reader``; the error for a limit names its keyword.

    Every length is also checked against the bytes that exist before anything is allocated;
    these bounds are for inputs that are long *and* hostile. Real checkpoints (the corpus, a
    model of 100,000 modules) stay far inside them.
    """

    max_depth: int = 100_000  # nested tables / objects / functions
    max_string: int = 1 << 30  # bytes in one Lua string
    max_table: int = 1 << 26  # entries in one table
    max_objects: int = 1 << 26  # tables, torch objects and functions in one value
    max_decompressed: int = 64 << 30  # bytes a zstd-compressed input may expand to

    @classmethod
    def from_keywords(cls, **values: int) -> Limits:
        """Limits from keyword arguments, refusing names that are not limits."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(
                f"unknown limit {unknown[0]!r}; the limits are {', '.join(sorted(known))}"
            )
        for name, value in values.items():
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, not {value!r}")
        return cls(**values)


def limit_error(what: str, keyword: str, limit: int, at: int) -> LimitError:
    return LimitError(
        f"{what} is over {keyword}={limit:,}; pass a larger {keyword}= if the file is trusted", at
    )


def depth_error(limit: int, at: int) -> LimitError:
    return LimitError(
        f"values nest deeper than max_depth={limit}; pass a larger max_depth= if the file is "
        "trusted",
        at,
    )
