"""cudnn modules written as nn modules, as ``cudnn.convert(model, nn)`` converts them.

``cudnn.convert`` gives each cudnn module of its list the metatable of the nn class of the same
name and copies every field across. streamser writes the nn class too, but leaves out what only
the cudnn class has (``iSize``, ``mode``, ``algorithm``, ``groups``, ``nElem``, the group offsets,
the autotuner's settings; descriptors and workspaces are never in a file: cudnn's ``write``
drops them), renames what changed name (``K`` -> ``k``) and adds what nn's constructor would
create and the cudnn class lacks (``ceil_mode``, ``indices``, ``divide``, ``count_include_pad``,
ReLU's ``threshold`` ...). The result has the fields of the nn module built by nn's constructor,
plus the buffers nn itself keeps, so it loads in CPU Torch and in OpenCV's importer.

Where ``convert`` sets ``count_include_pad`` of average pooling from the wrong variable (always
false), it is taken here from the cudnn module's ``mode``. A convolution with ``groups`` other
than 1 has no nn equivalent and is refused. cudnn modules outside ``convert``'s list (the
RNNs, ``SpatialSoftMax``, ``ClippedReLU``) are written as they are, as ``convert`` leaves them.

The table is data: :data:`CUDNN_TO_NN`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UnsupportedValueError
from ..values.lua import LuaTable, TorchObject
from .serial import empty_replacement

_MODULE = ("output", "gradInput", "_type", "train")  # nn.Module's, and training()'s flag
_KERNEL_2D = ("kW", "kH", "dW", "dH", "padW", "padH")
_KERNEL_3D = ("kT", "kW", "kH", "dT", "dW", "dH", "padT", "padW", "padH")
_PARAMETERS = ("weight", "bias", "gradWeight", "gradBias")
_CONVOLUTION_BUFFERS = ("finput", "fgradInput", "_input", "_gradOutput")
_BATCH_NORM = (
    "affine",
    "eps",
    "train",
    "momentum",
    "running_mean",
    "running_var",
    *_PARAMETERS,
    "save_mean",
    "save_std",
    "_input",
    "_gradOutput",
)

Default = Callable[[Mapping[str, Any]], Any]  # the cudnn module's fields -> the nn field's value


def _zero(_fields: Mapping[str, Any]) -> Any:
    return 0


def _false(_fields: Mapping[str, Any]) -> Any:
    return False


def _true(_fields: Mapping[str, Any]) -> Any:
    return True


def _indices(_fields: Mapping[str, Any]) -> Any:
    return np.empty(0, np.int64)  # nn's torch.LongTensor()


def _inplace(fields: Mapping[str, Any]) -> Any:
    return bool(fields.get("inplace", False))


def _count_include_pad(fields: Mapping[str, Any]) -> Any:
    return fields.get("mode") != "CUDNN_POOLING_AVERAGE_COUNT_EXCLUDE_PADDING"


@dataclass(frozen=True)
class ModuleCast:
    """How one cudnn class is written as its nn class."""

    target: str  # the nn class
    fields: tuple[str, ...]  # what the nn module may hold (constructor fields and buffers)
    defaults: Mapping[str, Default] = field(default_factory=dict)  # added when missing
    renames: Mapping[str, str] = field(default_factory=dict)  # cudnn field -> nn field

    def convert(self, module: TorchObject) -> TorchObject:
        source: Mapping[str, Any] = module.fields
        _refuse_groups(module)
        fields = LuaTable()
        for key, value in source.items():
            name = self.renames.get(key, key) if isinstance(key, str) else key
            if name in self.fields and name not in fields:
                fields[name] = value
        for name, default in self.defaults.items():
            if name not in fields:
                fields[name] = default(source)
        return TorchObject(self.target, fields, module.version)


def _refuse_groups(module: TorchObject) -> None:
    groups = module.fields.get("groups", 1)
    if groups not in (1, None):
        raise UnsupportedValueError(
            f"{module.typename} with groups={groups} has no nn equivalent (nn convolutions "
            "have no groups); keep it as a cudnn module or split it into one per group"
        )


def _ones(fields: Mapping[str, Any]) -> Any:
    """nn.SpatialFullConvolution's ``ones``: an empty tensor of its weight's class."""
    weight = fields.get("weight")
    return empty_replacement(weight) if weight is not None else np.empty(0, np.float32)


def _convolution(target: str, kernel: tuple[str, ...], full: bool = False) -> ModuleCast:
    defaults: dict[str, Default] = {name: _zero for name in kernel if name.startswith("pad")}
    if full:
        defaults |= {"adjW": _zero, "adjH": _zero, "ones": _ones}
    fields = (*_MODULE, "nInputPlane", "nOutputPlane", *kernel, *defaults, *_PARAMETERS)
    return ModuleCast(target, (*fields, *_CONVOLUTION_BUFFERS), defaults)


def _pooling(target: str, kernel: tuple[str, ...], average: bool) -> ModuleCast:
    defaults: dict[str, Default] = {name: _zero for name in kernel if name.startswith("pad")}
    defaults["ceil_mode"] = _false
    if average:
        defaults |= {"count_include_pad": _count_include_pad, "divide": _true}
    else:
        defaults["indices"] = _indices
    return ModuleCast(target, (*_MODULE, *kernel, *defaults), defaults)


def _plain(target: str) -> ModuleCast:
    """Tanh, Sigmoid, SoftMax, LogSoftMax: nn.Module's fields only."""
    return ModuleCast(target, _MODULE)


