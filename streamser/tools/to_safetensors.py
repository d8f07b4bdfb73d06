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

import importlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..api import load
from ..errors import UnsupportedValueError
from ..handle import open as open_t7
from ..io.arrays import byte_view, iter_chunks
from ..io.atomic import replacing
from ..types import FormatName

PathLike = str | os.PathLike[str]
Arrays = Iterator[np.ndarray[Any, Any]]


class Described(Protocol):
    """What the safetensors writer reads of a tensor before its data: what ``TensorInfo`` has."""

    @property
    def path(self) -> str:
        """The name the tensor is written under."""

    @property
    def dtype(self) -> np.dtype[Any]:
        """Its numpy type."""

    @property
    def shape(self) -> tuple[int, ...]:
        """Its shape."""

    @property
    def nbytes(self) -> int:
        """Bytes of its data."""


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
    export = _issue_12_export()
    if export is not None:
        report = export.export(source, target, format=format)
        return int(report.arrays)
    with open_t7(source, format=format) as handle:
        chosen = [info for info in handle.tensors() if _is_tensor(info) and info.nbytes]
        wanted = {info.path for info in chosen}
        arrays = (array for path, array in handle.arrays() if (path or "<root>") in wanted)
        write_safetensors(Path(target), chosen, arrays)
    return len(chosen)


def _is_tensor(info: Described) -> bool:
    return not getattr(info, "typename", "Tensor").endswith("Storage")


def _write_torch_names(source: PathLike, target: Path, format: FormatName | None) -> int:
    from ..torch import load_state_dict  # needs PyTorch, imported only for this

    value = load(source, format=format)
    arrays = {name: t.numpy() for name, t in load_state_dict(value, readonly="share").items()}
    infos = [Named(name, a.dtype, tuple(a.shape), a.nbytes) for name, a in arrays.items()]
    write_safetensors(target, infos, iter(arrays.values()))
    return len(infos)


def write_safetensors(path: Path, infos: Sequence[Described], arrays: Arrays) -> int:
    """The header from ``infos``, then each of ``arrays`` (one per info, in order); returns the
    bytes of tensor data written. Uses issue 12's writer when it is there."""
    export = _issue_12_export()
    if export is not None:
        return int(export._write_safetensors(path, list(infos), arrays))
    return _adapter_write(path, infos, arrays)


def _issue_12_export() -> Any:
    """``streamser.tools.export`` (issue 12's bounded-memory .safetensors writer), if present."""
    try:
        return importlib.import_module("streamser.tools.export")
    except ImportError:
        return None


# --- ADAPTER (issue 14 -> issue 12) ----------------------------------------------------------
# A stand-in for the .safetensors writer of streamser/tools/export.py (branch `serial`), used
# only while that module is absent: same inputs, same output. Delete from here down once it is
# merged, and call its writer from write_safetensors above (it already does, when present).

_SAFETENSORS_TYPES = {
    ("f", 8): "F64",
    ("f", 4): "F32",
    ("f", 2): "F16",
    ("i", 8): "I64",
    ("i", 4): "I32",
    ("i", 2): "I16",
    ("i", 1): "I8",
    ("u", 1): "U8",
    ("b", 1): "BOOL",
}
_CHUNK_BYTES = 16 << 20


def _adapter_write(path: Path, infos: Sequence[Described], arrays: Arrays) -> int:
    header = _adapter_header(infos)
    written = 0
    with replacing(path) as raw:
        raw.write(len(header).to_bytes(8, "little"))
        raw.write(header)
        for array in arrays:
            little = array.dtype.newbyteorder("<")
            for chunk in iter_chunks(array, _CHUNK_BYTES):
                raw.write(byte_view(chunk if chunk.dtype == little else chunk.astype(little)))
            written += array.nbytes
    return written


def _adapter_header(infos: Sequence[Described]) -> bytes:
    entries: dict[str, Any] = {}
    offset = 0
    for info in infos:
        kind = _SAFETENSORS_TYPES.get((info.dtype.kind, info.dtype.itemsize))
        if kind is None or info.path == "__metadata__" or info.path in entries:
            raise UnsupportedValueError(
                f"cannot be a .safetensors tensor ({info.dtype})", info.path
            )
        entries[info.path] = {
            "dtype": kind,
            "shape": list(info.shape),
            "data_offsets": [offset, offset + info.nbytes],
        }
        offset += info.nbytes
    text = json.dumps(entries, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return text + b" " * (-len(text) % 8)
