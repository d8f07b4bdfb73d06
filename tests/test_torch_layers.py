"""Layers the OpenCV nets do not hold, against numpy references written from the Lua sources.

Each reference transcribes the Torch7 code path (torch/nn's Lua and THNN's C, dpnn, rnn) in
numpy, loops included where the C code loops, on small inputs; none calls the bridge.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st_h
from torch7_models import Array, fast_lstm, gru, linear, longs, lstm, module, sequencer

import streamser.torch as st
from streamser import LuaTable, TorchObject

RNG = np.random.default_rng(20240607)


def run(obj: TorchObject, x: Any) -> Any:
    """Forward through the built module, numpy in and numpy out (lists stay lists)."""
    built = st.to_module(obj)
    with torch.no_grad():
        out = built(_tensors(x))
    return _arrays(out)


def _tensors(x: Any) -> Any:
    return [_tensors(item) for item in x] if isinstance(x, list) else torch.from_numpy(np.array(x))


def _arrays(x: Any) -> Any:
    return [_arrays(item) for item in x] if isinstance(x, list) else x.numpy()


def close(actual: Array, expected: Array) -> None:
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- convolution, linear maps


def conv_reference(
    x: Array, weight4: Array, bias: Array, stride: tuple[int, int], pad: tuple[int, int]
) -> Array:
    """THNN's unfold + matrix product: each output pixel is its patch times the weight rows."""
    (dh, dw), (ph, pw) = stride, pad
    n_out, _, kh, kw = weight4.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = (xp.shape[2] - kh) // dh + 1, (xp.shape[3] - kw) // dw + 1
    out = np.empty((x.shape[0], n_out, oh, ow))
    rows = weight4.reshape(n_out, -1)
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * dh : i * dh + kh, j * dw : j * dw + kw].reshape(x.shape[0], -1)
            out[:, :, i, j] = patch @ rows.T + bias
    return out


def test_spatial_convolution_mm_2d_weight() -> None:
    weight = RNG.standard_normal((5, 3 * 2 * 3))
    bias = RNG.standard_normal(5)
    obj = module(
        "nn.SpatialConvolutionMM",
        weight=weight,
        bias=bias,
        nInputPlane=3,
        nOutputPlane=5,
        kW=3,
        kH=2,
        dW=2,
        dH=1,
        padW=1,
        padH=0,
        finput=np.zeros(0),
        fgradInput=np.zeros(0),
    )
    x = RNG.standard_normal((2, 3, 6, 7))
    close(run(obj, x), conv_reference(x, weight.reshape(5, 3, 2, 3), bias, (1, 2), (0, 1)))
    assert tuple(st.state_dict(obj)["weight"].shape) == (5, 3, 2, 3)


def test_spatial_convolution_mm_old_padding_field_and_single_image() -> None:
    weight = RNG.standard_normal((4, 2 * 3 * 3))
    bias = RNG.standard_normal(4)
    obj = module(
        "nn.SpatialConvolutionMM",
        weight=weight,
        bias=bias,
        nInputPlane=2,
        nOutputPlane=4,
        kW=3,
        kH=3,
        dW=1,
        dH=1,
        padding=1,
    )
    x = RNG.standard_normal((2, 5, 5))
    expected = conv_reference(x[None], weight.reshape(4, 2, 3, 3), bias, (1, 1), (1, 1))[0]
    close(run(obj, x), expected)


def test_spatial_convolution_without_bias() -> None:
    weight = RNG.standard_normal((2, 1, 2, 2))
    obj = module(
        "nn.SpatialConvolution",
        weight=weight,
        nInputPlane=1,
        nOutputPlane=2,
        kW=2,
        kH=2,
        dW=1,
        dH=1,
        padW=0,
        padH=0,
    )
    x = RNG.standard_normal((1, 1, 3, 3))
    close(run(obj, x), conv_reference(x, weight, np.zeros(2), (1, 1), (0, 0)))
    assert list(st.state_dict(obj)) == ["weight"]


def test_full_convolution_table_input_chooses_adj() -> None:
    """Torch7's calculateAdj: ``(target + 2*pad - k) % stride``; output (i-1)*d - 2p + k + adj."""
    weight = RNG.standard_normal((2, 3, 3, 3))
    obj = module(
        "nn.SpatialFullConvolution",
        weight=weight,
        bias=np.zeros(3),
        nInputPlane=2,
        nOutputPlane=3,
        kW=3,
        kH=3,
        dW=2,
        dH=2,
        padW=1,
        padH=1,
        adjW=0,
        adjH=0,
    )
    x = RNG.standard_normal((1, 2, 4, 4))
    plain = run(obj, x)
    assert plain.shape == (1, 3, 7, 7)
    target = np.zeros((1, 3, 8, 8))
    assert run(obj, [x, target]).shape == (1, 3, 8, 8)


def test_linear_single_vector_and_no_bias() -> None:
    obj = linear(RNG, 4, 3)
    x = RNG.standard_normal(4)
    close(run(obj, x), obj.weight @ x + obj.bias)
    no_bias = module("nn.Linear", weight=obj.weight)
    close(run(no_bias, x), obj.weight @ x)


