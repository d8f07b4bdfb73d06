"""Limits: documented defaults, keyword overrides, errors that name the keyword."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import streamser
from streamser.spec.limits import Limits

CORPUS = Path(__file__).parent / "corpus"


@pytest.mark.parametrize(
    ("keyword", "value", "data"),
    [
        ("max_string", 3, streamser.serialize("four")),
        ("max_table", 2, streamser.serialize([1, 2, 3])),
        ("max_objects", 2, streamser.serialize([[1], [2]])),
        ("max_depth", 2, streamser.serialize([[[1]]])),
    ],
)
@pytest.mark.parametrize("fmt", ["binary", "ascii"])
def test_each_limit_names_its_keyword(keyword: str, value: int, data: bytes, fmt: str) -> None:
    data = streamser.serialize(streamser.deserialize(data), fmt)
    with pytest.raises(streamser.LimitError, match=f"{keyword}="):
        streamser.deserialize(data, fmt, **{keyword: value})
    streamser.deserialize(data, fmt, **{keyword: value + 1})  # one more is enough


def test_limits_reach_every_reader(tmp_path: Path) -> None:
    path = tmp_path / "t.t7"
    streamser.save(path, {"s": "x" * 100})
    for read in (
        lambda: streamser.load(path, max_string=10),
        lambda: streamser.open(path, max_string=10),
        lambda: streamser.Reader(path.read_bytes(), max_string=10).read_object(),
    ):
        with pytest.raises(streamser.LimitError, match="max_string"):
            read()


def test_unknown_or_bad_limits_are_refused() -> None:
    with pytest.raises(TypeError, match="unknown limit 'max_strings'"):
        streamser.deserialize(streamser.serialize(1), max_strings=5)
    with pytest.raises(ValueError, match="non-negative"):
        streamser.deserialize(streamser.serialize(1), max_table=-1)


def test_a_huge_claim_fails_before_any_allocation() -> None:
    data = struct.pack("<iii", 2, 2**31 - 1, 0)  # a string claiming 2 GiB in 12 bytes
    with pytest.raises(streamser.TruncatedError, match="2147483647 bytes"):
        streamser.deserialize(data, "binary")


def test_real_checkpoints_stay_inside_the_defaults() -> None:
    model = {"modules": [{"weight": np.zeros((2, 2)), "name": f"m{i}"} for i in range(100_000)]}
    limits = Limits()
    assert limits.max_objects > 4 * 100_000
    assert streamser.deserialize(streamser.serialize(model))["modules"][100_000]["name"] == "m99999"
    for path in CORPUS.glob("*.t7"):
        if ".noref" not in path.name:
            streamser.load(path)  # nothing in the corpus comes near a default
