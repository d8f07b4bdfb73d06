"""Types of the compiled graph reader (``_fastread.c``); see ``streamser.graph.reader``."""

from collections.abc import Callable
from typing import Any

def configure(
    table_type: type,
    object_type: type,
    storage_type: type,
    hash_key: Callable[[Any], Any],
    remember_class: Callable[[Any, Any], None],
    class_name: Callable[[bytes], str],
    incomplete: object,
    classes: list[tuple[Any, ...]],
    /,
) -> None: ...
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
    /,
) -> tuple[Any, int, int, int] | None: ...