def test_lookup_table_one_based_rows_batch_and_max_norm() -> None:
    weight = RNG.standard_normal((6, 3)) * 3
    obj = module(
        "nn.LookupTable",
        weight=weight.copy(),
        paddingValue=0,
        _count=np.zeros(0, np.int32),
        _input=np.zeros(0, np.int64),
    )
    idx = np.array([[1, 6, 2], [3, 3, 1]], dtype=np.int64)
    close(run(obj, idx), weight[idx - 1])
    # maxNorm: THNN's LookupTable_renorm scales each looked-up row to maxNorm / (norm + 1e-7)
    renorm = module("nn.LookupTable", weight=weight.copy(), maxNorm=1.0, normType=2)
    expected = weight.copy()
    for row in {0, 4}:
        norm = np.linalg.norm(expected[row])
        if norm > 1.0:
            expected[row] *= 1.0 / (norm + 1e-7)
    close(run(renorm, np.array([1, 5, 1], dtype=np.float64)), expected[[0, 4, 0]])
    with pytest.raises(st.InputShapeError, match=r"out of 1\.\.6"):
        run(obj, np.array([0], dtype=np.int64))


def test_cmul_whole_and_per_batch_row() -> None:
    weight = RNG.standard_normal(4)
    obj = module("nn.CMul", weight=weight, size=longs(4))
    close(run(obj, np.arange(4.0)), np.arange(4.0) * weight)
    batch = RNG.standard_normal((3, 4))
    close(run(obj, batch), batch * weight[None])


# ---------------------------------------------------------------------------------- pooling


def thnn_size(size: int, k: int, d: int, pad: int, ceil: bool, any_pad: bool) -> int:
    """THNN's formula, float division and all."""
    rounding = math.ceil if ceil else math.floor
    out = int(rounding(float(size - k + 2 * pad) / d)) + 1
    if any_pad and (out - 1) * d >= size + pad:
        out -= 1
    return out


def pool_reference(
    x: Array,
    k: tuple[int, int],
    d: tuple[int, int],
    pad: tuple[int, int],
    ceil: bool,
    kind: str,
    count_include_pad: bool = True,
) -> tuple[Array, Array]:
    """SpatialMaxPooling.c / SpatialAveragePooling.c loops: values and 0-based indices."""
    (kh, kw), (dh, dw), (ph, pw) = k, d, pad
    h, w = x.shape[-2:]
    oh = thnn_size(h, kh, dh, ph, ceil, bool(ph or pw))
    ow = thnn_size(w, kw, dw, pw, ceil, bool(ph or pw))
    out = np.zeros((*x.shape[:-2], oh, ow))
    ind = np.zeros((*x.shape[:-2], oh, ow), dtype=np.int64)
    for plane in np.ndindex(*x.shape[:-2]):
        img = x[plane]
        for i in range(oh):
            for j in range(ow):
                hs, ws = i * dh - ph, j * dw - pw
                if kind == "max":
                    he, we = min(hs + kh, h), min(ws + kw, w)
                    best, where = -np.inf, -1
                    for y in range(max(hs, 0), he):
                        for xx in range(max(ws, 0), we):
                            if img[y, xx] > best:
                                best, where = img[y, xx], y * w + xx
                    out[plane][i, j], ind[plane][i, j] = best, where
                else:
                    he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
                    size = (he - hs) * (we - ws)
                    hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                    total = img[hs:he, ws:we].sum() if he > hs and we > ws else 0.0
                    divide = size if count_include_pad else (he - hs) * (we - ws)
                    with np.errstate(divide="ignore", invalid="ignore"):
                        out[plane][i, j] = np.float64(total) / divide
    return out, ind


def max_pool(
    k: tuple[int, int], d: tuple[int, int], pad: tuple[int, int], ceil: bool
) -> TorchObject:
    return module(
        "nn.SpatialMaxPooling",
        kH=k[0],
        kW=k[1],
        dH=d[0],
        dW=d[1],
        padH=pad[0],
        padW=pad[1],
        ceil_mode=ceil,
        indices=np.zeros(0, np.int64),
    )


def avg_pool(
    k: tuple[int, int], d: tuple[int, int], pad: tuple[int, int], ceil: bool, include: bool = True
) -> TorchObject:
    return module(
        "nn.SpatialAveragePooling",
        kH=k[0],
        kW=k[1],
        dH=d[0],
        dW=d[1],
        padH=pad[0],
        padW=pad[1],
        ceil_mode=ceil,
        count_include_pad=include,
        divide=True,
    )


POOLS = [
    ((3, 3), (2, 2), (1, 1), True, (7, 8)),  # ceil mode with padding: last window dropped
    ((2, 3), (2, 2), (1, 0), True, (6, 9)),
    ((3, 2), (3, 2), (0, 0), True, (8, 7)),  # ceil mode without padding
    ((1, 1), (3, 3), (0, 0), True, (5, 5)),  # THNN keeps a window past the end; PyTorch would not
    ((3, 3), (1, 2), (1, 1), False, (5, 6)),
]


