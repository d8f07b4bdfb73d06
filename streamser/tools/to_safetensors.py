"""A ``.t7`` file's tensors as a ``.safetensors`` file, streamed in bounded memory.

safetensors' own ``save_file`` needs every tensor in memory at once. Here the header is built
from shapes and types known before any data is read, and then each tensor's bytes are streamed
in C order, a bounded chunk at a time, from views of the mapped ``.t7`` file.

Names: by default each tensor's path in the file (``modules[1].weight``, the path syntax of
:func:`streamser.open`), as ``streamser export`` writes them; with ``torch_names``, PyTorch's
``state_dict`` names and layouts (:func:`streamser.torch.load_state_dict`: ``0.weight``,
``SpatialConvolutionMM``'s weight made 4-D, BatchNorm's running statistics), so that
``model.load_state_dict(safetensors.torch.load_file(path))`` loads the converted model.
safetensors has no sharing: tensors that share a Torch7 storage are each written in full.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..api import load
from ..types import FormatName
from .export import export, write_safetensors

PathLike = str | os.PathLike[str]
Arrays = Iterator[np.ndarray[Any, Any]]


@dataclass(frozen=True)
class Named:
    """A tensor to write under a name of its own (a PyTorch name)."""

    path: str
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    nbytes: int


def t7_to_safetensors(
    source: PathLike,
    target: PathLike,
    *,
    torch_names: bool = False,
    format: FormatName | None = None,
) -> int:
    """Write the tensors of the ``.t7`` file ``source`` to ``target``; returns their count.

    ``format`` is the ``.t7`` format of ``source`` (detected when None).
    """
    if torch_names:
        return _write_torch_names(source, Path(target), format)
    return export(source, target, format=format).arrays


def _write_torch_names(source: PathLike, target: Path, format: FormatName | None) -> int:
    from ..torch import load_state_dict  # needs PyTorch, imported only for this

    value = load(source, format=format)
    arrays = {name: t.numpy() for name, t in load_state_dict(value, readonly="share").items()}
    infos = [Named(name, a.dtype, tuple(a.shape), a.nbytes) for name, a in arrays.items()]
    write_safetensors(target, infos, iter(arrays.values()))
    return len(infos)
