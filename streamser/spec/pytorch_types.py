"""Tensor types PyTorch has and Torch7 lacks, named as PyTorch names them, for casts to name.

Torch7 has eight element types (Byte, Char, Short, Int, Long, Half, Float, Double); PyTorch adds
bool, bfloat16, the float8 family and wider unsigned integers. A tensor of one of these can be
written only through a cast that turns its class into a Torch7 class: the floating ones follow
the named float casts (``cast="float32"``), the others a mapping of class names
(``cast="torch.BoolTensor=torch.ByteTensor"``, or as a dict
``{"torch.BoolTensor": "torch.ByteTensor"}``). The names are what ``tensor.type()`` prints.

These are not Torch7 classes: they are absent from :data:`~streamser.spec.format.CLASSES`, so
the reader never accepts them, and the writer refuses a tensor whose class is still one of them
after the cast. Each pseudo class's element has the numpy type its data is read as before the
cast converts it, which holds every value exactly (bfloat16 and float8 as float32, bool as
uint8).

>>> PYTORCH_CLASSES["torch.BFloat16Tensor"].element.dtype.str
'<f4'
>>> PYTORCH_ADVICE["torch.BoolTensor"]
'cast="torch.BoolTensor=torch.ByteTensor" (0 and 1, as Torch7\\'s masks)'
"""

from __future__ import annotations

from typing import Final

import numpy as np

from .format import ElementType, TorchClass

# PyTorch type name (without "torch." and "Tensor") -> (numpy type of the data, Torch7 class a
# mapping cast should name, note); None: a floating type, for the named float casts.
_TYPES: Final = {
    "Bool": ("u1", ("ByteTensor", "0 and 1, as Torch7's masks")),
    "BFloat16": ("<f4", None),
    "Float8_e4m3fn": ("<f4", None),
    "Float8_e4m3fnuz": ("<f4", None),
    "Float8_e5m2": ("<f4", None),
    "Float8_e5m2fnuz": ("<f4", None),
    "Float8_e8m0fnu": ("<f4", None),
    "UInt16": ("<u2", ("IntTensor", "exact")),
    "UInt32": ("<u4", ("LongTensor", "exact")),
    "UInt64": ("<u8", ("LongTensor", "values above 2^63 - 1 wrap")),
}


def _pseudo_classes() -> tuple[dict[str, TorchClass], dict[str, str]]:
    classes: dict[str, TorchClass] = {}
    advice: dict[str, str] = {}
    for name, (dtype, mapping) in _TYPES.items():
        element = ElementType(name, np.dtype(dtype), "%.9g")
        if mapping is None:
            hint = 'cast="float32" (exact)'
        else:
            hint = f'cast="torch.{name}Tensor=torch.{mapping[0]}" ({mapping[1]})'
        for suffix, is_tensor in (("Tensor", True), ("Storage", False)):
            typename = f"torch.{name}{suffix}"
            classes[typename] = TorchClass(typename, element, is_tensor, is_cuda=False)
            advice[typename] = hint
    return classes, advice


PYTORCH_CLASSES, PYTORCH_ADVICE = _pseudo_classes()