@pytest.mark.parametrize(("k", "d", "pad", "ceil", "hw"), POOLS)
def test_max_pooling_sizes_values_and_indices(
    k: Any, d: Any, pad: Any, ceil: bool, hw: Any
) -> None:
    x = RNG.standard_normal((2, 3, *hw))
    expected, indices = pool_reference(x, k, d, pad, ceil, "max")
    built = st.to_module(max_pool(k, d, pad, ceil))
    with torch.no_grad():
        out = built(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(built.indices.numpy(), indices)


@pytest.mark.parametrize(("k", "d", "pad", "ceil", "hw"), POOLS)
@pytest.mark.parametrize("include", [True, False])
def test_average_pooling_sizes_and_divisors(
    k: Any, d: Any, pad: Any, ceil: bool, hw: Any, include: bool
) -> None:
    x = RNG.standard_normal((3, *hw))
    expected, _ = pool_reference(x, k, d, pad, ceil, "avg", include)
    out = run(avg_pool(k, d, pad, ceil, include), x)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14, equal_nan=True)
    np.testing.assert_array_equal(np.signbit(out), np.signbit(expected))


@settings(max_examples=80, deadline=None)
@given(
    st_h.data(),
    st_h.integers(1, 4),
    st_h.integers(1, 4),
    st_h.integers(1, 3),
    st_h.integers(1, 3),
    st_h.booleans(),
    st_h.booleans(),
)
def test_pooling_matches_thnn_for_any_geometry(
    data: st_h.DataObject, kh: int, kw: int, dh: int, dw: int, ceil: bool, include: bool
) -> None:
    ph, pw = data.draw(st_h.integers(0, kh // 2)), data.draw(st_h.integers(0, kw // 2))
    h = data.draw(st_h.integers(max(kh - 2 * ph, 1), 9))
    w = data.draw(st_h.integers(max(kw - 2 * pw, 1), 9))
    x = np.random.default_rng(h * 10 + w).standard_normal((2, h, w))
    expected, indices = pool_reference(x, (kh, kw), (dh, dw), (ph, pw), ceil, "max")
    built = st.to_module(max_pool((kh, kw), (dh, dw), (ph, pw), ceil))
    with torch.no_grad():
        np.testing.assert_array_equal(built(torch.from_numpy(x)).numpy(), expected)
    np.testing.assert_array_equal(built.indices.numpy(), indices)
    averages, _ = pool_reference(x, (kh, kw), (dh, dw), (ph, pw), ceil, "avg", include)
    out = run(avg_pool((kh, kw), (dh, dw), (ph, pw), ceil, include), x)
    np.testing.assert_allclose(out, averages, rtol=1e-12, atol=1e-14, equal_nan=True)


def test_average_pooling_without_divide_field_sums() -> None:
    """Files older than the ``divide`` field: Torch7 multiplies the average back by kW*kH."""
    obj = module("nn.SpatialAveragePooling", kH=2, kW=2, dH=2, dW=2)
    x = RNG.standard_normal((1, 4, 4))
    expected = x.reshape(1, 2, 2, 2, 2).sum(axis=(2, 4))
    close(run(obj, x), expected)


def test_lp_pooling_is_its_sequential() -> None:
    """SpatialLPPooling(n, p, kW, kH, dW, dH): Power(p), average pooling, Power(1/p)."""
    for p, first, last in [
        (2, module("nn.Square"), module("nn.Sqrt", eps=0)),
        (3, module("nn.Power", pow=3), module("nn.Power", pow=1 / 3)),
    ]:
        obj = module(
            "nn.SpatialLPPooling",
            first,
            avg_pool((2, 2), (2, 2), (0, 0), False),
            last,
            kW=2,
            kH=2,
            dW=2,
            dH=2,
        )
        x = RNG.random((2, 3, 4, 6))
        windows = x.reshape(2, 3, 2, 2, 3, 2)
        expected = (windows**p).mean(axis=(3, 5)) ** (1 / p)
        close(run(obj, x), expected)


def test_up_sampling_nearest() -> None:
    x = RNG.standard_normal((2, 3, 2, 3))
    obj = module("nn.SpatialUpSamplingNearest", scale_factor=3, inputSize=longs(0, 0, 0, 0))
    close(run(obj, x), x.repeat(3, axis=2).repeat(3, axis=3))
    close(run(obj, x[0]), x[0].repeat(3, axis=1).repeat(3, axis=2))


# ----------------------------------------------------------------------------- normalization


def lrn_reference(x: Array, size: int, alpha: float, beta: float, k: float) -> Array:
    """SpatialCrossMapLRN.lua's CPU loop: the first scale sums prePad planes, then each next
    one adds plane c + prePad - 1 and drops plane c - prePad."""
    batch = x if x.ndim == 4 else x[None]
    channels = batch.shape[1]
    square = batch**2
    pre_pad = (size - 1) // 2 + 1
    scale = np.zeros_like(batch)
    scale[:, 0] = square[:, : min(pre_pad, channels)].sum(axis=1)
    for c in range(2, channels + 1):
        scale[:, c - 1] = scale[:, c - 2]
        if c < channels - pre_pad + 2:
            scale[:, c - 1] += square[:, c + pre_pad - 2]
        if c > pre_pad:
            scale[:, c - 1] -= square[:, c - pre_pad - 1]
    out = scale * (alpha / size) + k
    out = out ** (-beta) * batch
    return out if x.ndim == 4 else out[0]


@pytest.mark.parametrize(("size", "channels"), [(3, 7), (5, 4), (1, 3), (5, 9)])
def test_cross_map_lrn(size: int, channels: int) -> None:
    x = RNG.standard_normal((2, channels, 3, 4))
    obj = module("nn.SpatialCrossMapLRN", size=size, alpha=2e-3, beta=0.75, k=2.0)
    close(run(obj, x), lrn_reference(x, size, 2e-3, 0.75, 2.0))
    close(run(obj, x[1]), lrn_reference(x[1], size, 2e-3, 0.75, 2.0))


def test_cross_map_lrn_even_size_uses_the_cuda_window() -> None:
    """Torch7's CPU loop fails on even sizes; its CUDA kernel takes (size-1)//2 planes before."""
    x = RNG.standard_normal((1, 5, 2, 2))
    obj = module("nn.SpatialCrossMapLRN", size=4, alpha=1e-2, beta=0.5, k=1.0)
    squares = np.pad(x**2, ((0, 0), (1, 2), (0, 0), (0, 0)))
    sums = np.stack([squares[:, c : c + 4].sum(axis=1) for c in range(5)], axis=1)
    close(run(obj, x), x * (1 + 1e-2 / 4 * sums) ** -0.5)


@pytest.mark.parametrize("p", [1, 2, math.inf, 2.7, 4])
def test_normalize(p: float) -> None:
    x = RNG.standard_normal((3, 5))
    eps = 1e-3
    if p == math.inf:
        norm = np.abs(x).max(axis=1, keepdims=True) + eps
    else:
        norm = ((np.abs(x) ** p).sum(axis=1, keepdims=True) + eps) ** (1 / p)
    obj = module("nn.Normalize", p=p, eps=eps)
    close(run(obj, x), x / norm)
    close(run(obj, x[0]), x[0] / norm[0])
    with pytest.raises(st.InputShapeError):
        run(obj, x[None])


def test_batch_normalization_1d_eval_and_train() -> None:
    n = 4
    weight, bias = RNG.standard_normal(n), RNG.standard_normal(n)
    mean, var = RNG.standard_normal(n), RNG.random(n) + 0.5
    obj = module(
        "nn.BatchNormalization",
        weight=weight,
        bias=bias,
        running_mean=mean.copy(),
        running_var=var.copy(),
        eps=1e-5,
        momentum=0.1,
        affine=True,
        train=False,
    )
    x = RNG.standard_normal((6, n))
    close(run(obj, x), (x - mean) / np.sqrt(var + 1e-5) * weight + bias)
    # evaluation accepts one sample and, like Torch7, answers a batch of one
    close(run(obj, x[0]), ((x[0] - mean) / np.sqrt(var + 1e-5) * weight + bias)[None])

    obj["train"] = True
    built = st.to_module(obj)
    assert built.training
    out = built(torch.from_numpy(x)).detach().numpy()
    batch_mean, batch_var = x.mean(axis=0), x.var(axis=0)
    close(out, (x - batch_mean) / np.sqrt(batch_var + 1e-5) * weight + bias)
    # THNN: running = momentum * batch + (1 - momentum) * running, with the unbiased variance
    close(obj.running_mean, 0.1 * batch_mean + 0.9 * mean)
    close(obj.running_var, 0.1 * x.var(axis=0, ddof=1) + 0.9 * var)


def test_batch_normalization_version_1_running_std() -> None:
    """BN:read converts version 1's running_std (1/sqrt(var + eps)) to running_var."""
    var = RNG.random(3) + 0.5
    obj = module(
        "nn.SpatialBatchNormalization",
        running_mean=np.zeros(3),
        running_std=1 / np.sqrt(var + 1e-5),
        eps=1e-5,
        train=False,
        affine=False,
    )
    obj.version = 1
    x = RNG.standard_normal((2, 3, 2, 2))
    close(run(obj, x), x / np.sqrt(var[None, :, None, None] + 1e-5))
    assert sorted(st.state_dict(obj)) == ["num_batches_tracked", "running_mean", "running_var"]


# ------------------------------------------------------------------------------ activations


def softmax_reference(x: Array, log: bool) -> Array:
    """THNN SoftMax.c: over dim 0 of 1-D and 3-D input, dim 1 of 2-D and 4-D."""
    axis = 1 if x.ndim in (2, 4) else 0
    shifted = x - x.max(axis=axis, keepdims=True)
    logs = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return logs if log else np.exp(logs)


@pytest.mark.parametrize("shape", [(5,), (3, 5), (4, 2, 3), (2, 4, 2, 3)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_dimensions(shape: tuple[int, ...], log: bool) -> None:
    x = RNG.standard_normal(shape)
    obj = module("nn.LogSoftMax" if log else "nn.SoftMax")
    close(run(obj, x), softmax_reference(x, log))


def test_softmax_rejects_five_dimensions() -> None:
    with pytest.raises(st.InputShapeError):
        run(module("nn.SoftMax"), np.zeros((1, 1, 1, 1, 2)))


def test_threshold_and_relu() -> None:
    x = np.array([-1.0, 0.0, 0.5, 2.0, np.nan])
    close(
        run(module("nn.Threshold", threshold=0.5, val=-3.0, inplace=False), x),
        np.array([-3.0, -3.0, -3.0, 2.0, -3.0]),
    )
    close(run(module("nn.ReLU", threshold=0, val=0, inplace=False), x), np.array([0, 0, 0.5, 2, 0]))
    # in place, THNN overwrites the entries <= threshold: a NaN is not one, and stays
    inplace = module("nn.ReLU", threshold=0, val=0, inplace=True)
    np.testing.assert_array_equal(run(inplace, x.copy()), np.array([0, 0, 0.5, 2, np.nan]))


def test_prelu_shared_and_per_channel_1d() -> None:
    x = RNG.standard_normal(4)
    shared = module("nn.PReLU", weight=np.array([0.25]), nOutputPlane=0)
    close(run(shared, x), np.where(x > 0, x, 0.25 * x))
    weight = RNG.random(4)
    per = module("nn.PReLU", weight=weight, nOutputPlane=4)
    close(run(per, x), np.where(x > 0, x, weight * x))


def test_arithmetic_modules() -> None:
    x = RNG.random((2, 3)) + 0.1
    close(run(module("nn.MulConstant", constant_scalar=-2.5, inplace=False), x), x * -2.5)
    close(run(module("nn.Power", pow=1.5), x), x**1.5)
    close(run(module("nn.Square"), x), x * x)
    close(run(module("nn.Sqrt", eps=0.5, inplace=False), x), np.sqrt(x))
    close(run(module("nn.SAdd", addend=-1, negate=True), x), 1 - x)


def test_inplace_overwrites_the_input_as_torch7_does() -> None:
    """A branch after an in-place module sees the modified input in Torch7 too."""
    x = np.ones((2, 2))
    branches = module(
        "nn.ConcatTable",
        module("nn.MulConstant", constant_scalar=3.0, inplace=True),
        module("nn.Identity"),
    )
    first, second = run(branches, x)
    close(first, np.full((2, 2), 3.0))
    close(second, np.full((2, 2), 3.0))


def test_dropout_versions_and_train_flags() -> None:
    x = RNG.random((50, 40)) + 1
    v2 = module("nn.Dropout", p=0.25, v2=True, train=False, noise=np.zeros(0))
    close(run(v2, x), x)
    v1 = module("nn.Dropout", p=0.25, train=False)  # old files: no v2 field means version 1
    close(run(v1, x), x * 0.75)
    # train = 0 is true for Lua's `if self.train`: Torch7 drops out, and so does the module
    training = module("nn.Dropout", p=0.25, v2=True, train=0)
    out = run(training, x)
    kept = out != 0
    close(out[kept], x[kept] / 0.75)
    assert 0.6 < kept.mean() < 0.9
    old = run(module("nn.Dropout", p=0.25, train=True), x)
    close(old[old != 0], x[old != 0])


# ------------------------------------------------------------------------------- shape


@pytest.mark.parametrize(
    ("size", "num_input_dims", "shape", "expected"),
    [
        ((-1,), None, (3, 4), (12,)),  # -1 alone: one sample, everything flattened
        ((-1,), 2, (5, 3, 4), (5, 12)),  # numInputDims: leading dims are the batch
        ((2, -1), 2, (5, 3, 4), (5, 2, 6)),
        ((12,), None, (5, 3, 4), (5, 12)),  # elements a multiple of the size: a batch
        ((12,), None, (3, 4), (12,)),
        ((3, 4), 2, (3, 4), (3, 4)),
        ((6,), 1, (2, 4, 6), (8, 6)),  # dims beyond numInputDims all count as batch
    ],
)
def test_view_batch_rules(size: Any, num_input_dims: Any, shape: Any, expected: Any) -> None:
    obj = module("nn.View", size=longs(*size), numElements=-1, numInputDims=num_input_dims)
    x = RNG.standard_normal(shape)
    close(run(obj, x), x.reshape(expected))


def test_view_mismatch_is_an_error() -> None:
    with pytest.raises(st.InputShapeError):
        run(module("nn.View", size=longs(5)), np.zeros((3, 4)))


@pytest.mark.parametrize(
    ("size", "batch_mode", "shape", "expected"),
    [
        ((6,), None, (2, 3), (6,)),
        ((6,), None, (1, 6), (1, 6)),  # first dimension 1: kept as a batch
        ((3,), None, (4, 3), (4, 3)),
        ((2, 3), True, (6, 1), None),  # batchMode true: the first dimension is the batch
        ((2, 3), False, (3, 2), (2, 3)),
        ((1, 3), True, (2, 3), (2, 1, 3)),
    ],
)
def test_reshape_batch_mode(size: Any, batch_mode: Any, shape: Any, expected: Any) -> None:
    numel = math.prod(size)
    obj = module(
        "nn.Reshape",
        size=longs(*size),
        batchsize=longs(1, *size),
        nelement=numel,
        batchMode=batch_mode,
    )
    x = RNG.standard_normal(shape)
    if expected is None:
        with pytest.raises(RuntimeError):
            run(obj, x)
    else:
        close(run(obj, x), x.reshape(expected))


def padding_reference(
    x: Array, dim: int, pad: int, n_input_dim: Any, value: float, index: int
) -> Array:
    """Padding.lua's updateOutput with numpy narrows (0-based slices)."""
    if n_input_dim is not None and x.ndim != n_input_dim:
        dim += 1
    axis = dim - 1
    size = x.shape[axis]
    shape = list(x.shape)
    shape[axis] += abs(pad)
    out = np.full(shape, value)
    if pad > 0:
        index = size - index + 2
    else:
        pad = -pad

    def narrow(t: Array, start: int, length: int) -> Any:
        sl = [slice(None)] * t.ndim
        sl[axis] = slice(start - 1, start - 1 + length)
        return tuple(sl)

    if index == 1:
        out[narrow(out, 1 + pad, size)] = x
    elif index == size + 1:
        out[narrow(out, 1, size)] = x
    else:
        out[narrow(out, 1, index - 1)] = x[narrow(x, 1, index - 1)]
        out[narrow(out, index + pad, size - index + 1)] = x[narrow(x, index, size - index + 1)]
    return out


@pytest.mark.parametrize(
    ("dim", "pad", "n_input_dim", "value", "index", "shape"),
    [
        (1, 2, None, 0.0, 1, (3, 4)),  # positive: after the end
        (1, -2, None, 1.5, 1, (3, 4)),  # negative: before the start
        (2, -1, 2, -7.0, 1, (5, 3, 4)),  # batch input: dimension shifted by one
        (2, -1, 2, 0.0, 1, (3, 4)),
        (2, 3, 3, 2.0, 2, (2, 3, 4)),  # index from the end
        (2, -2, 3, 2.0, 3, (2, 3, 4)),  # index from the start
        (1, -1, None, 9.0, 4, (3, 2)),
    ],
)
def test_padding(
    dim: int, pad: int, n_input_dim: Any, value: float, index: int, shape: Any
) -> None:
    obj = module(
        "nn.Padding",
        dim=dim,
        pad=pad,
        nInputDim=n_input_dim,
        value=value,
        index=index,
        outputSize=longs(),
    )
    x = RNG.standard_normal(shape)
    close(run(obj, x), padding_reference(x, dim, pad, n_input_dim, value, index))


def test_spatial_zero_padding_crops_with_negative_pads() -> None:
    x = RNG.standard_normal((2, 5, 6))
    obj = module("nn.SpatialZeroPadding", pad_l=-1, pad_r=2, pad_t=1, pad_b=-2)
    expected = np.zeros((2, 5 + 1 - 2, 6 - 1 + 2))
    expected[:, 1:, : 6 - 1] = x[:, :3, 1:]
    close(run(obj, x), expected)


def test_spatial_reflection_padding() -> None:
    x = RNG.standard_normal((1, 2, 4, 5))
    obj = module("nn.SpatialReflectionPadding", pad_l=2, pad_r=1, pad_t=3, pad_b=0)
    close(run(obj, x), np.pad(x, ((0, 0), (0, 0), (3, 0), (2, 1)), mode="reflect"))


def test_narrow_negative_dimension_and_length() -> None:
    x = RNG.standard_normal((3, 6))
    close(run(module("nn.Narrow", dimension=2, index=2, length=3), x), x[:, 1:4])
    close(run(module("nn.Narrow", dimension=-1, index=2, length=-1), x), x[:, 1:])
    close(run(module("nn.Narrow", dimension=1, index=1, length=-2), x), x[:2])


def test_select_negative_dimension_and_index() -> None:
    x = RNG.standard_normal((3, 4, 5))
    close(run(module("nn.Select", dimension=2, index=3), x), x[:, 2])
    close(run(module("nn.Select", dimension=-1, index=-1), x), x[:, :, -1])
    with pytest.raises(st.InputShapeError):
        run(module("nn.Select", dimension=1, index=4), x)


# ------------------------------------------------------------------------ containers, tables


def test_join_table_with_batch_and_negative_dimension() -> None:
    a, b = RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 3, 2))
    # JoinTable(2, 2): samples are 2-D, so a 3-D input is a batch and dimension 2 becomes 3
    close(run(module("nn.JoinTable", dimension=2, nInputDims=2), [a, b]), np.concatenate([a, b], 2))
    close(run(module("nn.JoinTable", dimension=-1), [a, b]), np.concatenate([a, b], 2))
    c, d = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 1))
    close(run(module("nn.JoinTable", dimension=2, nInputDims=2), [c, d]), np.concatenate([c, d], 1))


