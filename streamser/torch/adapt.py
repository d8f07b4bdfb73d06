"""torch tensors written by the core writer: CPU memory as it lies, other devices in chunks.

``streamser.save`` / ``serialize`` / ``Writer`` meet a ``torch.Tensor`` (an ``nn.Parameter``, a
``state_dict()`` entry) through the writer's type fallback (:mod:`streamser.graph.foreign`),
which imports this module the first time one is written. Gradients are never written: a
tensor is written as ``tensor.detach()``.

Sharing. A tensor's Torch7 storage is its whole torch storage, known by the storage's Python
object: PyTorch keeps one object per live storage (``t.untyped_storage() is
t[1:].untyped_storage()``), and the writer's memo holds it weakly. So views of one storage
become tensors of ONE Torch7 storage, as numpy views of one base do, and a storage that dies
while a long stream is written leaves the memo. A second dtype over a storage already written
(``t.view(torch.int32)``) is written as its own storage, as a numpy dtype view is;
``compact=True`` writes every tensor as its own storage.

Memory. A CPU tensor of a Torch7 type is written from its memory, through a numpy view of its
whole storage (no copy). A tensor on another device, or of a type Torch7 lacks (converted by a
cast), is read by :class:`HostChunks`: the codec pulls pieces of at most 16 MiB, each copied
to the host (``.cpu()``) and converted on its own, so a GPU checkpoint is never copied whole.

Types. uint8, int8, int16, int32, int64, float16, float32 and float64 are Torch7's Byte, Char,
Short, Int, Long, Half, Float and Double. PyTorch device tensors are written as CPU classes
(``torch.FloatTensor``): a ``torch.Cuda*`` class would need cutorch to load, and
``cast={"torch.FloatTensor": "torch.CudaTensor"}`` writes CUDA names when wanted. bool,
bfloat16, float8 and the wide unsigned types need a cast (see
:mod:`streamser.spec.pytorch_types`); complex, quantized, sparse and meta tensors are refused
with what to do instead.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import UnsupportedValueError
from ..graph.memo import IdentityMemo
from ..io.arrays import Array
from ..spec.format import CLASSES, CPU_TENSOR, TorchClass
from ..spec.pytorch_types import PYTORCH_ADVICE, PYTORCH_CLASSES
from ..values.tensors import TensorLayout, contiguous_strides

if TYPE_CHECKING:
    from ..graph.writer import GraphWriter

Handler = Callable[[Any], None]

# torch dtypes Torch7 has, by element name.
_ELEMENTS: dict[torch.dtype, str] = {
    torch.uint8: "Byte",
    torch.int8: "Char",
    torch.int16: "Short",
    torch.int32: "Int",
    torch.int64: "Long",
    torch.float16: "Half",
    torch.float32: "Float",
    torch.float64: "Double",
}
# The torch dtype that reads a pseudo class's data exactly (see spec.pytorch_types).
_HOST: dict[str, torch.dtype] = {
    "u1": torch.uint8,
    "f4": torch.float32,
    "u2": torch.uint16,
    "u4": torch.uint32,
    "u8": torch.uint64,
}
# Tensors no cast can write, and what to write instead.
_REFUSED: tuple[tuple[Callable[[torch.Tensor], bool], str], ...] = (
    (
        torch.Tensor.is_complex,
        "no Torch7 type holds complex numbers: write torch.view_as_real(t) (the real and "
        "imaginary parts along a last dimension of 2)",
    ),
    (lambda t: t.is_quantized, "Torch7 has no quantized tensors: write t.dequantize()"),
    (lambda t: t.layout != torch.strided, "Torch7 has no sparse tensors: write t.to_dense()"),
    (lambda t: t.is_meta, "a tensor on the meta device has no data to write"),
)
_ADAPTERS: weakref.WeakKeyDictionary[GraphWriter, TensorAdapter] = weakref.WeakKeyDictionary()


def handler_for(writer: GraphWriter, kind: type) -> Handler | None:
    """The handler of ``writer`` for values of ``kind``: one adapter per writer serves every
    tensor type (a Parameter and a view of its data share a storage)."""
    if issubclass(kind, torch.nn.Module):
        return _module_refusal(writer)
    if not issubclass(kind, torch.Tensor):
        return None
    adapter = _ADAPTERS.get(writer)
    if adapter is None:
        adapter = _ADAPTERS[writer] = TensorAdapter(writer)
    return adapter


def _module_refusal(writer: GraphWriter) -> Handler:
    def refuse(value: Any) -> None:
        raise UnsupportedValueError(
            f"cannot write a torch module ({type(value).__name__}): save its state_dict()",
            writer.path(),
        )

    return refuse


class TensorAdapter:
    """Writes torch tensors through one writer, deciding each one's Torch7 layout."""

    def __init__(self, writer: GraphWriter) -> None:
        # A proxy: the adapter is kept per writer in a weak-keyed table, and a strong reference
        # back to its key would keep every writer (and all it memoised) alive for ever.
        self._writer: GraphWriter = weakref.proxy(writer)
        self._dtypes = IdentityMemo()  # torch storage -> dtype its Torch7 storage is written as

    def __call__(self, value: torch.Tensor) -> None:
        writer = self._writer
        try:
            layout = self.layout(value.detach())
        except UnsupportedValueError as exc:
            raise UnsupportedValueError(exc.message, writer.path()) from None
        writer.write_layout(layout)

    def layout(self, tensor: torch.Tensor) -> TensorLayout:
        """Class, geometry and storage of ``tensor`` (refused before anything is written).

        As for numpy arrays: a tensor with no elements is Torch's empty tensor, or, when it
        views a storage, a 0-d tensor placed at its offset in that storage.
        """
        cls, host = self._class_of(tensor)
        if tensor.is_neg():
            tensor = tensor.resolve_neg()  # a lazy negation: materialised, as its own storage
        if tensor.dim() == 0:
            tensor = tensor.reshape(1)  # Torch7 has no 1-element 0-d tensor
        storage = _storage_of(tensor)
        elements = storage.nbytes() // tensor.element_size()
        empty = tensor.numel() == 0
        if empty and (self._writer.compact or not elements):
            return TensorLayout(cls, (), (), 0, None, None)
        if self._writer.compact or not self._first_dtype(storage, tensor.dtype):
            sizes = tuple(tensor.shape)
            data = _data(tensor, host)
            return TensorLayout(cls, sizes, contiguous_strides(sizes), 0, tensor, data)
        whole = _data(tensor.as_strided((elements,), (1,), 0), host)
        offset = int(tensor.storage_offset())
        if empty:
            return TensorLayout(cls, (), (), min(offset, elements), storage, whole)
        return TensorLayout(cls, tuple(tensor.shape), _strides(tensor), offset, storage, whole)

    def _class_of(self, tensor: torch.Tensor) -> tuple[TorchClass, torch.dtype | None]:
        """The Torch7 (or pseudo) class of ``tensor`` and the dtype its chunks are read as
        (None: its own); a pseudo class the cast leaves alone is refused here."""
        _refuse_kinds(tensor)
        name = _ELEMENTS.get(tensor.dtype)
        if name is not None:
            return CPU_TENSOR[name], None
        typename = _typename(tensor.dtype)
        cls = PYTORCH_CLASSES.get(typename)
        cast = self._writer.cast
        if cls is None:
            raise UnsupportedValueError(f"a {tensor.dtype} tensor has no Torch7 type")
        if (cls if cast is None else cast(cls)).typename not in CLASSES:
            raise UnsupportedValueError(
                f"a {tensor.dtype} tensor has no Torch7 type: save with {PYTORCH_ADVICE[typename]}"
            )
        return cls, _HOST[cls.element.dtype.str[1:]]

    def _first_dtype(self, storage: Any, dtype: torch.dtype) -> bool:
        """True when ``storage`` is written (or to be written) as ``dtype``."""
        seen = self._dtypes.get(storage)
        if seen is None:
            self._dtypes.put(storage, dtype)
            return True
        return bool(seen == dtype)


