"""cast="cpu+nn": a cudnn checkpoint written as the CPU nn checkpoint cudnn.convert would give.

The cudnn modules are built here with the fields cudnn.torch's constructors and first forward
give them (iSize, mode, groups, the group offsets ...); their nn counterparts with the fields
nn's constructors give, which the real nn modules of tests/real-world confirm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser import LuaTable, Storage, TorchObject
from streamser.cli.main import main
from streamser.errors import UnsupportedValueError
from streamser.graph.walk import walk

CORPUS = Path(__file__).parent / "corpus"
OPENCV_NETS = Path(__file__).parent / "real-world" / "opencv-nets"

MODULE = {"output", "gradInput", "_type"}
KERNEL = {"kW", "kH", "dW", "dH", "padW", "padH"}
PARAMETERS = {"weight", "bias", "gradWeight", "gradBias"}
# What nn's constructors create (nn.Module.__init__ plus each class's own __init__).
NN_FIELDS = {
    "nn.SpatialConvolution": MODULE | KERNEL | PARAMETERS | {"nInputPlane", "nOutputPlane"},
    "nn.SpatialFullConvolution": MODULE
    | KERNEL
    | PARAMETERS
    | {"nInputPlane", "nOutputPlane", "adjW", "adjH", "ones"},
    "nn.SpatialBatchNormalization": MODULE
    | PARAMETERS
    | {"affine", "eps", "train", "momentum", "running_mean", "running_var"},
    "nn.ReLU": MODULE | {"threshold", "val", "inplace"},
    "nn.SpatialMaxPooling": MODULE | KERNEL | {"ceil_mode", "indices"},
    "nn.SpatialAveragePooling": MODULE | KERNEL | {"ceil_mode", "count_include_pad", "divide"},
    "nn.SoftMax": MODULE,
    "nn.Tanh": MODULE,
}
FORWARD_STATE = {"save_mean", "save_std", "iheight", "iwidth", "finput", "fgradInput"}


def cuda(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A torch.CudaTensor, as streamser loads one on the CPU."""
    flat = np.ascontiguousarray(array, np.float32).reshape(-1)
    return Storage(flat, "torch.CudaStorage").array.reshape(array.shape)


def long_storage(*values: int) -> Storage:
    return Storage(np.array(values, np.int64), "torch.LongStorage")


def module(typename: str, **fields: Any) -> TorchObject:
    return TorchObject(typename, LuaTable(fields))


def parameters(rng: np.random.Generator, shape: tuple[int, ...], on_gpu: bool) -> dict[str, Any]:
    make = cuda if on_gpu else (lambda a: a.astype(np.float32))
    weight, bias = rng.standard_normal(shape), rng.standard_normal(shape[0])
    return {
        "weight": make(weight),
        "bias": make(bias),
        "gradWeight": make(np.zeros(shape)),
        "gradBias": make(np.zeros(shape[0])),
    }


def base(on_gpu: bool) -> dict[str, Any]:
    make = cuda if on_gpu else (lambda a: a.astype(np.float32))
    kind = "torch.CudaTensor" if on_gpu else "torch.FloatTensor"
    return {"output": make(np.zeros(0)), "gradInput": make(np.zeros(0)), "_type": kind}