def depth_concat_reference(outputs: list[Array], dimension: int) -> Array:
    """DepthConcat.lua: zero output of the largest sizes; windows start at
    floor((size - currentSize) / 2) + 1 in each other dimension."""
    axis = dimension - 1
    size = list(outputs[0].shape)
    size[axis] = sum(o.shape[axis] for o in outputs)
    for d in range(len(size)):
        if d != axis:
            size[d] = max(o.shape[d] for o in outputs)
    result = np.zeros(size)
    offset = 0
    for out in outputs:
        window = []
        for d in range(len(size)):
            if d == axis:
                window.append(slice(offset, offset + out.shape[d]))
            else:
                start = math.floor((size[d] - out.shape[d]) / 2)
                window.append(slice(start, start + out.shape[d]))
        result[tuple(window)] = out
        offset += out.shape[axis]
    return result


def test_depth_concat_centres_smaller_outputs() -> None:
    convs = []
    for k, n_out in [(1, 2), (3, 3), (4, 1)]:
        weight = RNG.standard_normal((n_out, 2, k, k))
        convs.append(
            (
                module(
                    "nn.SpatialConvolution",
                    weight=weight,
                    bias=np.zeros(n_out),
                    nInputPlane=2,
                    nOutputPlane=n_out,
                    kW=k,
                    kH=k,
                    dW=1,
                    dH=1,
                    padW=0,
                    padH=0,
                ),
                weight,
            )
        )
    obj = module("nn.DepthConcat", *(c for c, _ in convs), dimension=2, size=longs())
    x = RNG.standard_normal((2, 2, 7, 8))
    outputs = [conv_reference(x, w, np.zeros(w.shape[0]), (1, 1), (0, 0)) for _, w in convs]
    close(run(obj, x), depth_concat_reference(outputs, 2))


