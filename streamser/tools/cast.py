"""Casts applied while writing: tensors, storages and modules written as other Torch classes.

A cast changes only the class a tensor is written as; its data is converted chunk by chunk as
it streams out, so a model is never copied whole into another type. The commonest use: a
checkpoint of ``torch.CudaTensor`` written as ``torch.FloatTensor`` so that a CPU-only Torch (or
OpenCV) can read it; ``"cpu+nn"`` also writes cudnn modules as their nn twins
(:mod:`.modules`), which is the whole of ``model:float()`` followed by ``cudnn.convert(model,
nn)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..spec.format import CLASSES, CPU_STORAGE, CPU_TENSOR, ELEMENT_BY_DTYPE, TorchClass
from ..spec.pytorch_types import PYTORCH_CLASSES
from ..values.lua import LuaTable, TorchObject
from .modules import to_nn

Cast = Callable[[TorchClass], TorchClass]


def resolve_cast(spec: str | Mapping[str, str] | None) -> Cast | None:
    """A class mapping from ``spec``.

    * ``"cpu"``: every CUDA class to its CPU twin (``torch.CudaTensor`` -> ``torch.FloatTensor``);
    * ``"nn"``: cudnn modules written as nn modules (tensors unchanged; see :func:`cast_hook`),
      so ``"cpu+nn"`` makes a cudnn checkpoint a CPU nn one;
    * a floating numpy type (``"float32"``, ``"float16"``, ``"float64"``): every floating class
      to that type, CUDA classes staying CUDA; several specs join with ``+``, e.g.
      ``"cpu+float32"``;
    * a mapping of class names (``{"torch.DoubleTensor": "torch.FloatTensor"}``); storages
      follow their tensors, and a mapping of storage names works too. Sources may also be
      PyTorch types Torch7 lacks (``"torch.BoolTensor"``, see
      :mod:`streamser.spec.pytorch_types`); in a string, ``"SOURCE=TARGET"`` maps one class.
    """
    if spec is None:
        return None
    if isinstance(spec, Mapping):
        return _mapping_cast(spec)
    steps = [step for step in (_named_cast(part) for part in _parts(spec)) if step is not None]
    if not steps:
        return None

    def combined(cls: TorchClass) -> TorchClass:
        for step in steps:
            cls = step(cls)
        return cls

    return combined


def _parts(spec: str) -> list[str]:
    return [part.strip() for part in spec.split("+")]


def _named_cast(name: str) -> Cast | None:
    if name == "cpu":
        return _to_cpu
    if name == "nn":
        return None  # module classes only
    if "=" in name:
        source, target = name.split("=", 1)
        return _mapping_cast({source.strip(): target.strip()})
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    element = ELEMENT_BY_DTYPE.get((dtype.kind, dtype.itemsize)) if dtype is not None else None
    if dtype is None or dtype.kind != "f" or element is None:
        raise ValueError(
            f"unknown cast {name!r}: use 'cpu', 'nn', a floating type such as 'float32' "
            "(joined with '+', e.g. 'cpu+nn'), or a mapping of class names"
        )

    def to_element(cls: TorchClass) -> TorchClass:
        if cls.element.dtype.kind != "f":
            return cls
        prefix = "torch.Cuda" if cls.is_cuda else "torch."
        middle = "" if cls.is_cuda and element.name == "Float" else element.name
        suffix = "Tensor" if cls.is_tensor else "Storage"
        return CLASSES[prefix + middle + suffix]

    return to_element


def _to_cpu(cls: TorchClass) -> TorchClass:
    if not cls.is_cuda:
        return cls
    return (CPU_TENSOR if cls.is_tensor else CPU_STORAGE)[cls.element.name]


def _mapping_cast(mapping: Mapping[str, str]) -> Cast:
    table: dict[str, TorchClass] = {}
    for source, target in mapping.items():
        src = CLASSES.get(source) or PYTORCH_CLASSES.get(source)
        if src is None or target not in CLASSES:
            unknown = source if src is None else target
            raise ValueError(f"unknown tensor or storage class {unknown!r} in cast")
        dst = CLASSES[target]
        if src.is_tensor != dst.is_tensor:
            raise ValueError(f"cannot cast {source} to {target}: one is a storage")
        table[src.tensor_typename] = CLASSES[dst.tensor_typename]
        table[src.storage_typename] = CLASSES[dst.storage_typename]

    def mapped(cls: TorchClass) -> TorchClass:
        return table.get(cls.typename, cls)

    return mapped


def retype_hook(cast: Cast) -> Callable[[Any], Any]:
    """A write hook renaming modules' ``_type`` field along with their tensors' classes.

    ``module:float()`` in Torch sets ``_type = 'torch.FloatTensor'``; a cast does the same to
    the copy it writes, so the file's modules describe the tensors they hold.
    """

    def retype(value: Any) -> Any:
        if not isinstance(value, TorchObject) or not isinstance(value.fields, Mapping):
            return value
        name = value.fields.get("_type")
        cls = CLASSES.get(name) if isinstance(name, str) else None
        if cls is None or cast(cls) is cls:
            return value
        fields = LuaTable(value.fields.items())
        fields["_type"] = cast(cls).typename
        return TorchObject(value.typename, fields, value.version)

    return retype


def cast_hook(spec: str | Mapping[str, str] | None) -> Callable[[Any], Any] | None:
    """The write hook of a cast: cudnn modules as nn ones (with ``"nn"`` in ``spec``), then
    each module's ``_type`` renamed along with its tensors' classes. None if there is none."""
    class_cast = resolve_cast(spec)
    steps: list[Callable[[Any], Any]] = []
    if isinstance(spec, str) and "nn" in _parts(spec):
        steps.append(to_nn)
    if class_cast is not None:
        steps.append(retype_hook(class_cast))
    if len(steps) <= 1:
        return steps[0] if steps else None
    first, second = steps

    def both(value: Any) -> Any:
        return second(first(value))

    return both
