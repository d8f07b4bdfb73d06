"""Linux system calls Python's ``os`` module does not offer, found in the C library on first use.

``import ctypes`` and the library lookup cost a few milliseconds, so they happen the first
time a save asks for one of these calls, never at ``import streamser``. Each function comes
back with ``use_errno`` set, so a caller can read ``ctypes.get_errno()`` after a failure.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any


@cache
def libc_function(name: str, argtypes: tuple[Any, ...], restype: Any) -> Callable[..., int] | None:
    """The C library's ``name`` with the given ctypes signature, or None where it has none.

    ``argtypes`` and ``restype`` are ctypes types (``ctypes.c_int``...); callers import
    ctypes lazily, as this module does.
    """
    import ctypes

    try:
        library = ctypes.CDLL(None, use_errno=True)  # the C library the interpreter links
        function = getattr(library, name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = restype
    result: Callable[..., int] = function
    return result
