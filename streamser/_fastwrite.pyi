"""The compiled record loop of the binary graph writer (see ``streamser/_fastwrite.c``)."""

from typing import Any

def setup(
    frame_type: type,
    key_label: object,
    lua_table: type,
    torch_object: type,
    class_of_root: dict[int, Any],
    /,
) -> None: ...
def write_graph(writer: Any, value: Any, config: tuple[Any, ...], /) -> None: ...
