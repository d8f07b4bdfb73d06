"""torch tensors written by save / serialize / Writer: layouts, sharing, devices, casts, errors."""

from __future__ import annotations

import gc
import io
import math
import tempfile
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_h

import streamser
import streamser.codecs.binary
import streamser.graph.writer
import streamser.torch as st

MAPPED = [
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.float32,
    torch.float64,
]


def numpy_twin(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray[Any, Any]]:
    """The same values as numpy views of one base array per torch storage (and dtype), which
    the core writer is known to write as views of one Torch7 storage."""
    bases: dict[tuple[int, torch.dtype], np.ndarray[Any, Any]] = {}
    twins: dict[str, np.ndarray[Any, Any]] = {}
    made: dict[int, np.ndarray[Any, Any]] = {}  # one array per tensor object, as written
    for name, original in tensors.items():
        if id(original) in made:
            twins[name] = made[id(original)]
            continue
        tensor = original.detach()
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), tensor.dtype)
        if key not in bases:
            whole = tensor.as_strided((storage.nbytes() // tensor.element_size(),), (1,), 0)
            bases[key] = whole.numpy().copy()
        base = bases[key]
        size = base.itemsize
        twins[name] = made[id(original)] = np.ndarray(
            tuple(tensor.shape),
            base.dtype,
            buffer=base,
            offset=tensor.storage_offset() * size,
            strides=tuple(stride * size for stride in tensor.stride()),
        )
    return twins


def torch7_shape(tensor: torch.Tensor) -> tuple[int, ...]:
    """The shape a tensor loads back with: Torch7 has no 0-d tensors and one empty tensor."""
    if tensor.numel() == 0:
        return (0,)
    return tuple(tensor.shape) or (1,)


# ------------------------------------------------------------------- hypothesis round trip


@st_h.composite
def state_dicts(draw: Any) -> dict[str, torch.Tensor]:
    """Tensors of every mapped dtype: whole storages, strided and overlapping views of them,
    transposes, 0-d and empty tensors, and Parameters."""
    bases = []
    for _ in range(draw(st_h.integers(1, 3))):
        dtype = draw(st_h.sampled_from(MAPPED))
        n = draw(st_h.integers(1, 40))
        values = torch.from_numpy(np.arange(n) * 7 % 23 - 5).to(dtype)
        bases.append(values)
    tensors: dict[str, torch.Tensor] = {}
    for index in range(draw(st_h.integers(1, 6))):
        base = draw(st_h.sampled_from(bases))
        n = base.numel()
        kind = draw(st_h.sampled_from(["whole", "view", "transpose", "scalar", "empty", "param"]))
        if kind == "view":
            ndim = draw(st_h.integers(1, 3))
            sizes = [draw(st_h.integers(1, 3)) for _ in range(ndim)]
            strides = [draw(st_h.integers(0, 4)) for _ in range(ndim)]
            reach = sum((size - 1) * stride for size, stride in zip(sizes, strides, strict=True))
            if reach >= n:
                continue
            offset = draw(st_h.integers(0, n - 1 - reach))
            tensor = base.as_strided(sizes, strides, offset)
        elif kind == "transpose" and n % 2 == 0:
            tensor = base.reshape(2, n // 2).t()
        elif kind == "scalar":
            tensor = base[draw(st_h.integers(0, n - 1))]
        elif kind == "empty":
            tensor = base[:0]
        elif kind == "param" and base.is_floating_point():
            tensor = torch.nn.Parameter(base.reshape(1, n))
        else:
            tensor = base
        tensors[f"t{index}"] = tensor
    return tensors


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(state_dicts(), st_h.sampled_from(["binary", "ascii"]))
def test_state_dicts_round_trip_with_values_dtypes_and_sharing(
    tensors: dict[str, torch.Tensor], fmt: str
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sd.t7"
        streamser.save(path, OrderedDict(tensors), format=fmt)
        loaded = streamser.load(path)
        index = {} if fmt == "ascii" else {t.path: t for t in streamser.open(path).tensors()}
        back = st.to_torch(loaded)
    assert streamser.serialize(tensors, fmt) == streamser.serialize(numpy_twin(tensors), fmt)
    for name, tensor in tensors.items():
        array = loaded[name]
        assert array.dtype == tensor.detach().numpy().dtype, name
        assert array.shape == torch7_shape(tensor), name
        np.testing.assert_array_equal(array.reshape(-1), tensor.detach().reshape(-1).numpy())
        assert back[name].dtype == tensor.dtype
        assert torch.equal(back[name].reshape(-1), tensor.detach().reshape(-1))
    for a, b in _pairs(tensors):
        one_storage = _same_storage(tensors[a], tensors[b])
        if index:
            same = index[a].storage_offset == index[b].storage_offset
            assert same == one_storage, (a, b)
        if one_storage and _overlap(tensors[a], tensors[b]):
            assert np.shares_memory(loaded[a], loaded[b]), (a, b)


def _pairs(tensors: dict[str, torch.Tensor]) -> Iterator[tuple[str, str]]:
    """Pairs of names of distinct tensors with elements (the first name of a tensor given
    twice: the file indexes a back-reference under its first path)."""
    firsts = {id(tensor): name for name, tensor in reversed(tensors.items())}
    names = [name for name, tensor in tensors.items() if tensor.numel() and name in firsts.values()]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            yield a, b


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage() is b.untyped_storage() and a.dtype == b.dtype


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    first = _elements(a)
    return bool(first & _elements(b))


def _elements(t: torch.Tensor) -> set[int]:
    index = torch.arange(t.untyped_storage().nbytes() // t.element_size())
    return set(index.as_strided(t.shape, t.stride(), t.storage_offset()).reshape(-1).tolist())


# ---------------------------------------------------------------------- what is accepted


def test_state_dict_of_a_module_and_nested_containers() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    value = {"model": model.state_dict(), "history": [torch.ones(2), (torch.zeros(1),)]}
    loaded = streamser.deserialize(bytearray(streamser.serialize(value)))
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(
            loaded["model"][name].reshape(tensor.shape), tensor.numpy(), err_msg=name
        )
    assert loaded["history"].to_list()[0].tolist() == [1.0, 1.0]


def test_parameters_are_written_detached_and_share_with_their_data() -> None:
    layer = torch.nn.Linear(2, 3)
    value = {"weight": layer.weight, "data": layer.weight.data, "row": layer.weight[1]}
    loaded = streamser.deserialize(bytearray(streamser.serialize(value)))
    np.testing.assert_array_equal(loaded["weight"], layer.weight.detach().numpy())
    assert np.shares_memory(loaded["weight"], loaded["data"])
    assert np.shares_memory(loaded["weight"], loaded["row"])


def test_the_same_tensor_twice_is_one_object_and_unreferenced_writes_it_twice() -> None:
    t = torch.arange(4.0)
    loaded = streamser.deserialize(bytearray(streamser.serialize([t, t])))
    assert loaded[1] is loaded[2]
    flat = streamser.deserialize(streamser.serialize([t, t], referenced=False), referenced=False)
    assert flat[1] is not flat[2]
    np.testing.assert_array_equal(flat[2], t.numpy())


def test_cpu_tensors_are_written_from_their_memory() -> None:
    t = torch.arange(1 << 18, dtype=torch.float32)  # 1 MiB: a payload that bypasses the buffer
    pieces = streamser.api.serialize_pieces({"t": t})
    views = [p for p in pieces if isinstance(p, memoryview) and p.nbytes == t.nbytes]
    assert len(views) == 1
    assert np.frombuffer(views[0], np.float32).ctypes.data == t.data_ptr()


def test_same_bytes_from_the_compiled_and_the_python_writer() -> None:
    a = torch.arange(12.0).reshape(3, 4)
    value = {"a": a, "b": a.t(), "c": {"p": torch.nn.Parameter(torch.ones(2))}, "n": 3}
    compiled = streamser.serialize(value)
    saved = streamser.graph.writer._FAST
    streamser.graph.writer._FAST = None
    try:
        assert streamser.serialize(value) == compiled
    finally:
        streamser.graph.writer._FAST = saved


def test_writer_and_compact_and_casts() -> None:
    a = torch.arange(6, dtype=torch.float64).reshape(2, 3)
    out = io.BytesIO()
    with streamser.Writer(out, compact=True, cast="float32") as writer:
        writer.write_object({"a": a, "col": a[:, 1]})
    reader = streamser.Reader(bytearray(out.getvalue()))
    loaded = reader.read_object()
    assert loaded["col"].dtype == np.float32
    assert loaded["col"].tolist() == [1.0, 4.0]
    assert not np.shares_memory(loaded["a"], loaded["col"])  # compact: its own storage


def test_a_second_dtype_over_one_storage_is_its_own_storage() -> None:
    a = torch.arange(4, dtype=torch.float32)
    value = {"f": a, "i": a.view(torch.int32), "f2": a[1:]}
    loaded = streamser.deserialize(bytearray(streamser.serialize(value)))
    np.testing.assert_array_equal(loaded["i"], a.view(torch.int32).numpy())
    assert np.shares_memory(loaded["f"], loaded["f2"])
    assert not np.shares_memory(loaded["f"], loaded["i"])


def test_negated_views_are_materialised() -> None:
    a = torch.arange(3.0)
    loaded = streamser.deserialize(bytearray(streamser.serialize({"n": torch._neg_view(a)})))
    assert loaded["n"].tolist() == [-0.0, -1.0, -2.0]


def test_streamed_tensors_are_not_kept_alive_by_the_writer() -> None:
    alive: list[weakref.ref[torch.Tensor]] = []

    def produce() -> Iterator[tuple[str, torch.Tensor]]:
        for index in range(5):
            tensor = torch.full((1000,), float(index))
            alive.append(weakref.ref(tensor))
            yield f"t{index}", tensor
            gc.collect()
            assert sum(ref() is not None for ref in alive) <= 2

    out = io.BytesIO()
    streamser.save(out, streamser.TableStream(5, produce()))
    loaded = streamser.deserialize(bytearray(out.getvalue()))
    assert [loaded[f"t{i}"][0] for i in range(5)] == [0.0, 1.0, 2.0, 3.0, 4.0]


# ------------------------------------------------------------- types Torch7 lacks, errors


@pytest.mark.parametrize(
    ("dtype", "advice"),
    [
        (torch.bfloat16, 'cast="float32"'),
        (torch.float8_e4m3fn, 'cast="float32"'),
        (torch.float8_e5m2, 'cast="float32"'),
        (torch.bool, 'cast="torch.BoolTensor=torch.ByteTensor"'),
        (torch.uint16, 'cast="torch.UInt16Tensor=torch.IntTensor"'),
        (torch.uint32, 'cast="torch.UInt32Tensor=torch.LongTensor"'),
        (torch.complex64, "view_as_real"),
    ],
)
def test_types_torch7_lacks_name_the_cast_that_converts_them(
    tmp_path: Path, dtype: torch.dtype, advice: str
) -> None:
    path = tmp_path / "x.t7"
    path.write_bytes(b"old")
    with pytest.raises(streamser.UnsupportedValueError, match=r"<root>\.w") as error:
        streamser.save(path, {"w": torch.zeros(3, dtype=dtype)})
    assert advice in str(error.value)
    assert path.read_bytes() == b"old"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2])
@pytest.mark.parametrize("cast", ["float32", "float64", "cpu+float32"])
def test_floating_types_convert_exactly_with_a_float_cast(dtype: torch.dtype, cast: str) -> None:
    values = torch.tensor([0.5, -2.0, 3.0, float("inf"), 0.0]).to(dtype)
    expected = values.to(torch.float64).numpy()
    for fmt in ("binary", "ascii"):
        loaded = streamser.deserialize(streamser.serialize({"w": values}, fmt, cast=cast))
        np.testing.assert_array_equal(loaded["w"], expected)
        assert loaded["w"].dtype == np.dtype(cast.removeprefix("cpu+"))


def test_bool_and_unsigned_types_convert_with_a_mapping_cast() -> None:
    mask = torch.tensor([True, False, True])
    cast = {"torch.BoolTensor": "torch.ByteTensor", "torch.UInt16Tensor": "torch.IntTensor"}
    wide = torch.tensor([0, 65535], dtype=torch.uint16)
    loaded = streamser.deserialize(streamser.serialize({"m": mask, "u": wide}, cast=cast))
    assert loaded["m"].dtype == np.uint8
    assert loaded["m"].tolist() == [1, 0, 1]
    assert loaded["u"].dtype == np.int32
    assert loaded["u"].tolist() == [0, 65535]
    as_text = "torch.BoolTensor=torch.ByteTensor"
    assert streamser.serialize({"m": mask}, cast=as_text) == streamser.serialize(
        {"m": mask}, cast=cast
    )


@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_casts_to_byte_and_char_convert_each_element(fmt: str) -> None:
    cast = {"torch.UInt16Tensor": "torch.CharTensor", "torch.IntTensor": "torch.ByteTensor"}
    value = {"u": torch.tensor([1, 2, 300], dtype=torch.uint16), "i": np.arange(3, dtype=np.int32)}
    loaded = streamser.deserialize(streamser.serialize(value, fmt, cast=cast), fmt)
    assert loaded["u"].dtype == np.int8
    assert loaded["u"].tolist() == [1, 2, 44]  # wrapped, as Torch7 converts
    assert loaded["i"].dtype == np.uint8
    assert loaded["i"].tolist() == [0, 1, 2]


def test_views_of_a_converted_storage_stay_one_storage() -> None:
    base = torch.arange(8.0).to(torch.bfloat16)
    value = {"all": base, "tail": base[4:]}
    loaded = streamser.deserialize(bytearray(streamser.serialize(value, cast="float32")))
    assert np.shares_memory(loaded["all"], loaded["tail"])
    assert loaded["tail"].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_modules_sparse_quantized_and_meta_tensors_are_refused() -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        quantized = torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8)

    class Net(torch.nn.Module):
        pass

    cases: list[tuple[Any, str]] = [
        (torch.nn.Linear(2, 2), "state_dict"),
        (Net(), "save its state_dict"),
        (torch.eye(2).to_sparse(), "to_dense"),
        (quantized, "dequantize"),
        (torch.empty(2, device="meta"), "meta"),
    ]
    for value, advice in cases:
        with pytest.raises(streamser.UnsupportedValueError, match=advice):
            streamser.serialize({"x": value})


def test_unknown_pytorch_names_in_a_cast_are_errors() -> None:
    with pytest.raises(ValueError, match="ComplexFloatTensor"):
        streamser.serialize({}, cast={"torch.ComplexFloatTensor": "torch.FloatTensor"})
    with pytest.raises(ValueError, match="BoolTensor"):
        streamser.serialize({}, cast="torch.FloatTensor=torch.BoolTensor")


# --------------------------------------------------------------- tensors on other devices


class DeviceTensor(torch.Tensor):
    """A CPU tensor posing as a CUDA one: only ``.cpu()`` may bring its data to the host, and
    every call is counted with the number of elements it copied."""

    copies: list[int] = []  # noqa: RUF012 - shared by design: one test at a time

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)

    def cpu(self, *args: Any, **kwargs: Any) -> torch.Tensor:  # type: ignore[override]
        DeviceTensor.copies.append(self.numel())
        return torch.Tensor.cpu(self).as_subclass(torch.Tensor)

    def numpy(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        raise TypeError("can't convert cuda:0 device type tensor to numpy")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("can't convert cuda:0 device type tensor to numpy")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    DeviceTensor.copies = []
    monkeypatch.setattr(streamser.codecs.binary, "CHUNK_BYTES", 1024)
    return 1024


def on_device(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.as_subclass(DeviceTensor)


def test_device_tensors_are_copied_in_bounded_chunks(small_chunks: int) -> None:
    weight = torch.randn(64, 100)  # 25,600 bytes of float32
    device = on_device(weight)
    value = {"w": device, "rows": device[10:20], "col": device[:, 3]}
    data = streamser.serialize(value)
    host = {"w": weight, "rows": weight[10:20], "col": weight[:, 3]}
    assert data == streamser.serialize(host)  # CPU classes, one storage, same geometry
    elements = small_chunks // 4
    assert DeviceTensor.copies == [elements] * math.ceil(weight.numel() / elements)


def test_converted_device_tensors_are_bounded_on_both_sides(small_chunks: int) -> None:
    half = torch.randn(3000).to(torch.bfloat16)
    data = streamser.serialize({"w": on_device(half)}, cast="float32")
    loaded = streamser.deserialize(data)
    np.testing.assert_array_equal(loaded["w"], half.float().numpy())
    assert max(DeviceTensor.copies) * 4 <= small_chunks  # float32 on the host: the wider side
    assert sum(DeviceTensor.copies) == half.numel()


def test_compact_device_views_copy_only_their_elements(small_chunks: int) -> None:
    weight = torch.randn(200, 50)
    column = on_device(weight)[:, 7:9]  # strided: 400 of 10,000 elements
    loaded = streamser.deserialize(streamser.serialize({"c": column}, compact=True))
    np.testing.assert_array_equal(loaded["c"], weight[:, 7:9].numpy())
    assert sum(DeviceTensor.copies) == 400
    assert max(DeviceTensor.copies) <= small_chunks // 4


def test_device_tensors_in_ascii_and_compressed_files(small_chunks: int) -> None:
    weight = torch.arange(1000, dtype=torch.float64)
    for options in ({"format": "ascii"}, {"compress": "zstd"}):
        loaded = streamser.deserialize(streamser.serialize({"w": on_device(weight)}, **options))
        np.testing.assert_array_equal(loaded["w"], weight.numpy())


def test_save_state_dict_takes_device_tensors(tmp_path: Path, small_chunks: int) -> None:
    weight = torch.randn(300)
    st.save_state_dict(tmp_path / "d.t7", {"w": on_device(weight)})
    assert torch.equal(st.load_state_dict(tmp_path / "d.t7")["w"], weight)
    assert max(DeviceTensor.copies) <= small_chunks // 4
