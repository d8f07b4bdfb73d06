"""streamser.torch: tensors that share memory, PyTorch names, module building and its errors."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st_h
from torch7_models import fast_lstm, linear, longs, module, sequencer

import streamser
import streamser.torch as st
from streamser import LuaFunction, LuaTable, Storage, TorchObject

RNG = np.random.default_rng(7)
NETS = Path(__file__).parent / "real-world" / "opencv-nets"

# The layers issue 14 asks for (OpenCV's Torch importer's, and rnn's, LookupTable, Narrow,
# Select); the tests of test_torch_layers.py and test_torch_opencv.py run each of them.
REQUIRED = [
    "Sequential",
    "Concat",
    "DepthConcat",
    "ConcatTable",
    "Parallel",
    "CAddTable",
    "JoinTable",
    "Identity",
    "Linear",
    "SpatialConvolution",
    "SpatialConvolutionMM",
    "SpatialFullConvolution",
    "SpatialMaxPooling",
    "SpatialAveragePooling",
    "SpatialLPPooling",
    "BatchNormalization",
    "SpatialBatchNormalization",
    "Dropout",
    "ReLU",
    "PReLU",
    "Tanh",
    "Sigmoid",
    "SoftMax",
    "LogSoftMax",
    "View",
    "Reshape",
    "Padding",
    "SpatialZeroPadding",
    "SpatialReflectionPadding",
    "SpatialUpSamplingNearest",
    "SpatialCrossMapLRN",
    "Normalize",
    "MulConstant",
    "Power",
    "Square",
    "Sqrt",
    "Inception",
    "LSTM",
    "FastLSTM",
    "GRU",
    "Sequencer",
    "Recursor",
    "LookupTable",
    "Narrow",
    "Select",
]


def conv_mm(n_in: int, n_out: int, k: int) -> TorchObject:
    return module(
        "nn.SpatialConvolutionMM",
        weight=RNG.standard_normal((n_out, n_in * k * k)),
        bias=RNG.standard_normal(n_out),
        nInputPlane=n_in,
        nOutputPlane=n_out,
        kW=k,
        kH=k,
        dW=1,
        dH=1,
        padW=0,
        padH=0,
    )


def batch_norm(n: int, train: Any = False) -> TorchObject:
    return module(
        "nn.SpatialBatchNormalization",
        weight=np.ones(n),
        bias=np.zeros(n),
        running_mean=np.zeros(n),
        running_var=np.ones(n),
        eps=1e-5,
        momentum=0.1,
        affine=True,
        train=train,
        save_mean=np.zeros(n),
        save_std=np.zeros(n),
    )


# ------------------------------------------------------------------------------ to_torch


def test_to_torch_shares_memory_and_objects() -> None:
    base = np.arange(12.0)
    view = base[2:8].reshape(2, 3)
    value = LuaTable({"a": base, "b": view, "again": base})
    out = st.to_torch(value)
    assert out["a"] is out["again"]
    out["b"][0, 0] = -1.0
    assert base[2] == -1.0
    assert out["a"][2] == -1.0
    assert value["a"] is base  # the input is left as it was


# a value is built from a pool of arrays, referred to by index, so that some repeat
_shapes = st_h.lists(st_h.integers(0, 3), max_size=3)
_trees = st_h.recursive(
    st_h.integers(0, 3) | st_h.text(max_size=3),
    lambda inner: (
        st_h.lists(inner, max_size=3)
        | st_h.dictionaries(st_h.text(max_size=3), inner, max_size=3)
        | st_h.builds(lambda items: ("table", items), st_h.lists(inner, max_size=3))
    ),
    max_leaves=12,
)


def _build(tree: Any, pool: list[np.ndarray[Any, Any]]) -> Any:
    if isinstance(tree, int):
        return pool[tree]
    if isinstance(tree, tuple):
        return LuaTable.from_list([_build(item, pool) for item in tree[1]])
    if isinstance(tree, list):
        return [_build(item, pool) for item in tree]
    if isinstance(tree, dict):
        return {key: _build(item, pool) for key, item in tree.items()}
    return tree


def _pairs(source: Any, result: Any) -> Iterator[tuple[Any, Any]]:
    """(array, tensor) pairs at the same places of the input and the output."""
    if isinstance(source, np.ndarray):
        yield source, result
    elif isinstance(source, (list, LuaTable, dict)):
        keys = list(source.keys()) if not isinstance(source, list) else range(len(source))
        for key in keys:
            yield from _pairs(source[key], result[key])


@settings(max_examples=60, deadline=None)
@given(st_h.lists(_shapes, min_size=4, max_size=4), _trees)
def test_to_torch_any_nesting_keeps_values_and_sharing(shapes: Any, tree: Any) -> None:
    base = np.arange(200.0)
    pool = [base[: int(np.prod(shape))].reshape(shape) for shape in shapes]
    value = _build(tree, pool)
    tensors: dict[int, torch.Tensor] = {}
    for array, tensor in _pairs(value, st.to_torch(value)):
        assert isinstance(tensor, torch.Tensor)
        np.testing.assert_array_equal(tensor.numpy(), array)
        assert tensor.data_ptr() == array.ctypes.data or array.size == 0
        assert tensors.setdefault(id(array), tensor) is tensor


def test_to_torch_keeps_cycles_and_rebuilds_every_container() -> None:
    table = LuaTable()
    obj = TorchObject("nn.Custom", LuaTable({"self": None, "w": np.ones(2)}))
    obj["self"] = obj
    table["t"] = table
    table["o"] = obj
    table[np.zeros(1)] = "array key"
    table["mixed"] = [({"k": np.ones(1)},), Storage(np.arange(3, dtype=np.int64))]
    table["f"] = LuaFunction(b"\x1bLJ", LuaTable({1: np.ones(3)}))
    out = st.to_torch(table)
    assert out["t"] is out
    assert out["o"] is not obj
    assert out["o"]["self"] is out["o"]
    assert out["o"].typename == "nn.Custom"
    assert isinstance(out["o"]["w"], torch.Tensor)
    (key,) = (k for k in out if not isinstance(k, str))
    assert isinstance(key, torch.Tensor)
    assert out[key] == "array key"
    nested, storage = out["mixed"]
    assert isinstance(nested, tuple)
    assert isinstance(nested[0]["k"], torch.Tensor)
    assert storage.tolist() == [0, 1, 2]
    assert out["f"].bytecode == b"\x1bLJ"
    assert isinstance(out["f"].upvalues[1], torch.Tensor)


def test_to_torch_deep_nesting_needs_no_recursion() -> None:
    root = inner = LuaTable()
    for _ in range(20_000):
        inner[1] = LuaTable()
        inner = inner[1]
    inner[1] = np.ones(1)
    out = st.to_torch(root)
    for _ in range(20_000):
        out = out[1]
    assert isinstance(out[1], torch.Tensor)


def test_to_torch_of_a_mapped_file_copies_nothing() -> None:
    net = streamser.load(NETS / "net_conv_net.dat")
    out = st.to_torch(net)
    assert out.modules[1].weight.data_ptr() == net.modules[1].weight.ctypes.data


def test_read_only_arrays_are_copied_once_per_storage_by_default() -> None:
    data = streamser.serialize({"a": np.arange(16.0).reshape(4, 4)[1:3], "b": np.arange(16.0)})
    value = streamser.deserialize(data)  # views of immutable bytes
    value["c"] = value["a"][1]  # a second view of a's storage
    assert not value["a"].flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = st.to_torch(value)
    out["a"][1, 0] = 100.0  # writable, and not the bytes
    assert out["c"][0] == 100.0  # views of one storage still share memory
    assert value["a"][1, 0] == 8.0
    assert streamser.deserialize(data)["a"][1, 0] == 8.0


def test_read_only_arrays_can_be_shared_without_copy_or_warning() -> None:
    array = np.arange(6.0)
    array.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = st.to_torch(array, readonly="share")
    assert tensor.data_ptr() == array.ctypes.data
    with pytest.raises(ValueError, match="readonly"):
        st.to_torch(array, readonly="never")  # type: ignore[arg-type]


def test_byte_order_and_negative_strides_are_converted() -> None:
    big = np.arange(4, dtype=">f4")
    assert st.to_torch(big).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert st.to_torch(np.arange(4.0)[::-1]).tolist() == [3.0, 2.0, 1.0, 0.0]


# ---------------------------------------------------------------------------- state_dict


def test_state_dict_names_layouts_and_buffers() -> None:
    inner = module("nn.Concat", conv_mm(3, 2, 3), conv_mm(3, 4, 3), dimension=2)
    model = module(
        "nn.Sequential",
        conv_mm(3, 3, 1),
        module("nn.ReLU", threshold=0, val=0),
        inner,
        batch_norm(6),
        module("nn.View", size=longs(-1), numElements=1, numInputDims=3),
        linear(RNG, 24, 5),
    )
    names = {name: tuple(t.shape) for name, t in st.state_dict(model).items()}
    assert names == {
        "0.weight": (3, 3, 1, 1),
        "0.bias": (3,),
        "2.0.weight": (2, 3, 3, 3),
        "2.0.bias": (2,),
        "2.1.weight": (4, 3, 3, 3),
        "2.1.bias": (4,),
        "3.weight": (6,),
        "3.bias": (6,),
        "3.running_mean": (6,),
        "3.running_var": (6,),
        "3.num_batches_tracked": (),
        "5.weight": (5, 24),
        "5.bias": (5,),
    }
    built = st.to_module(model)
    assert list(built.state_dict()) == list(names)
    x = torch.from_numpy(RNG.standard_normal((2, 3, 4, 4)))
    assert built(x).shape == (2, 5)


def test_state_dict_loads_into_the_equivalent_hand_written_model() -> None:
    """What a user porting by hand writes: torch.nn with the same structure."""
    model = module("nn.Sequential", conv_mm(2, 3, 3), batch_norm(3), module("nn.Tanh"))
    target = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3).double(), torch.nn.BatchNorm2d(3).double(), torch.nn.Tanh()
    )
    target.load_state_dict(st.state_dict(model))
    target.eval()
    x = torch.from_numpy(RNG.standard_normal((1, 2, 5, 5)))
    with torch.no_grad():
        torch.testing.assert_close(target(x), st.to_module(model)(x))


def test_state_dict_of_classes_without_a_builder() -> None:
    dilated = module(
        "nn.SpatialDilatedConvolution", weight=np.zeros((2, 1, 3, 3)), bias=np.zeros(2)
    )
    model = module("nn.Sequential", module("nn.Identity"), dilated)
    assert list(st.state_dict(model)) == ["1.weight", "1.bias"]


def test_state_dict_shares_memory() -> None:
    net = streamser.load(NETS / "net_conv_net.dat")
    assert st.state_dict(net)["0.weight"].data_ptr() == net.modules[1].weight.ctypes.data


def test_rnn_state_dict_matches_the_built_module() -> None:
    rnn, _ = fast_lstm(RNG, 3, 2)
    model = sequencer(rnn)
    names = list(st.state_dict(model))
    assert names == list(st.to_module(model).state_dict())
    assert names[0] == "0.0.0.0.1.0.weight"  # Sequencer.FastLSTM.step.ConcatTable.gates..i2g


def test_shared_modules_and_weights_stay_shared() -> None:
    shared = linear(RNG, 3, 3)
    model = module("nn.Sequential", shared, module("nn.Tanh"), shared)
    built = st.to_module(model)
    assert built[0] is built[2]
    assert len(list(built.parameters())) == 2
    assert list(built.state_dict()) == list(st.state_dict(model))


# ---------------------------------------------------------------------------- to_module


def test_required_classes_are_supported() -> None:
    supported = set(st.supported_classes())
    assert {f"nn.{name}" for name in REQUIRED} <= supported


def test_every_unsupported_class_is_listed_at_once() -> None:
    model = module(
        "nn.Sequential",
        module("nn.SpatialDilatedConvolution"),
        module("nn.Linear", weight=np.zeros((1, 1))),
        module("nn.Sequential", module("nn.ELU"), module("nn.SpatialDilatedConvolution")),
        module("nn.MyOwnLayer", module("nn.ELU")),
    )
    with pytest.raises(st.UnsupportedModuleError) as caught:
        st.to_module(model)
    error = caught.value
    assert isinstance(error, streamser.StreamserError)
    assert error.classes == {
        "nn.ELU": ["modules.3.modules.1", "modules.4.modules.1"],
        "nn.MyOwnLayer": ["modules.4"],
        "nn.SpatialDilatedConvolution": ["modules.1", "modules.3.modules.2"],
    }
    message = str(error)
    assert message.startswith("cannot convert 3 Torch7 classes")
    for name in error.classes:
        assert name in message


def test_invalid_fields_name_the_module_path() -> None:
    bad = module("nn.SpatialMaxPooling", kW=2, kH="two")
    with pytest.raises(st.InvalidModuleError, match=r"kH.*at modules\.2"):
        st.to_module(module("nn.Sequential", module("nn.Tanh"), bad))
    mm = conv_mm(2, 2, 3)
    mm["kW"] = 4
    with pytest.raises(st.InvalidModuleError, match="36 elements"):
        st.state_dict(mm)


def test_malformed_trees_are_errors_not_hangs() -> None:
    loop = module("nn.Sequential")
    loop["modules"] = LuaTable.from_list([loop])
    with pytest.raises(st.InvalidModuleError, match="contains itself"):
        st.to_module(loop)
    with pytest.raises(st.InvalidModuleError, match="contains itself"):
        st.state_dict(loop)
    deep = module("nn.Identity")
    for _ in range(300):
        deep = module("nn.Sequential", deep)
    with pytest.raises(st.InvalidModuleError, match="deeper than"):
        st.to_module(deep)
    with pytest.raises(st.InvalidModuleError, match="list of modules"):
        st.to_module(module("nn.Sequential", modules="nope"))
    with pytest.raises(st.TorchBridgeError, match="LuaTable"):
        st.to_module(LuaTable())


def test_train_and_evaluate_states() -> None:
    model = module(
        "nn.Sequential",
        module("nn.Dropout", p=0.5, v2=True, train=False),
        batch_norm(2, train=0),  # C bool: evaluate
        module("nn.Sequential", module("nn.Dropout", p=0.5, v2=True, train=0)),  # Lua: train
        module("nn.Tanh", train=False),
        module("nn.Dropout", p=0.5),  # no field: `if self.train` is false
        sequencer(module("nn.Recursor", module("nn.Tanh"))),  # rnn: `train ~= false`
    )
    built = st.to_module(model)
    assert [built[i].training for i in range(6)] == [False, False, True, False, False, True]
    assert built.training  # a container trains when a child does
    assert built[2][0].training
    built.eval()
    assert not built[2][0].training


def test_fresh_modules_train_like_a_fresh_torch7_model() -> None:
    built = st.to_module(module("nn.Sequential", linear(RNG, 2, 2), module("nn.Tanh")))
    assert built.training
    assert all(m.training for m in built.modules())


def test_input_errors_are_streamser_errors() -> None:
    built = st.to_module(module("nn.Normalize", p=2, eps=1e-10))
    with pytest.raises(streamser.StreamserError, match="1-D or 2-D"):
        built(torch.zeros(1, 2, 3))


def test_gradients_flow_to_the_loaded_weights() -> None:
    lin = linear(RNG, 3, 2)
    built = st.to_module(lin)
    built(torch.ones(3, dtype=torch.float64)).sum().backward()
    assert built.weight.grad is not None
    assert built.weight.grad.shape == (2, 3)


# ------------------------------------------------------------------------------- files


def test_save_and_load_state_dict_round_trip(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    path = tmp_path / "sd.t7"
    st.save_state_dict(path, model.state_dict())
    loaded = st.load_state_dict(path)
    assert list(loaded) == list(model.state_dict())
    for name, tensor in model.state_dict().items():  # Torch7 has no 0-d tensors: 1 element
        assert torch.equal(loaded[name].reshape(tensor.shape), tensor), name
    fresh = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3))
    fresh.load_state_dict(st.load_state_dict(path))
    raw = streamser.load(path)
    assert isinstance(raw["0.weight"], np.ndarray)  # a plain Torch7 table of tensors


def test_saved_views_of_one_tensor_stay_one_storage(tmp_path: Path) -> None:
    weights = torch.arange(12.0).reshape(3, 4)
    tensors = {"all": weights, "rows": weights[1:, ::2], "t": weights.t()}
    st.save_state_dict(tmp_path / "v.t7", tensors, format="ascii")
    raw = streamser.load(tmp_path / "v.t7")
    assert np.shares_memory(raw["all"], raw["rows"])
    assert np.shares_memory(raw["all"], raw["t"])
    np.testing.assert_array_equal(raw["rows"], weights[1:, ::2].numpy())
    np.testing.assert_array_equal(raw["t"], weights.t().numpy())


def test_load_state_dict_of_a_module_file() -> None:
    net_path = NETS / "net_batch_norm_net.dat"
    loaded = st.load_state_dict(net_path)
    assert list(loaded) == list(st.to_module(streamser.load(net_path)).state_dict())


def test_state_dict_file_errors(tmp_path: Path) -> None:
    with pytest.raises(streamser.UnsupportedValueError, match="bfloat16"):
        st.save_state_dict(tmp_path / "x.t7", {"w": torch.ones(2, dtype=torch.bfloat16)})
    assert not (tmp_path / "x.t7").exists()
    with pytest.raises(st.TorchBridgeError, match="not a tensor"):
        st.load_state_dict({"w": "text"})
    with pytest.raises(st.TorchBridgeError, match="a module or a table"):
        st.load_state_dict([np.ones(1)])


def test_core_streamser_never_imports_torch() -> None:
    code = (
        "import sys, numpy, streamser; "
        f"streamser.load({str(NETS / 'net_conv_net.dat')!r}); "
        "streamser.save('/dev/null', {'w': numpy.ones(2)}); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------- real Torch7 forwards in the corpus

CORPUS = Path(__file__).parent / "corpus"


def _input_from_unfolded(conv: TorchObject) -> np.ndarray[Any, Any]:
    """The input of a saved SpatialConvolution, from its ``finput`` (THNN's unfold: row
    ``c*kH*kW + ky*kW + kx``, column ``y*outW + x``, stride 1, no padding)."""
    batch, _, positions = conv.finput.shape
    out_w = conv.output.shape[-1]
    out_h = positions // out_w
    k_h, k_w, planes = conv.kH, conv.kW, conv.nInputPlane
    x = np.zeros((batch, planes, out_h + k_h - 1, out_w + k_w - 1))
    patches = conv.finput.reshape(batch, planes, k_h, k_w, out_h, out_w)
    for ky in range(k_h):
        for kx in range(k_w):
            x[:, :, ky : ky + out_h, kx : kx + out_w] = patches[:, :, ky, kx]
    return x


@pytest.mark.parametrize("name", ["nn_seq.binary.t7", "nn_serial_heavy.ascii.t7"])
def test_corpus_model_reproduces_its_saved_forward(name: str) -> None:
    """The corpus's 'heavy' models keep the buffers of Torch7's last forward: the unfolded
    input of the convolution and the output of every module."""
    model = streamser.load(CORPUS / name)
    sequential = model if model.typename == "nn.Sequential" else model.modules[1]
    layers = sequential.modules.to_list()
    built = st.to_module(model)
    with torch.no_grad():
        output = built(torch.from_numpy(_input_from_unfolded(layers[0])))
    np.testing.assert_allclose(output.numpy(), layers[-1].output, rtol=1e-5, atol=1e-6)


def test_shared_child_runs_at_each_of_its_places() -> None:
    tanh = module("nn.Tanh")
    built = st.to_module(module("nn.ConcatTable", tanh, tanh, module("nn.Identity")))
    outputs = built(torch.zeros(2))
    assert len(outputs) == 3
