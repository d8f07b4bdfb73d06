"""The optional compiled record loops, and the one switch that turns them off.

``streamser._fastread`` and ``streamser._fastwrite`` are C versions of the graph reader's and
writer's inner loops for binary streams. They are an accelerator, never a second definition of
the format: for anything outside their fast path they hand over to the pure-Python reader and
writer, which remain the reference (the test suite runs both and compares them). They are given
everything they touch explicitly, through typed arguments (see ``_fastread.pyi`` and
``_fastwrite.pyi``), never by looking up private attribute names.

Set ``STREAMSER_PURE=1`` in the environment to use pure Python only. This module is the only
place that reads the variable, once, at import; :func:`pure_python` switches the loops off for
a while (the tests compare the two that way).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TypeVar

PURE = os.environ.get("STREAMSER_PURE", "") not in ("", "0")

_paused = 0  # depth of pure_python() blocks
_M = TypeVar("_M")


def compiled(name: str) -> ModuleType | None:
    """The compiled module ``streamser.<name>``, or None if it is missing or switched off."""
    if PURE:
        return None
    try:
        return importlib.import_module(f"streamser.{name}")
    except ImportError:
        return None


def active(module: _M | None) -> _M | None:
    """``module`` (a configured compiled loop), unless a :func:`pure_python` block is open."""
    return None if _paused else module


@contextmanager
def pure_python() -> Iterator[None]:
    """Readers and writers made inside the block run in pure Python."""
    global _paused
    _paused += 1
    try:
        yield
    finally:
        _paused -= 1