def _refuse_kinds(tensor: torch.Tensor) -> None:
    for refused, message in _REFUSED:
        if refused(tensor):
            raise UnsupportedValueError(message)


_TYPENAMES: dict[torch.dtype, str] = {}


def _typename(dtype: torch.dtype) -> str:
    """PyTorch's class name for ``dtype`` (``torch.BFloat16Tensor``), as ``tensor.type()``."""
    name = _TYPENAMES.get(dtype)
    if name is None:
        name = _TYPENAMES[dtype] = torch.empty(0, dtype=dtype).type()
    return name


def _strides(tensor: torch.Tensor) -> tuple[int, ...]:
    """``tensor``'s strides as it has them, a size-1 dimension's included (Torch7 keeps any
    stride a view had, and so does the numpy writer)."""
    return tuple(tensor.stride())


def _storage_of(tensor: torch.Tensor) -> Any:
    try:
        return tensor.untyped_storage()
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        raise UnsupportedValueError(
            f"cannot reach the memory of a {type(tensor).__name__} tensor: {exc}"
        ) from None


def _data(tensor: torch.Tensor, host: torch.dtype | None) -> Array | HostChunks:
    """``tensor``'s elements in C order: a numpy view of CPU memory Torch7 can take as it is,
    chunks to pull otherwise."""
    if host is None and tensor.device.type == "cpu":
        return tensor.numpy()
    return HostChunks(tensor, tensor.dtype if host is None else host)


class HostChunks:
    """A tensor's elements pulled to the host a bounded piece at a time (a ``ChunkSource``).

    Each piece is at most ``max_bytes`` on the device and on the host; it is copied with
    ``.cpu()`` and then converted to ``host`` (bfloat16 to float32, ...), so the device memory
    is never copied whole and no piece outlives its write.
    """

    def __init__(self, tensor: torch.Tensor, host: torch.dtype) -> None:
        self._tensor = tensor
        self._host = host
        self.dtype: np.dtype[Any] = torch.empty(0, dtype=host).numpy().dtype
        self.size = tensor.numel()
        self.itemsize = self.dtype.itemsize

    def chunks(self, max_bytes: int) -> Iterator[Array]:
        """The elements in C order, in host arrays of at most ``max_bytes``."""
        widest = max(self.itemsize, self._tensor.element_size())
        for piece in _pieces(self._tensor, max(1, max_bytes // widest)):
            host = piece.cpu()
            if host.dtype != self._host:
                host = host.to(self._host)
            yield host.reshape(-1).numpy()


def _pieces(tensor: torch.Tensor, most: int) -> Iterator[torch.Tensor]:
    """Views covering ``tensor`` in C order, each of at most ``most`` elements."""
    if tensor.numel() <= most:
        yield tensor
    elif tensor.dim() == 1:
        for start in range(0, tensor.shape[0], most):
            yield tensor[start : start + most]
    elif (rows := most // tensor[0].numel()) >= 1:
        for start in range(0, tensor.shape[0], rows):
            yield tensor[start : start + rows]
    else:
        for row in tensor:
            yield from _pieces(row, most)
