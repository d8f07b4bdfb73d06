"""spec/format: the format as data (tags, element types, class names, formats)."""

from __future__ import annotations

import numpy as np
import pytest

from streamser.errors import UnsupportedValueError
from streamser.spec.format import (
    CLASSES,
    CPU_STORAGE,
    CPU_TENSOR,
    ELEMENTS,
    FORMATS,
    FUNCTION_TAGS,
    TAG_NAMES,
    default_class,
    element_of,
    get_format,
)


def test_every_class_pairs_a_tensor_with_a_storage_of_its_element() -> None:
    assert len(CLASSES) == 4 * len(ELEMENTS)  # CPU and CUDA, tensor and storage
    for cls in CLASSES.values():
        storage = CLASSES[cls.storage_typename]
        tensor = CLASSES[cls.tensor_typename]
        assert not storage.is_tensor
        assert tensor.is_tensor
        assert storage.element is tensor.element is cls.element
        assert storage.is_cuda == tensor.is_cuda == cls.is_cuda
    assert CLASSES["torch.CudaTensor"].element.name == "Float"  # Torch's CUDA float name
    assert CPU_TENSOR["Half"].typename == "torch.HalfTensor"
    assert CPU_STORAGE["Byte"].typename == "torch.ByteStorage"


def test_element_types_and_their_layouts() -> None:
    assert [e.itemsize for e in ELEMENTS.values()] == [1, 1, 2, 4, 8, 4, 8, 2]
    assert all(e.dtype.str[0] in "<|" for e in ELEMENTS.values())  # little endian files
    assert ELEMENTS["Byte"].is_raw
    assert ELEMENTS["Char"].is_raw
    assert not ELEMENTS["Int"].is_raw
    assert ELEMENTS["Long"].file_dtype(4) == np.dtype("<i4")  # b32: 4-byte longs
    assert ELEMENTS["Long"].file_dtype(8) == np.dtype("<i8")
    assert ELEMENTS["Double"].file_dtype(4) == np.dtype("<f8")
    assert ELEMENTS["Double"].ascii_format == "%.17g"


def test_tags() -> None:
    assert sorted(TAG_NAMES) == list(range(9))
    assert {6, 7, 8} == FUNCTION_TAGS


def test_formats() -> None:
    assert {name: fmt.long_size for name, fmt in FORMATS.items() if not fmt.ascii} == {
        "binary": 8, "b64": 8, "b32": 4,
    }  # fmt: skip
    assert get_format("ascii").ascii
    with pytest.raises(ValueError, match="expected one of 'binary', 'b64', 'b32', 'ascii'"):
        get_format("b16")
    with pytest.raises(ValueError, match="unknown format"):
        get_format(None)  # type: ignore[arg-type]


def test_numpy_types_map_to_elements() -> None:
    assert element_of(np.dtype(">f4")).name == "Float"  # any byte order
    assert element_of(np.dtype("u1")).name == "Byte"
    for bad in ("u2", "c8", "?", "O"):
        with pytest.raises(UnsupportedValueError, match="no Torch7 tensor type"):
            element_of(np.dtype(bad), "<root>.x")
    assert default_class(np.dtype("<i8"), tensor=True).typename == "torch.LongTensor"
    assert default_class(np.dtype("<f2"), tensor=False).typename == "torch.HalfStorage"
