"""Element conversion while streaming: one chunk of an array to another element type."""

from __future__ import annotations

from typing import Any

import numpy as np

_HALF_NAN = np.uint16(0x7FFF)  # Torch7's float-to-half conversion turns every NaN into this


def convert_chunk(chunk: np.ndarray[Any, Any], dtype: np.dtype[Any]) -> np.ndarray[Any, Any]:
    """``chunk`` in ``dtype``, as Torch7 converts: wrapping integers, NaN halves as 0x7fff."""
    with np.errstate(over="ignore", invalid="ignore"):
        converted = chunk.astype(dtype)
    if dtype.kind == "f" and dtype.itemsize == 2 and chunk.dtype.kind == "f":
        converted.view(np.uint16)[np.isnan(chunk)] = _HALF_NAN
    return converted
