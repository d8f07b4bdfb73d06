"""Types of the compiled graph reader (``_fastread.c``); see ``streamser.graph.reader``."""

from typing import Any

from streamser.graph.reader import ReaderHooks
from streamser.values.lua import NativeLayout

def configure(layout: NativeLayout, hooks: ReaderHooks, /) -> None: ...
def read(
    buffer: memoryview,
    pos: int,
    long_size: int,
    longs_read: int,
    indexed: int,
    objects: dict[int, Any],
    referenced: bool,
    max_depth: int,
    max_string: int,
    max_table: int,
    max_objects: int,
    notes: tuple[list[Any], list[Any], list[Any], list[Any], set[int]] | None,
    keep_objects: bool,
    /,
) -> tuple[Any, ...] | None: ...
