"""The primitive layer: the ascii scanner's chunking and scanf rules, binary bounds."""

from __future__ import annotations

import numpy as np
import pytest

import streamser
from streamser.codecs.ascii import _TEXT_CHUNK, AsciiDecoder
from streamser.spec.format import ELEMENTS


def _storage(values: bytes, count: int, name: bytes = b"torch.DoubleStorage") -> bytes:
    return b"4\n1\n3\nV 1\n%d\n%s\n%d\n%s\n" % (len(name), name, count, values)


def test_numbers_may_spread_over_lines_with_any_white_space() -> None:
    data = _storage(b" 1\t2\n\n 3e0\r\n-4.5   \n0x1p3\n", 5)
    assert streamser.deserialize(data, "ascii").array.tolist() == [1, 2, 3, -4.5, 8]


def test_long_lines_are_scanned_in_chunks_across_token_boundaries() -> None:
    count = 3 * _TEXT_CHUNK // 10  # about three chunks of text on one line
    values = np.arange(count, dtype=np.float64) + 0.125
    text = b" ".join(b"%.17g" % v for v in values.tolist())
    loaded = streamser.deserialize(_storage(text, count), "ascii")
    np.testing.assert_array_equal(loaded.array, values)


def test_a_line_with_more_numbers_than_needed_leaves_the_rest() -> None:
    decoder = AsciiDecoder(b"1 2 3 4 5 6 7 8 9 10\nrest")
    first = decoder.read_array(ELEMENTS["Int"], 7)
    assert first.tolist() == [1, 2, 3, 4, 5, 6, 7]
    assert decoder.read_array(ELEMENTS["Int"], 3).tolist() == [8, 9, 10]
    assert decoder.read_raw(4) == b"rest"


@pytest.mark.parametrize("bad", [b"1_000 2", b"1 two", b"1 2.5"])
def test_numbers_follow_c_scanf_not_python(bad: bytes) -> None:
    with pytest.raises(streamser.FormatError):
        streamser.deserialize(_storage(bad, 2, b"torch.LongStorage"), "ascii")


def test_out_of_range_integers_are_refused() -> None:
    with pytest.raises(streamser.FormatError, match="range"):
        streamser.deserialize(_storage(b"1 40000", 2, b"torch.ShortStorage"), "ascii")


def test_binary_lengths_are_checked_before_reading() -> None:
    data = streamser.serialize(np.zeros(4, np.float32))
    with pytest.raises(streamser.TruncatedError, match="16 bytes needed"):
        streamser.deserialize(data[:-1], "binary")
