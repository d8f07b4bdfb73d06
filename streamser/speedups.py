"""The optional compiled record loops, and the switch that turns them off.

``streamser._fastread`` and ``streamser._fastwrite`` are C versions of the graph reader's and
writer's inner loops for binary streams. They are an accelerator, never a second definition of
the format: for anything outside their fast path they hand over to the pure-Python reader and
writer, which remain the reference (the test suite runs both and compares them).

Set ``STREAMSER_PURE=1`` in the environment to use pure Python only (the module is read once,
at import).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

PURE = os.environ.get("STREAMSER_PURE", "") not in ("", "0")


def compiled(name: str) -> ModuleType | None:
    """The compiled module ``streamser.<name>``, or None if it is missing or switched off."""
    if PURE:
        return None
    try:
        return importlib.import_module(f"streamser.{name}")
    except ImportError:
        return None