def layers(on_gpu: bool) -> list[TorchObject]:
    """conv 3->4 (3x3, pad 1), batch norm, ReLU, max pool 2, average pool 2, view, linear,
    softmax: as cudnn modules (with their cudnn-only fields) or as the nn modules they become."""
    rng = np.random.default_rng(7)
    kernel = {"kW": 3, "kH": 3, "dW": 1, "dH": 1, "padW": 1, "padH": 1}
    pool = {"kW": 2, "kH": 2, "dW": 2, "dH": 2, "padW": 0, "padH": 0}
    conv = {**base(on_gpu), "nInputPlane": 3, "nOutputPlane": 4, **kernel}
    conv |= parameters(rng, (4, 3, 3, 3), on_gpu)
    norm = {**base(on_gpu), "affine": True, "eps": 1e-5, "train": False, "momentum": 0.1}
    norm |= parameters(rng, (4,), on_gpu)
    stats = cuda if on_gpu else (lambda a: a.astype(np.float32))
    norm |= {"running_mean": stats(rng.standard_normal(4)), "running_var": stats(np.ones(4) * 2)}
    view = {**base(on_gpu), "size": long_storage(16), "numElements": 16, "numInputDims": 3}
    linear = {**base(on_gpu), **parameters(rng, (5, 16), on_gpu)}
    if not on_gpu:
        return [
            module("nn.SpatialConvolution", **conv),
            module("nn.SpatialBatchNormalization", **norm),
            module("nn.ReLU", **base(False), threshold=0, val=0, inplace=False),
            module(
                "nn.SpatialMaxPooling",
                **base(False),
                **pool,
                ceil_mode=False,
                indices=np.empty(0, np.int64),
            ),
            module(
                "nn.SpatialAveragePooling",
                **base(False),
                **pool,
                ceil_mode=False,
                count_include_pad=True,
                divide=True,
            ),
            module("nn.View", **view),
            module("nn.Linear", **linear),
            module("nn.SoftMax", **base(False)),
        ]
    slices = {
        "input_slice": cuda(np.zeros((1, 3, 8, 8))),
        "output_slice": cuda(np.zeros((1, 4, 8, 8))),
    }
    conv |= {
        "groups": 1,
        "iSize": long_storage(1, 3, 8, 8),
        "pad": LuaTable.from_list([1, 1]),
        "stride": LuaTable.from_list([1, 1]),
        "convDescData": LuaTable(
            {"padA": LuaTable.from_list([1, 1]), "dataType": "CUDNN_DATA_FLOAT"}
        ),
        "input_offset": 192,
        "output_offset": 256,
        "weight_offset": 108,
        **slices,
    }
    norm |= {"iSize": long_storage(1, 4, 8, 8)}
    pooling = {**base(True), **pool, "iSize": long_storage(1, 4, 8, 8), "ceil_mode": False}
    return [
        module("cudnn.SpatialConvolution", **conv),
        module("cudnn.SpatialBatchNormalization", **norm),
        module("cudnn.ReLU", **base(True), inplace=False, mode="CUDNN_ACTIVATION_RELU", nElem=256),
        module("cudnn.SpatialMaxPooling", **pooling, mode="CUDNN_POOLING_MAX"),
        module(
            "cudnn.SpatialAveragePooling",
            **pooling,
            mode="CUDNN_POOLING_AVERAGE_COUNT_INCLUDE_PADDING",
        ),
        module("nn.View", **view),
        module("nn.Linear", **linear),
        module(
            "cudnn.SoftMax",
            **base(True),
            mode="CUDNN_SOFTMAX_MODE_INSTANCE",
            algorithm="CUDNN_SOFTMAX_ACCURATE",
            iSize=long_storage(1, 5, 1, 1),
        ),
    ]


def sequential(on_gpu: bool) -> TorchObject:
    fields = {**base(on_gpu), "modules": LuaTable.from_list(layers(on_gpu))}
    return TorchObject("nn.Sequential", LuaTable(fields))


def converted(value: Any, cast: str = "cpu+nn") -> Any:
    return streamser.deserialize(streamser.serialize(value, cast=cast))