# cudnn class -> how it is written as nn (cudnn.convert's list, and its nn.SpatialConvolutionMM).
CUDNN_TO_NN: dict[str, ModuleCast] = {
    "cudnn.SpatialConvolution": _convolution("nn.SpatialConvolution", _KERNEL_2D),
    "cudnn.SpatialFullConvolution": _convolution(
        "nn.SpatialFullConvolution", _KERNEL_2D, full=True
    ),
    "cudnn.VolumetricConvolution": _convolution("nn.VolumetricConvolution", _KERNEL_3D),
    "cudnn.SpatialMaxPooling": _pooling("nn.SpatialMaxPooling", _KERNEL_2D, average=False),
    "cudnn.SpatialAveragePooling": _pooling("nn.SpatialAveragePooling", _KERNEL_2D, average=True),
    "cudnn.VolumetricMaxPooling": _pooling("nn.VolumetricMaxPooling", _KERNEL_3D, average=False),
    "cudnn.VolumetricAveragePooling": _pooling(
        "nn.VolumetricAveragePooling", _KERNEL_3D, average=True
    ),
    "cudnn.BatchNormalization": ModuleCast("nn.BatchNormalization", (*_MODULE, *_BATCH_NORM)),
    "cudnn.SpatialBatchNormalization": ModuleCast(
        "nn.SpatialBatchNormalization", (*_MODULE, *_BATCH_NORM)
    ),
    "cudnn.VolumetricBatchNormalization": ModuleCast(
        "nn.VolumetricBatchNormalization", (*_MODULE, *_BATCH_NORM)
    ),
    "cudnn.ReLU": ModuleCast(
        "nn.ReLU",
        (*_MODULE, "threshold", "val", "inplace"),
        {"threshold": _zero, "val": _zero, "inplace": _inplace},
    ),
    "cudnn.Tanh": _plain("nn.Tanh"),
    "cudnn.Sigmoid": _plain("nn.Sigmoid"),
    "cudnn.SoftMax": _plain("nn.SoftMax"),
    "cudnn.LogSoftMax": _plain("nn.LogSoftMax"),
    "cudnn.SpatialCrossMapLRN": ModuleCast(
        "nn.SpatialCrossMapLRN",
        (*_MODULE, "size", "alpha", "beta", "k", "scale", "paddedRatio", "accumRatio"),
        renames={"K": "k"},
    ),
}


def to_nn(value: Any) -> Any:
    """``value`` as its nn module if it is a cudnn module of :data:`CUDNN_TO_NN`, else itself."""
    if not isinstance(value, TorchObject) or not isinstance(value.fields, Mapping):
        return value
    cast = CUDNN_TO_NN.get(value.typename)
    return value if cast is None else cast.convert(value)
