"""Types of the compiled ascii number loops (``_fastascii.c``); see ``streamser.codecs.ascii``."""

from typing import Any

import numpy as np

def format_numbers(array: np.ndarray[Any, Any], /) -> bytes: ...
def parse_numbers(buffer: Any, pos: int, out: np.ndarray[Any, Any], /) -> int: ...
