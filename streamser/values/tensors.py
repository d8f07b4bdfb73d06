"""Tensors as numpy arrays, both ways.

Reading: a tensor is an ``ndarray`` view (sizes, strides, offset) of its storage's flat array,
made only after its extent has been checked against the storage, so views that share a storage
in the file share memory after loading.

Writing: an array's storage is the memory of its *root* array (the ndarray at the end of its
``.base`` chain). Arrays that are views of one root with the same dtype become tensors of ONE
storage with their own offsets and strides, as Torch7 would write them; anything else (a dtype
view, negative or unaligned strides, ``compact=True``) is written as its own compact storage.

Geometry is exact both ways: a tensor is read as a view with Torch's strides, every dimension
included, and an array is written with its own strides wherever Torch could have them (any
non-negative multiple of the element size; a size-1 dimension keeps whatever stride it has, as
``narrow``, ``select`` and ``view`` leave it in Torch), so a file round-trips byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..errors import FormatError
from ..io.arrays import Array, ChunkSource, address_of, root_of
from ..spec.format import CLASSES, CPU_STORAGE, CPU_TENSOR, ElementType, TorchClass, element_of
from .lua import remembered_class

MAX_DIMS = 64  # numpy's limit on dimensions; Torch7 files in practice stay far below it


# --- reading ---------------------------------------------------------------------------------


def empty_tensor(element: ElementType) -> Array:
    """Torch's ``torch.FloatTensor()``: no dimensions, no storage; a fresh size-0 array here."""
    return np.empty((0,), dtype=element.dtype.newbyteorder("="))


