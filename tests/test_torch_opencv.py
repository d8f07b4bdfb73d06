"""The 16 nets of OpenCV's Torch importer test, run by PyTorch through ``to_module``.

Each net, input and output was written by real Lua Torch7 (tests/real-world/README.md); the
output is Torch7's own forward of the input. OpenCV compares within a mean absolute
difference of 1e-5 and a maximum of 1e-4, and so do these tests, in the models' own dtype
(float64, as saved) and again in float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import streamser
import streamser.torch as st

NETS = Path(__file__).parent / "real-world" / "opencv-nets"
NAMES = sorted(p.name.rsplit("_net.", 1)[0] for p in NETS.glob("net_*_net.*"))


def _load(name: str, part: str) -> Any:
    (path,) = NETS.glob(f"{name}_{part}.*")
    return streamser.load(path)


def _close(output: torch.Tensor, expected: np.ndarray[Any, Any]) -> tuple[float, float]:
    assert tuple(output.shape) == expected.shape
    diff = np.abs(output.detach().double().numpy() - expected)
    return float(diff.mean()), float(diff.max())


def test_all_sixteen_nets_are_here() -> None:
    assert len(NAMES) == 16


@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_torch7(name: str) -> None:
    module = st.to_module(_load(name, "net"))
    with torch.no_grad():
        output = module(torch.from_numpy(_load(name, "input")))
    mean, worst = _close(output, _load(name, "output"))
    assert mean <= 1e-5
    assert worst <= 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_forward_in_float32(name: str) -> None:
    module = st.to_module(_load(name, "net")).float()
    with torch.no_grad():
        output = module(torch.from_numpy(_load(name, "input")).float())
    assert output.dtype == torch.float32
    mean, worst = _close(output, _load(name, "output"))
    assert mean <= 1e-5
    assert worst <= 1e-4


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_names_match_the_built_module(name: str) -> None:
    net = _load(name, "net")
    built = st.to_module(net).state_dict()
    named = st.state_dict(net)
    assert list(built) == list(named)
    for key, tensor in named.items():
        assert torch.equal(built[key], tensor), key


def test_max_pooling_indices_match_torch7() -> None:
    module = st.to_module(_load("net_pool_max", "net"))
    module(torch.from_numpy(_load("net_pool_max", "input")))
    pool = module.get_submodule("0")
    np.testing.assert_array_equal(pool.indices.numpy(), _load("net_pool_max", "output_2"))


def test_parameters_share_memory_with_the_mapped_file() -> None:
    net = _load("net_conv", "net")
    module = st.to_module(net)
    conv = module.get_submodule("0")
    assert conv.weight.data_ptr() == net.modules[1].weight.ctypes.data


def test_batch_norm_saved_with_train_zero_evaluates() -> None:
    """OpenCV's generator set ``train = 0``: Lua calls that true, but THNN receives a C bool
    (false), so Torch7 normalised with the running statistics. So does the built module."""
    net = _load("net_batch_norm", "net")
    assert net.modules[1].train == 0
    module = st.to_module(net)
    assert not module.get_submodule("0").training
