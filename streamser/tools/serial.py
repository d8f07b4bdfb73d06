"""Serialization modes of dpnn's ``nn.Serial``, applied while writing: heavy, medium, light.

heavy writes everything. medium empties what nn's ``clearState()`` and dpnn's ``mediumEmpty``
clear: ``output``, ``gradInput`` and each class's training buffers. light also empties
``gradWeight`` and ``gradBias``, keeping only parameters (weights, biases, BatchNorm running
statistics, which no list names). An emptied tensor is written as an empty tensor of the same
class (nDimension 0, no storage: what Torch writes after ``:set()``), an emptied table as ``{}``,
and any other emptied value is left out, as ``nn.utils.clear`` does.

The caller's objects are never changed: the writer's hook hands it a stripped copy of each
module, and reference tracking stays keyed on the original, so shared parameters stay shared
and a buffer shared by several modules is emptied once and written once.

The field lists are data: extend them with :func:`add_serial_fields`. A module can also
declare its own, as in dpnn, with ``dpnn_mediumEmpty`` / ``dpnn_lightEmpty`` fields listing
names.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..graph.memo import IdentityMemo
from ..io.arrays import root_of
from ..spec.format import element_of
from ..values.lazy import LazyArray
from ..values.lua import LuaTable, TorchObject, remember_class, remembered_class
from ..values.tensors import empty_tensor

MODES = ("heavy", "medium", "light")
MODULE_PREFIXES = ("nn.", "cudnn.", "cunn.", "dpnn.", "nngraph.", "rnn.")

_CONVOLUTION_BUFFERS = ("finput", "fgradInput", "_input", "_gradOutput")
_CONVOLUTIONS = (
    "nn.SpatialConvolution",
    "nn.SpatialConvolutionMM",
    "nn.SpatialConvolutionLocal",
    "nn.SpatialFullConvolution",
    "nn.SpatialDilatedConvolution",
    "nn.VolumetricConvolution",
    "nn.VolumetricFullConvolution",
    "nn.VolumetricDilatedConvolution",
    "nn.TemporalConvolution",
    "cudnn.SpatialConvolution",
    "cudnn.SpatialFullConvolution",
    "cudnn.VolumetricConvolution",
    "cudnn.TemporalConvolution",
)
_BATCH_NORM_BUFFERS = (
    "buffer",
    "buffer2",
    "centered",
    "std",
    "normalized",
    "save_mean",
    "save_std",
    "_input",
    "_gradOutput",
)
_BATCH_NORMS = (
    "nn.BatchNormalization",
    "nn.SpatialBatchNormalization",
    "nn.VolumetricBatchNormalization",
    "cudnn.BatchNormalization",
    "cudnn.SpatialBatchNormalization",
    "cudnn.VolumetricBatchNormalization",
)
_POOLINGS_WITH_INDICES = (
    "nn.SpatialMaxPooling",
    "nn.VolumetricMaxPooling",
    "nn.TemporalMaxPooling",
    "nn.SpatialAdaptiveMaxPooling",
    "nn.SpatialFractionalMaxPooling",
    "cudnn.SpatialMaxPooling",
)

# mode -> class name ("*" for every module) -> fields that mode empties (light adds to medium).
SERIAL_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "medium": {
        "*": ("output", "gradInput", "momGradParams", "dpnn_input"),
        "nn.Linear": ("addBuffer",),
        "nn.Bilinear": ("buff1", "buff2"),
        "nn.Dropout": ("noise",),
        "nn.SpatialDropout": ("noise",),
        "nn.VolumetricDropout": ("noise",),
        "nn.CMul": ("_output", "_weight", "_expand", "_repeat", "_sum"),
        "nn.Normalize": ("_output", "norm", "normp", "buffer", "cross", "_indices"),
        **dict.fromkeys(_CONVOLUTIONS, _CONVOLUTION_BUFFERS),
        **dict.fromkeys(_BATCH_NORMS, _BATCH_NORM_BUFFERS),
        **dict.fromkeys(_POOLINGS_WITH_INDICES, ("indices",)),
    },
    "light": {"*": ("gradWeight", "gradBias")},
}

_DECLARED = {"medium": ("dpnn_mediumEmpty",), "light": ("dpnn_mediumEmpty", "dpnn_lightEmpty")}


def add_serial_fields(mode: str, typename: str, *fields: str) -> None:
    """Make ``mode`` (medium or light) also empty ``fields`` of ``typename`` (``"*"``: any)."""
    if mode not in ("medium", "light"):
        raise ValueError(f"mode must be 'medium' or 'light', not {mode!r}")
    current = SERIAL_FIELDS[mode].get(typename, ())
    SERIAL_FIELDS[mode][typename] = current + tuple(f for f in fields if f not in current)


def is_module(value: Any) -> bool:
    return isinstance(value, TorchObject) and value.typename.startswith(MODULE_PREFIXES)


def fields_to_empty(mode: str, module: TorchObject) -> set[str]:
    """The field names ``mode`` empties in ``module``."""
    modes = ("medium", "light") if mode == "light" else ("medium",) if mode == "medium" else ()
    names: set[str] = set()
    for each in modes:
        table = SERIAL_FIELDS[each]
        names.update(table.get("*", ()), table.get(module.typename, ()))
    fields = module.fields
    if isinstance(fields, Mapping):
        for declared in _DECLARED.get(mode, ()):
            listed = fields.get(declared)
            if isinstance(listed, Mapping):
                names.update(v for v in listed.values() if isinstance(v, str))
            elif isinstance(listed, (list, tuple)):
                names.update(v for v in listed if isinstance(v, str))
    return names


def serial_hook(mode: str) -> Callable[[Any], Any] | None:
    """A write hook that strips modules for ``mode``, or None for heavy (nothing to do)."""
    if mode not in MODES:
        raise ValueError(f"serial must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == "heavy":
        return None
    emptied = IdentityMemo()  # original -> its empty replacement, shared by every module

    def empty_like(value: Any) -> Any:
        replacement = emptied.get(value)
        if replacement is None:
            if isinstance(value, (np.ndarray, LazyArray)):  # lazy: of a compressed file
                replacement = empty_tensor(element_of(value.dtype))
                root: Any = value.storage if isinstance(value, LazyArray) else root_of(value)
                cls = remembered_class(root)
                if cls is not None:  # keep a CUDA class name
                    remember_class(replacement, cls)
            else:
                replacement = LuaTable()
            emptied.put(value, replacement)
        return replacement

    def strip(value: Any) -> Any:
        if not is_module(value) or not isinstance(value.fields, Mapping):
            return value
        names = fields_to_empty(mode, value)
        fields = value.fields
        if not any(name in fields for name in names):
            return value
        stripped = LuaTable()
        for key, field in fields.items():
            if key in names and isinstance(key, str):
                if isinstance(field, (np.ndarray, LazyArray, LuaTable, Mapping, list, tuple)):
                    stripped[key] = empty_like(field)
                # anything else is left out, as nn.utils.clear sets it to nil
            else:
                stripped[key] = field
        return TorchObject(value.typename, stripped, value.version)

    return strip
