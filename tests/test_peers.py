"""Real peers installed from PyPI read what streamser writes: torchfile (the Python .t7 reader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import streamser

torchfile = pytest.importorskip("torchfile", reason="torchfile is in the test extras")

DTYPES = ["u1", "i1", "<i2", "<i4", "<i8", "<f4", "<f8"]  # torchfile cannot read Half
arrays = st.one_of(
    *(hnp.arrays(np.dtype(d), hnp.array_shapes(min_dims=1, max_dims=3, max_side=4)) for d in DTYPES)
)
leaves = st.one_of(
    st.booleans(),
    st.integers(-(2**31), 2**31),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=10),
    arrays,
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=6), inner, max_size=4),
    ),
    max_leaves=10,
)


def _same(ours: Any, theirs: Any) -> None:
    """torchfile's reading of a value streamser wrote equals the value."""
    if isinstance(ours, np.ndarray):
        assert isinstance(theirs, np.ndarray)
        assert theirs.shape == ours.shape
        assert theirs.tobytes() == np.ascontiguousarray(ours).tobytes()
    elif isinstance(ours, dict):
        assert {k.decode(): v for k, v in theirs.items()}.keys() == ours.keys()
        for key, value in ours.items():
            _same(value, theirs[key.encode()])
    elif isinstance(ours, list):  # a table with keys 1..n
        assert sorted(theirs) == list(range(1, len(ours) + 1))
        for index, mine in enumerate(ours, 1):
            _same(mine, theirs[index])
    elif isinstance(ours, str):
        assert theirs == ours.encode()
    else:
        assert theirs == ours


@settings(max_examples=60, deadline=None)
@given(value=values)
def test_torchfile_reads_what_streamser_writes(tmp_path_factory: Any, value: Any) -> None:
    path = tmp_path_factory.mktemp("peer") / "v.t7"
    streamser.save(path, value)
    # torchfile's list heuristic compares elements with ==, which fails on numpy arrays.
    _same(value, torchfile.load(str(path), use_list_heuristic=False))


def test_torchfile_reads_shared_views(tmp_path: Path) -> None:
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    path = tmp_path / "views.t7"
    streamser.save(path, {"base": base, "cols": base[:, 1:3], "row": base[2]})
    loaded = torchfile.load(str(path), use_list_heuristic=False)
    assert loaded[b"cols"].tolist() == base[:, 1:3].tolist()
    assert loaded[b"row"].tolist() == base[2].tolist()
