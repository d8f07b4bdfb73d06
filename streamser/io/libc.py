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
    except (OSError, AttributeError, TypeError):  # TypeError: no C library by that name (Windows)
        return None
    function.argtypes = list(argtypes)
    function.restype = restype
    result: Callable[..., int] = function
    return result


def file_system_type(fd: int) -> int | None:
    """The ``f_type`` of the file system holding ``fd`` (``fstatfs``), or None where unknown."""
    import ctypes
    import sys

    signature = (ctypes.c_int, ctypes.c_void_p)
    fstatfs = libc_function("fstatfs64", signature, ctypes.c_int)  # glibc
    if fstatfs is None and sys.maxsize > 2**32:  # musl: fstatfs is the 64-bit one
        fstatfs = libc_function("fstatfs", signature, ctypes.c_int)
    if fstatfs is None:
        return None
    result = ctypes.create_string_buffer(256)  # struct statfs64 is 120 bytes on 64-bit Linux
    if fstatfs(fd, result) != 0:
        return None
    return ctypes.c_long.from_buffer(result).value & 0xFFFFFFFF  # f_type, the first field
