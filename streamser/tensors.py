"""Tensors as numpy arrays, both ways.

Reading: a tensor is an ``ndarray`` view (sizes, strides, offset) of its storage's flat array,
made only after its extent has been checked against the storage, so views that share a storage
in the file share memory after loading.

Writing: an array's storage is the memory of its *root* array (the ndarray at the end of its
``.base`` chain). Arrays that are views of one root with the same dtype become tensors of ONE
storage with their own offsets and strides, as Torch7 would write them; anything else (a dtype
view, negative or unaligned strides, ``compact=True``) is written as its own compact storage.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .errors import FormatError, UnsupportedValueError
from .format import CLASSES, CPU_STORAGE, CPU_TENSOR, ELEMENT_BY_DTYPE, ElementType, TorchClass
from .values import remembered_class

Array = np.ndarray[Any, Any]
MAX_DIMS = 64  # numpy's limit on dimensions; Torch7 files in practice stay far below it


def element_of(dtype: np.dtype[Any], path: str = "") -> ElementType:
    element = ELEMENT_BY_DTYPE.get((dtype.kind, dtype.itemsize))
    if element is None or dtype.kind not in "uif":
        raise UnsupportedValueError(
            f"numpy dtype {dtype} has no Torch7 tensor type (use uint8, int8, int16, int32, "
            "int64, float16, float32 or float64)",
            path,
        )
    return element


def default_class(dtype: np.dtype[Any], *, tensor: bool, path: str = "") -> TorchClass:
    element = element_of(dtype, path)
    return (CPU_TENSOR if tensor else CPU_STORAGE)[element.name]


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
        if stride != expected and size != 1:
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
    storage_data: Array | None  # elements of the storage, in order (any memory layout)


def root_of(array: Array) -> Array:
    """The ndarray that owns (or first wraps) the memory ``array`` views."""
    root = array
    while isinstance(root.base, np.ndarray):
        root = root.base
    return root


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


def address_of(array: Array) -> int:
    """Where ``array``'s first element sits in memory."""
    return int(array.__array_interface__["data"][0])


def layout_of(array: Array, *, compact: bool = False, addresses: Any = None) -> TensorLayout:
    """Decide how ``array`` is written: as a view of its root's storage, or compactly.

    ``addresses`` (an :class:`~streamser.memo.IdentityMemo`) caches the address of each root's
    memory for a writer that meets many views of the same storages.
    """
    element = element_of(array.dtype)
    if array.ndim == 0:
        array = array.reshape(1)  # Torch7 has no 1-element 0-d tensor
    if array.base is None and array.flags.c_contiguous:  # owns its memory: its own storage
        cls = class_for_array(array, element, tensor=True)
        if array.size == 0:
            return TensorLayout(cls, (), (), 0, None, None)
        return TensorLayout(cls, array.shape, contiguous_strides(array.shape), 0, array, array)
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
    return TensorLayout(cls, array.shape, contiguous_strides(array.shape), 0, array, array)


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
        if size == 1:
            strides.append(contiguous)  # any stride is valid for a size-1 dimension
        elif stride < 0 or stride % itemsize:
            return None
        else:
            strides.append(stride // itemsize)
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


def file_region(array: Array) -> tuple[str, int] | None:
    """(path, byte offset) of a contiguous array that is a shared mapping of a file.

    Only ``np.memmap`` arrays mapped shared (modes r, r+, w+) qualify: there the page cache is
    the file's content, so a kernel copy of the file sees exactly the array's bytes, edits
    included. Copy-on-write mappings (mode c) may differ from their file and never qualify.
    """
    mapped: Any = array
    while isinstance(mapped, np.ndarray) and not isinstance(mapped.base, mmap.mmap):
        mapped = mapped.base
    if not isinstance(mapped, np.memmap) or mapped.mode not in ("r", "r+", "w+"):
        return None
    filename = getattr(mapped, "filename", None)
    if not filename:
        return None
    return str(filename), int(mapped.offset) + address_of(array) - address_of(mapped)


def byte_view(array: Array) -> memoryview:
    """The bytes of a contiguous array, without copying them."""
    view: memoryview = memoryview(array.data).cast("B")  # type: ignore[arg-type,unused-ignore]
    return view


def iter_chunks(array: Array, max_bytes: int) -> Iterator[Array]:
    """C-order pieces of ``array``, each contiguous and at most about ``max_bytes``.

    A contiguous array yields views; a strided one yields bounded copies, one block of rows at a
    time, so a huge non-contiguous view is never copied whole.
    """
    if array.flags.c_contiguous:
        flat = array.reshape(-1)
        step = max(1, max_bytes // max(1, array.itemsize))
        for start in range(0, flat.shape[0], step):
            yield flat[start : start + step]
        return
    if array.nbytes <= max_bytes or array.ndim <= 1:
        if array.ndim <= 1 and array.nbytes > max_bytes:
            step = max(1, max_bytes // max(1, array.itemsize))
            for start in range(0, array.shape[0], step):
                yield np.ascontiguousarray(array[start : start + step])
            return
        yield np.ascontiguousarray(array).reshape(-1)
        return
    row_bytes = array[0].nbytes if array.shape[0] else 1
    rows = max_bytes // max(1, row_bytes)
    if rows >= 1:
        for start in range(0, array.shape[0], rows):
            yield np.ascontiguousarray(array[start : start + rows]).reshape(-1)
    else:
        for index in range(array.shape[0]):
            yield from iter_chunks(array[index], max_bytes)
