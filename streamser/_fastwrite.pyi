"""The compiled record loop of the binary graph writer (see ``streamser/_fastwrite.c``)."""

from typing import Any

from streamser.graph.writer import CompiledState, WriterHooks
from streamser.values.lua import NativeLayout

def setup(layout: NativeLayout, hooks: WriterHooks, /) -> None: ...
def write_graph(value: Any, state: CompiledState, /) -> None: ...