def test_cpu_nn_gives_the_fields_of_nn_constructors() -> None:
    model = converted(sequential(on_gpu=True))
    assert model.typename == "nn.Sequential"
    for layer in model.modules.to_list():
        assert layer.typename.startswith("nn."), layer.typename
        expected = NN_FIELDS.get(layer.typename)
        if expected is not None:
            assert set(layer.fields) == expected, layer.typename
        assert layer._type == "torch.FloatTensor"
    pooled = model.modules[4]
    assert pooled.indices.dtype == np.int64
    assert model.modules[5].count_include_pad is True
    data = streamser.serialize(sequential(on_gpu=True), cast="cpu+nn")
    assert b"Cuda" not in data
    assert b"cudnn." not in data


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("net_conv_net.dat", "binary"),
        ("net_deconv_net.txt", "ascii"),
        ("net_batch_norm_net.dat", "binary"),
        ("net_pool_max_net.txt", "ascii"),
        ("net_pool_ave_net.txt", "ascii"),
    ],
)
def test_nn_fields_match_real_nn_modules(name: str, fmt: str) -> None:
    """The field lists above, against modules real Torch wrote (OpenCV's test nets, saved
    without their buffers and gradients)."""
    model = streamser.load(OPENCV_NETS / name, format=fmt)
    found = [item for _, item, _, _ in walk(model) if isinstance(item, TorchObject)]
    layers_found = [m for m in found if m.typename in NN_FIELDS]
    assert layers_found
    for layer in layers_found:
        expected = NN_FIELDS[layer.typename]
        assert set(layer.fields) - FORWARD_STATE <= expected, layer.typename
        assert expected - set(layer.fields) <= {"output", "gradInput", "gradWeight", "gradBias"}


def test_nn_alone_keeps_cuda_tensors_and_cpu_alone_keeps_cudnn_modules() -> None:
    gpu = sequential(on_gpu=True)
    as_nn = streamser.serialize(gpu, cast="nn")
    assert b"torch.CudaTensor" in as_nn
    assert b"cudnn." not in as_nn
    as_cpu = streamser.serialize(gpu, cast="cpu")
    assert b"cudnn.SpatialConvolution" in as_cpu
    assert b"torch.CudaTensor" not in as_cpu


def test_grouped_convolutions_and_unknown_names_are_refused() -> None:
    grouped = module("cudnn.SpatialConvolution", weight=cuda(np.ones((4, 1, 3, 3))), groups=2)
    with pytest.raises(UnsupportedValueError, match="groups=2"):
        streamser.serialize(grouped, cast="cpu+nn")
    with pytest.raises(ValueError, match="'cpu', 'nn'"):
        streamser.serialize([], cast="cpu+torch")


def test_cast_composes_with_serial_modes_and_keeps_sharing() -> None:
    model = sequential(on_gpu=True)
    layers_in = model.modules.to_list()
    layers_in[6]["gradInput"] = layers_in[4]["output"]  # a buffer shared by two layers
    light = streamser.deserialize(streamser.serialize(model, cast="cpu+nn", serial="light"))
    assert light.modules[7].gradInput is light.modules[5].output
    assert light.modules[1].gradWeight.size == 0
    np.testing.assert_array_equal(light.modules[1].weight, layers_in[0]["weight"])


cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is in the test extras")


def test_opencv_runs_the_converted_cudnn_model_as_the_nn_one(tmp_path: Path) -> None:
    image = np.random.default_rng(3).standard_normal((1, 3, 8, 8)).astype(np.float32)
    outputs = []
    for name, model, cast in [
        ("nn.t7", sequential(on_gpu=False), None),
        ("cudnn.t7", sequential(on_gpu=True), "cpu+nn"),
    ]:
        streamser.save(tmp_path / name, model, cast=cast)
        net = cv2.dnn.readNetFromTorch(str(tmp_path / name))
        net.setInput(image)
        outputs.append(net.forward())
    assert outputs[0].shape == (1, 5)
    np.testing.assert_allclose(outputs[0].sum(), 1.0, rtol=1e-5)  # a softmax
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_convert_command_casts_cudnn_to_nn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "gpu.t7", tmp_path / "cpu.t7"
    streamser.save(source, sequential(on_gpu=True))
    assert main(["convert", str(source), str(target), "--cast", "cpu+nn", "--serial", "light"]) == 0
    assert "cpu.t7" in capsys.readouterr().out
    loaded = streamser.load(target)
    assert [m.typename for m in loaded.modules.to_list()][:3] == [
        "nn.SpatialConvolution",
        "nn.SpatialBatchNormalization",
        "nn.ReLU",
    ]
