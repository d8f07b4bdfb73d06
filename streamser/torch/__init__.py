"""PyTorch bridge: loaded Torch7 values as ``torch`` tensors, ``state_dict``s and modules.

>>> import numpy as np, streamser, streamser.torch
>>> linear = streamser.TorchObject("nn.Linear", {
...     "weight": np.eye(2, dtype=np.float32), "bias": np.ones(2, np.float32)})
>>> module = streamser.torch.to_module(linear)
>>> module(streamser.torch.to_torch(np.ones(2, np.float32))).tolist()
[2.0, 2.0]

* :func:`to_torch` - every numpy array of a loaded value as a tensor sharing its memory;
* :func:`state_dict` - a module tree's tensors under PyTorch's names and layouts;
* :func:`to_module` - a runnable ``torch.nn.Module`` computing what Torch7 computed;
* :func:`load_state_dict` / :func:`save_state_dict` - ``.t7`` files to and from state_dicts.

This is the only part of streamser that imports ``torch``.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as error:  # pragma: no cover - depends on the environment
    raise ImportError("streamser.torch needs PyTorch: pip install torch") from error

from .build import supported_classes, to_module
from .errors import InputShapeError, InvalidModuleError, TorchBridgeError, UnsupportedModuleError
from .files import load_state_dict, save_state_dict
from .names import state_dict
from .tensors import to_torch

__all__ = [
    "InputShapeError",
    "InvalidModuleError",
    "TorchBridgeError",
    "UnsupportedModuleError",
    "load_state_dict",
    "save_state_dict",
    "state_dict",
    "supported_classes",
    "to_module",
    "to_torch",
]
