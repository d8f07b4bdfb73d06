"""values/tensors: numpy arrays to and from Torch geometry, exactly.

A view is written as a tensor of its root's storage with the strides it has, wherever Torch
could have them (non-negative multiples of the element size, size-1 dimensions included), and
read back with those strides, so that a file round-trips byte for byte. The expected bytes are
written here by hand, record by record, with the layout of ``../shared/FORMAT.md``.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support import i32, lua_string

import streamser
from streamser import FormatError
from streamser.io.arrays import address_of, root_of
from streamser.values.tensors import check_extent, contiguous_strides, layout_of, tensor_view

NAMES = {"u1": "Byte", "i1": "Char", "<i2": "Short", "<i4": "Int", "<i8": "Long",
         "<f2": "Half", "<f4": "Float", "<f8": "Double"}  # fmt: skip


def longs(long_size: int, *values: int) -> bytes:
    return struct.pack(f"<{len(values)}{'q' if long_size == 8 else 'i'}", *values)


def header(index: int, typename: str) -> bytes:
    return i32(4, index) + lua_string(b"V 1") + lua_string(typename.encode())


def torch_strides(view: np.ndarray[Any, Any]) -> list[int] | None:
    """The view's strides in elements if Torch could have them, else None (written as a copy).

    A size-1 dimension's stride never matters to the data: one Torch cannot have (negative,
    not a multiple of the element size) is written as the C-contiguous one.
    """
    strides, contiguous = [], 1
    for size, stride in reversed(list(zip(view.shape, view.strides, strict=True))):
        if stride >= 0 and stride % view.itemsize == 0:
            strides.append(stride // view.itemsize)
        elif size == 1:
            strides.append(contiguous)
        else:
            return None
        contiguous *= size
    return strides[::-1]


def torch_like(view: np.ndarray[Any, Any]) -> bool:
    """Whether Torch could have every stride of the view as it is."""
    return all(s >= 0 and s % view.itemsize == 0 for s in view.strides)


def by_hand(view: np.ndarray[Any, Any], long_size: int = 8) -> bytes:
    """The bytes of ``view`` saved alone, from FORMAT.md: a tensor record, then its storage."""
    name = NAMES[view.dtype.str if view.dtype.itemsize > 1 else view.dtype.str[1:]]
    root = root_of(view)
    strides = torch_strides(view)
    if strides is not None and root.flags.c_contiguous:
        offset = (address_of(view) - address_of(root)) // view.itemsize
        data = root.reshape(-1)
    else:  # its own compact storage
        strides, offset, data = list(contiguous_strides(view.shape)), 0, view.reshape(-1)
    tensor = header(1, f"torch.{name}Tensor") + i32(view.ndim)
    tensor += longs(long_size, *view.shape, *strides, offset + 1)
    storage = header(2, f"torch.{name}Storage") + longs(long_size, data.size)
    return tensor + storage + np.ascontiguousarray(data).tobytes()


@st.composite
def views(draw: st.DrawFn) -> np.ndarray[Any, Any]:
    """Views made by slicing (steps, size-1 ranges, selections), new axes, transposes, reshapes
    and np.lib.stride_tricks, of a C-contiguous base; every one holds elements."""
    dtype = draw(st.sampled_from([d for d in NAMES if d != "<i8"]))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    base = np.arange(int(np.prod(shape)) * 2, dtype=dtype)[::2].copy().reshape(shape)
    view = base
    for _ in range(draw(st.integers(1, 3))):
        view = draw(st.sampled_from(list(_steps(view))))
    return view


def _steps(view: np.ndarray[Any, Any]) -> Any:
    n = view.shape[0]
    yield view[1 % n : 1 % n + 1]  # a size-1 dimension that keeps its stride
    yield view[::2]
    yield view[:, None] if view.ndim < 4 else view
    yield view.T
    if view.ndim > 1:
        yield view[n - 1]
        yield view[:, 1 % view.shape[1] :: 2]
    if view.flags.c_contiguous:
        yield view.reshape(-1)
        yield np.lib.stride_tricks.as_strided(view.reshape(-1), (1, view.size), (0, view.itemsize))
        yield np.lib.stride_tricks.sliding_window_view(view.reshape(-1), min(2, view.size))
    yield view[::-1]  # negative strides: Torch has none, written as a copy


@given(views(), st.sampled_from(["binary", "b32"]))
def test_views_are_written_as_written_by_hand(view: np.ndarray[Any, Any], fmt: str) -> None:
    want = by_hand(view, 4 if fmt == "b32" else 8)
    assert streamser.serialize(view, fmt) == want
    back = streamser.deserialize(want, fmt)
    np.testing.assert_array_equal(back, view)
    if torch_like(view):
        assert back.strides == view.strides  # size-1 dimensions included
    assert streamser.serialize(back, fmt) == want


@given(views())
def test_ascii_keeps_the_geometry_too(view: np.ndarray[Any, Any]) -> None:
    data = streamser.serialize(view, "ascii")
    back = streamser.deserialize(data, "ascii")
    if torch_like(view):
        assert back.strides == view.strides
    assert streamser.serialize(back, "ascii") == data


def test_a_size_1_dimension_read_with_any_stride_is_written_back_with_it() -> None:
    storage = header(2, "torch.FloatStorage") + longs(8, 6) + np.arange(6, dtype="<f4").tobytes()
    for stride in (0, 1, 3, 7, 10**9):
        data = header(1, "torch.FloatTensor") + i32(2) + longs(8, 1, 3, stride, 1, 2) + storage
        tensor = streamser.deserialize(data)
        assert tensor.strides == (stride * 4, 4)
        np.testing.assert_array_equal(tensor, [[1, 2, 3]])
        assert streamser.serialize(tensor) == data


def test_layout_of_owned_arrays_and_copies() -> None:
    owned = np.ones((2, 3), np.float32)
    layout = layout_of(owned)
    assert (layout.sizes, layout.strides, layout.offset) == ((2, 3), (3, 1), 0)
    assert layout.storage_key is owned
    odd = np.ndarray((1, 3), np.float32, buffer=np.zeros(3, np.float32), strides=(-4, 4))
    assert layout_of(odd).strides == (3, 1)  # a stride Torch cannot have, on a size-1 dim
    assert layout_of(np.float64(2.5)).sizes == (1,)
    assert layout_of(np.zeros((0, 3))).storage_data is None


def test_tensor_view_checks_the_extent() -> None:
    storage = np.arange(10.0)
    assert tensor_view(storage, (2, 3), (3, 1), 4, 0).tolist() == [[4, 5, 6], [7, 8, 9]]
    with pytest.raises(FormatError, match="reaches element 10"):
        tensor_view(storage, (2, 3), (4, 1), 4, 7)
    with pytest.raises(FormatError, match="outside its storage"):
        tensor_view(storage, (1,), (1,), 11, 0)
    with pytest.raises(FormatError, match="negative"):
        tensor_view(storage, (2,), (-1,), 5, 0)
    assert tensor_view(storage, (), (), 3, 0).shape == (0,)
    assert check_extent(10, (2, 3), (3, 1), 4, 0) == (4, 10)
    assert check_extent(10, (0, 3), (3, 1), 4, 0) == (4, 4)


_HUGE = 1 << 40  # elements: 4 TiB of float32 if a view were ever written as it shows


def _repeats() -> list[tuple[str, np.ndarray[Any, Any]]]:
    one = np.array([2.5], np.float32)
    return [
        ("as_strided", np.lib.stride_tricks.as_strided(one, shape=(_HUGE,), strides=(0,))),
        ("foreign buffer", np.ndarray((_HUGE,), np.float32, buffer=bytearray(4), strides=(0,))),
        ("broadcast rows", np.broadcast_to(np.arange(4, dtype=np.float32), (_HUGE // 4, 4))),
        ("reversed rows", np.broadcast_to(np.arange(4, dtype=np.float32)[::-1], (_HUGE // 4, 4))),
    ]


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize(("name", "view"), _repeats())
def test_a_view_that_repeats_memory_is_written_as_the_memory_it_covers(
    name: str, view: np.ndarray[Any, Any], compact: bool
) -> None:
    """A stride-0 view of 2**40 elements is written over the few elements it covers, in any
    mode (``compact`` included) and whatever owns its memory: never expanded."""
    data = streamser.serialize({"v": view}, compact=compact)
    assert len(data) < 300, name
    back = streamser.deserialize(data)["v"]
    assert back.shape == view.shape
    assert 0 in back.strides
    probe = tuple(min(n - 1, 123_456_789) for n in view.shape)
    assert back[probe] == view[probe]
    assert np.array_equal(back[:3], view[:3])
    assert np.array_equal(back[-3:], view[-3:])


def test_overlapping_windows_are_written_over_the_memory_they_cover() -> None:
    windows = np.lib.stride_tricks.sliding_window_view(np.arange(1000.0), 100)  # 90,100 shown
    for compact in (False, True):
        data = streamser.serialize(windows, compact=compact)
        assert len(data) < 1000 * 8 + 200
        assert np.array_equal(streamser.deserialize(data), windows)


def test_a_private_copy_of_a_broadcast_stays_a_broadcast() -> None:
    from streamser.values.tensors import private_copy

    one = np.arange(3, dtype=np.float32)
    wide = np.lib.stride_tricks.as_strided(one, shape=(1 << 40, 3), strides=(0, 4))
    copy = private_copy(wide)
    assert copy.shape == wide.shape
    assert copy.strides == wide.strides
    assert not np.shares_memory(copy, one)
    assert copy.base is not None
    assert copy[123456789].tolist() == [0.0, 1.0, 2.0]
    assert not copy.flags.writeable
    empty = np.lib.stride_tricks.as_strided(one, shape=(0, 5), strides=(4, 400))
    assert private_copy(empty).shape == (0, 5)
    small = np.broadcast_to(one, (1000, 3))  # small enough to copy whole: writable
    assert private_copy(small).flags.writeable
    assert np.array_equal(private_copy(small), small)
    plain = one[::2]
    assert private_copy(plain).tolist() == [0.0, 2.0]
    assert private_copy(plain).flags.writeable