def test_parallel_slices_and_joins() -> None:
    x = RNG.standard_normal((2, 3, 4))
    obj = module(
        "nn.Parallel",
        module("nn.Tanh"),
        module("nn.Sigmoid"),
        module("nn.Square"),
        inputDimension=2,
        outputDimension=1,
    )
    parts = [np.tanh(x[:, 0]), 1 / (1 + np.exp(-x[:, 1])), x[:, 2] ** 2]
    close(run(obj, x), np.concatenate(parts, axis=0))


def test_inception_single_image_goes_through_a_batch_of_one() -> None:
    conv_w = RNG.standard_normal((2, 3, 1, 1))
    conv = module(
        "nn.SpatialConvolution",
        weight=conv_w,
        bias=np.zeros(2),
        nInputPlane=3,
        nOutputPlane=2,
        kW=1,
        kH=1,
        dW=1,
        dH=1,
        padW=0,
        padH=0,
    )
    pool = max_pool((3, 3), (1, 1), (1, 1), False)
    depth = module(
        "nn.DepthConcat",
        module("nn.Sequential", conv, module("nn.Tanh")),
        module("nn.Sequential", pool),
        dimension=2,
    )
    obj = module(
        "nn.Inception", depth, inputSize=3, poolSize=3, transfer=module("nn.Tanh"), pool=pool
    )
    x = RNG.standard_normal((3, 5, 5))
    conv_out = np.tanh(conv_reference(x[None], conv_w, np.zeros(2), (1, 1), (0, 0)))
    pooled, _ = pool_reference(x[None], (3, 3), (1, 1), (1, 1), False, "max")
    close(run(obj, x), np.concatenate([conv_out, pooled], axis=1)[0])