def tensor_view(
    storage: Array, sizes: tuple[int, ...], strides: tuple[int, ...], offset: int, at: int
) -> Array:
    """A view of ``storage`` with Torch geometry, after checking it stays inside the storage.

    ``offset`` is 0-based, in elements. A tensor without dimensions but with a storage (Torch's
    0-d tensor, zero elements) becomes a size-0 view placed at its offset. A storage that is
    not an ndarray (the lazy storage of a compressed file) makes its own kind of view, after
    the same checks (:func:`check_extent`).
    """
    if not isinstance(storage, np.ndarray):
        view: Array = storage.view(sizes, strides, offset, at)
        return view
    n = storage.shape[0]
    if offset < 0 or offset > n:
        raise FormatError(f"tensor offset {offset} is outside its storage of {n} elements", at)
    if len(sizes) > MAX_DIMS:
        raise FormatError(f"tensor has {len(sizes)} dimensions; numpy allows {MAX_DIMS}", at)
    last = offset  # the last element the view reaches
    contiguous = True
    expected = 1
    for size, stride in zip(reversed(sizes), reversed(strides), strict=True):
        if size < 0 or stride < 0:
            raise FormatError(f"negative tensor size or stride in {sizes} / {strides}", at)
        last += (size - 1) * stride
        if stride != expected:  # a size-1 dimension keeps its stride too: exact geometry
            contiguous = False
        expected *= size
    itemsize = storage.dtype.itemsize
    if not sizes or expected == 0:  # no elements: a size-0 view placed at the offset
        shape = sizes or (0,)
        byte_strides = tuple(stride * itemsize for stride in strides) or None
        try:
            return np.ndarray(
                shape, storage.dtype, buffer=storage, offset=offset * itemsize, strides=byte_strides
            )
        except (ValueError, TypeError, OverflowError) as exc:
            raise FormatError(f"tensor geometry cannot be viewed: {exc}", at) from None
    if last >= n:
        raise FormatError(
            f"tensor of size {list(sizes)} and stride {list(strides)} at offset {offset} "
            f"reaches element {last} of a storage of {n}",
            at,
        )
    if contiguous:
        piece = storage if offset == 0 and expected == n else storage[offset : offset + expected]
        return piece.reshape(sizes)
    try:
        return np.ndarray(
            sizes,
            storage.dtype,
            buffer=storage,
            offset=offset * itemsize,
            strides=tuple(stride * itemsize for stride in strides),
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise FormatError(f"tensor geometry cannot be viewed: {exc}", at) from None


def check_extent(
    n: int, sizes: tuple[int, ...], strides: tuple[int, ...], offset: int, at: int
) -> tuple[int, int]:
    """(first, end) elements a tensor reaches in a storage of ``n``, after the reader's checks.

    ``end`` is one past the last element reached; a tensor with no elements has ``end == first``.
    """
    if offset < 0 or offset > n:
        raise FormatError(f"tensor offset {offset} is outside its storage of {n} elements", at)
    if len(sizes) > MAX_DIMS:
        raise FormatError(f"tensor has {len(sizes)} dimensions; numpy allows {MAX_DIMS}", at)
    last = offset
    count = 1
    for size, stride in zip(sizes, strides, strict=True):
        if size < 0 or stride < 0:
            raise FormatError(f"negative tensor size or stride in {sizes} / {strides}", at)
        last += (size - 1) * stride
        count *= size
    if not sizes or count == 0:
        return offset, offset
    if last >= n:
        raise FormatError(
            f"tensor of size {list(sizes)} and stride {list(strides)} at offset {offset} "
            f"reaches element {last} of a storage of {n}",
            at,
        )
    return offset, last + 1


# --- writing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TensorLayout:
    """How one ndarray is written: class, geometry, and its storage (``None`` for empty)."""

    cls: TorchClass
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    offset: int  # 0-based, in elements
    storage_key: Any  # the object whose identity is the storage's (kept alive by the memo)
    storage_data: Array | ChunkSource | None  # elements of the storage, in order (any layout)


def _flat_memory(root: Array) -> Array | None:
    """The root's memory as a flat array in memory order, or None if it is not contiguous."""
    if root.ndim == 1 and root.flags.c_contiguous:
        return root
    if root.flags.c_contiguous:
        return root.reshape(-1)
    if root.flags.f_contiguous:
        return root.T.reshape(-1)
    return None


def class_for_array(root: Array, element: ElementType, *, tensor: bool) -> TorchClass:
    remembered = remembered_class(root)
    if remembered is not None and remembered.element is element:
        name = remembered.tensor_typename if tensor else remembered.storage_typename
        return CLASSES[name]
    return (CPU_TENSOR if tensor else CPU_STORAGE)[element.name]


def layout_of(array: Array, *, compact: bool = False, addresses: Any = None) -> TensorLayout:
    """Decide how ``array`` is written: as a view of its root's storage, or compactly.

    ``addresses`` (an :class:`~streamser.graph.memo.IdentityMemo`) caches the address of each root's
    memory for a writer that meets many views of the same storages.
    """
    element = element_of(array.dtype)
    if array.ndim == 0:
        array = array.reshape(1)  # Torch7 has no 1-element 0-d tensor
    if array.base is None and array.flags.c_contiguous:  # owns its memory: its own storage
        cls = class_for_array(array, element, tensor=True)
        if array.size == 0:
            return TensorLayout(cls, (), (), 0, None, None)
        geometry = _view_geometry(array, 0)
        strides = geometry[0] if geometry else contiguous_strides(array.shape)
        return TensorLayout(cls, array.shape, strides, 0, array, array)
    root = root_of(array)
    cls = class_for_array(root, element, tensor=True)
    flat = None if compact else _flat_memory(root)
    if flat is not None and (flat.dtype != array.dtype or flat.size == 0):
        flat = None
    if array.size == 0:  # Torch's empty tensor, or a 0-d tensor placed in a storage
        if flat is None or root is array:
            return TensorLayout(cls, (), (), 0, None, None)
        offset = (address_of(array) - _root_address(root, addresses)) // array.itemsize
        return TensorLayout(cls, (), (), min(max(offset, 0), flat.size), root, flat)
    if flat is not None:
        geometry = _view_geometry(array, address_of(array) - _root_address(root, addresses))
        if geometry is not None:
            strides, offset = geometry
            return TensorLayout(cls, array.shape, strides, offset, root, flat)
    return _own_storage(array, cls)


def _own_storage(array: Array, cls: TorchClass) -> TensorLayout:
    """``array`` as a tensor of a storage of its own (``compact``, or no flat root to view).

    Normally a contiguous copy of what it shows. A view that shows memory more than once (a
    stride-0 broadcast, overlapping windows) keeps its strides over just the memory it covers
    instead, so that a broadcast of one float to 2**40 elements writes one float, not 4 TiB.
    """
    span = _span(array)
    if span is not None and span < array.size:
        itemsize = array.itemsize
        covered = np.lib.stride_tricks.as_strided(array, shape=(span,), strides=(itemsize,))
        strides = tuple(stride // itemsize for stride in array.strides)
        return TensorLayout(cls, array.shape, strides, 0, covered, covered)
    repeated = tuple(
        i for i, (n, s) in enumerate(zip(array.shape, array.strides, strict=True)) if s == 0 < n - 1
    )
    if repeated:  # negative or unaligned strides beside the repeats: copy one of each repeat
        one = array[tuple(slice(0, 1) if i in repeated else slice(None) for i in range(array.ndim))]
        copy = np.ascontiguousarray(one).reshape(-1)
        strides = tuple(
            0 if i in repeated else stride for i, stride in enumerate(contiguous_strides(one.shape))
        )
        return TensorLayout(cls, array.shape, strides, 0, copy, copy)
    return TensorLayout(cls, array.shape, contiguous_strides(array.shape), 0, array, array)


EXPAND_UP_TO = 64 << 20  # bytes up to which a copy of a broadcast is a plain, writable array


def private_copy(array: Array) -> Array:
    """A copy of ``array`` that owns its memory: a plain writable copy (as ``np.array``), except
    for a view that shows memory more than once and would take over ``EXPAND_UP_TO`` bytes
    as one. That keeps its strides over a copy of just the memory it covers, read-only as
    ``np.broadcast_to`` gives it: copying a stride-0 broadcast of one float to 2**40
    elements copies one float, as :func:`_own_storage` writes one."""
    if array.nbytes <= EXPAND_UP_TO:
        return np.array(array)
    span = _span(array)
    if span is None or span >= array.size or not array.size:
        return np.array(array)
    covered = np.lib.stride_tricks.as_strided(array, shape=(span,), strides=(array.itemsize,))
    copy = np.array(covered)
    view = np.lib.stride_tricks.as_strided(copy, shape=array.shape, strides=array.strides)
    view.flags.writeable = False  # writing one element would change all its repeats
    return view


def _span(array: Array) -> int | None:
    """Elements from ``array``'s first to its last, in memory; None when a stride is negative
    or not a whole number of elements (Torch strides cannot say those)."""
    itemsize = array.itemsize
    span = 1
    for size, stride in zip(array.shape, array.strides, strict=True):
        if stride < 0 or stride % itemsize:
            return None
        span += (size - 1) * (stride // itemsize)
    return span


def _root_address(root: Array, addresses: Any) -> int:
    """Where a contiguous root's memory starts (its flat view starts at the same address)."""
    if addresses is None:
        return address_of(root)
    address: int | None = addresses.get(root)
    if address is None:
        address = address_of(root)
        addresses.put(root, address)
    return address


def _view_geometry(array: Array, delta: int) -> tuple[tuple[int, ...], int] | None:
    """Element strides and offset of ``array`` starting ``delta`` bytes into its flat root."""
    itemsize = array.itemsize
    if delta < 0 or delta % itemsize:
        return None
    strides = []
    contiguous = 1
    for size, stride in zip(reversed(array.shape), reversed(array.strides), strict=True):
        if stride >= 0 and stride % itemsize == 0:
            strides.append(stride // itemsize)  # as the view has it, size-1 dimensions too
        elif size == 1:
            strides.append(contiguous)  # a stride Torch cannot have: any is valid here
        else:
            return None
        contiguous *= size
    return tuple(reversed(strides)), delta // itemsize


@lru_cache(maxsize=4096)
def contiguous_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Element strides of a C-contiguous array of ``shape``."""
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))