def test_table_modules() -> None:
    a, b, c = (RNG.standard_normal((2, 3)) for _ in range(3))
    close(run(module("nn.CMulTable"), [a, b, c]), a * b * c)
    close(run(module("nn.CAddTable", inplace=False), [a, b]), a + b)
    # Torch7 adds in memory order: equal element counts suffice
    close(run(module("nn.CAddTable"), [a, b.reshape(3, 2)]), a + b)
    close(run(module("nn.SelectTable", index=-1), [a, b, c]), c)
    flat = run(module("nn.FlattenTable"), [a, [b, [c]], a])
    assert [f.tolist() for f in flat] == [t.tolist() for t in (a, b, c, a)]
    narrowed = run(module("nn.NarrowTable", offset=2, length=2), [a, b, c])
    assert [n.tolist() for n in narrowed] == [b.tolist(), c.tolist()]
    parts = run(module("nn.SplitTable", dimension=1, nInputDims=1), a)
    assert [p.tolist() for p in parts] == [a[:, 0].tolist(), a[:, 1].tolist(), a[:, 2].tolist()]


# ----------------------------------------------------------------------------------- rnn


def sigmoid(x: Array) -> Array:
    return 1 / (1 + np.exp(-x))


def fast_lstm_reference(p: dict[str, Array], xs: list[Array], n_out: int) -> list[Array]:
    """FastLSTM: gates = i2g(x) + o2g(h), split as input, hidden, forget, output."""
    h = c = np.zeros((xs[0].shape[0], n_out))
    outputs = []
    for x in xs:
        g = (x @ p["Wx"].T + p["b"] + h @ p["Wh"].T).reshape(-1, 4, n_out)
        i, hidden, f, o = sigmoid(g[:, 0]), np.tanh(g[:, 1]), sigmoid(g[:, 2]), sigmoid(g[:, 3])
        c = i * hidden + f * c
        h = o * np.tanh(c)
        outputs.append(h)
    return outputs


def lstm_reference(p: dict[str, Array], xs: list[Array], n_out: int) -> list[Array]:
    """LSTM with peepholes: input and forget gates see cell(t-1), the output gate cell(t)."""
    h = c = np.zeros((xs[0].shape[0], n_out))

    def gate(key: str, x: Array, h: Array, cell: Array) -> Array:
        return sigmoid(x @ p[f"W{key}"].T + p[f"b{key}"] + h @ p[f"U{key}"].T + cell * p[f"c{key}"])

    outputs = []
    for x in xs:
        hidden = np.tanh(x @ p["Wh"].T + p["bh"] + h @ p["Uh"].T)
        c = gate("f", x, h, c) * c + gate("i", x, h, c) * hidden
        h = gate("o", x, h, c) * np.tanh(c)
        outputs.append(h)
    return outputs


def gru_reference(p: dict[str, Array], xs: list[Array], n_out: int) -> list[Array]:
    """GRU: r, z = sigmoid(i2g(x) + o2g(s)); s' = (1 - z) * tanh(W x + b + U (r * s)) + z * s."""
    s = np.zeros((xs[0].shape[0], n_out))
    outputs = []
    for x in xs:
        g = sigmoid(x @ p["Wg"].T + p["bg"] + s @ p["Ug"].T).reshape(-1, 2, n_out)
        r, z = g[:, 0], g[:, 1]
        candidate = np.tanh(x @ p["W"].T + p["b"] + (r * s) @ p["U"].T)
        s = (1 - z) * candidate + z * s
        outputs.append(s)
    return outputs


RNNS = [(fast_lstm, fast_lstm_reference), (lstm, lstm_reference), (gru, gru_reference)]


@pytest.mark.parametrize(("make", "reference"), RNNS)
def test_recurrent_step_equations_through_a_sequencer(make: Any, reference: Any) -> None:
    rnn, params = make(RNG, 3, 4)
    xs = [RNG.standard_normal((2, 3)) for _ in range(5)]
    expected = reference(params, xs, 4)
    built = st.to_module(sequencer(rnn, train=False))
    with torch.no_grad():
        listed = built([torch.from_numpy(x) for x in xs])
        stacked = built(torch.from_numpy(np.stack(xs)))  # forgets first: same answers again
    for out, ref in zip(listed, expected, strict=True):
        close(out.numpy(), ref)
    close(stacked.numpy(), np.stack(expected))


@pytest.mark.parametrize(("make", "reference"), RNNS)
def test_recurrent_module_keeps_state_between_calls(make: Any, reference: Any) -> None:
    """Alone, an rnn module takes one step per forward (a single sample here) until forget()."""
    rnn, params = make(RNG, 3, 2)
    xs = [RNG.standard_normal(3) for _ in range(3)]
    expected = reference(params, [x[None] for x in xs], 2)
    built = st.to_module(rnn)
    with torch.no_grad():
        for x, ref in zip(xs, expected, strict=True):
            close(built(torch.from_numpy(x)).numpy(), ref[0])
        built.forget()
        close(built(torch.from_numpy(xs[0])).numpy(), expected[0][0])


def test_user_previous_output_starts_the_sequence() -> None:
    rnn, params = gru(RNG, 2, 3)
    start = RNG.standard_normal(3)
    rnn["userPrevOutput"] = start
    x = RNG.standard_normal(2)
    g = sigmoid(x @ params["Wg"].T + params["bg"] + start @ params["Ug"].T).reshape(2, 3)
    candidate = np.tanh(x @ params["W"].T + params["b"] + (g[0] * start) @ params["U"].T)
    expected = (1 - g[1]) * candidate + g[1] * start
    close(run(rnn, x), expected)
    single = st.to_module(rnn).float()  # the initial state follows the module's dtype
    with torch.no_grad():
        out = single(torch.from_numpy(x).float())
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_sequencer_remember_modes() -> None:
    rnn, params = fast_lstm(RNG, 2, 2)
    xs = [RNG.standard_normal((1, 2)) for _ in range(4)]
    expected = fast_lstm_reference(params, xs, 2)
    built = st.to_module(sequencer(rnn, remember="eval", train=False))
    with torch.no_grad():
        first = built([torch.from_numpy(x) for x in xs[:2]])
        second = built([torch.from_numpy(x) for x in xs[2:]])  # remembered: continues
    close(second[1].numpy(), expected[3])
    close(first[0].numpy(), expected[0])
    built.train()
    with torch.no_grad():
        again = built([torch.from_numpy(x) for x in xs[:1]])  # training: forgets
    close(again[0].numpy(), expected[0])


def test_sequencer_of_recursor_applies_per_step() -> None:
    lin = linear(RNG, 3, 2)
    rec = module(
        "nn.Recursor",
        lin,
        module=lin,
        recurrentModule=lin,
        rho=9999999,
        step=1,
        outputs=LuaTable(),
        sharedClones=LuaTable(),
    )
    xs = RNG.standard_normal((4, 5, 3))
    close(run(sequencer(rec), xs), xs @ lin.weight.T + lin.bias)
