"""The compiled ascii number loops (``streamser._fastascii``) against the Python codec.

The Python codec in ``streamser.codecs.ascii`` is the reference: every run of numbers must be
printed to the same bytes, and every text must parse to the same bits or fail with the same
error (class, message, byte offset). Each test runs with the loops as built, then again with
``ascii._FAST`` set to None.
"""

from __future__ import annotations

import importlib.util
import math
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import streamser
from streamser.codecs import ascii as ascii_codec
from streamser.codecs.ascii import AsciiDecoder
from streamser.spec.format import ELEMENTS
from streamser.speedups import PURE, compiled

NUMERIC = ["Short", "Int", "Long", "Half", "Float", "Double"]
Outcome = tuple[Any, tuple[type[BaseException], str, int | None] | None]


def python_codec() -> Any:
    """The ascii codec with its compiled loops switched off, inside a ``with`` block."""
    return mock.patch.object(ascii_codec, "_FAST", None)


def assert_same(make: Callable[[], Outcome]) -> Outcome:
    """``make()`` gives the same with the compiled loops as with the Python reference."""
    fast = make()
    with python_codec():
        assert make() == fast
    return fast


def parsed(text: bytes, name: str, count: int) -> Outcome:
    """The bits of ``count`` elements read from ``text`` and where reading stopped, or the error."""
    decoder = AsciiDecoder(text)
    try:
        array = decoder.read_array(ELEMENTS[name], count)
    except streamser.StreamserError as exc:
        return None, (type(exc), str(exc), exc.offset)
    return (array.tobytes(), decoder.pos), None


def printed(value: Any) -> Outcome:
    return streamser.serialize(value, "ascii"), None


def test_the_compiled_loops_are_built() -> None:
    if PURE:
        assert ascii_codec._FAST is None
    else:
        assert compiled("_fastascii") is not None
        assert ascii_codec._FAST is not None


def test_the_power_table_is_what_its_generator_writes() -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "gen_pow10.py"
    spec = importlib.util.spec_from_file_location("gen_pow10", script)
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.HEADER.read_text() == generator.render()


# --- printing ---------------------------------------------------------------------------------

EXTREMES = [
    0.0,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    -math.nan,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1.7976931348623157e308,
    1e-5,
    1e-4,
    9.99999999999999e-5,
    0.1,
    0.5,
    1e16,
    1e17,
    1e21,
    1e22,
    1e23,
    123456789012345678.0,
    12345678.0009765625,
    2.0**53,
    2.0**64,
    3.4028234663852886e38,
    1.1754943508222875e-38,
    1.401298464324817e-45,
    65504.0,
    6.1e-05,
]


@pytest.mark.parametrize("name", NUMERIC)
def test_extremes_print_the_same(name: str) -> None:
    dtype = ELEMENTS[name].dtype
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            values = np.array(EXTREMES).astype(dtype)
    else:
        info = np.iinfo(dtype)  # type: ignore[type-var]
        values = np.array([info.min, info.min + 1, -1, 0, 1, 9, 10, 99, 100, info.max], dtype)
    assert_same(lambda: printed(values))


@pytest.mark.parametrize("name", NUMERIC)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_arrays_print_the_same(name: str, data: st.DataObject) -> None:
    dtype = ELEMENTS[name].dtype
    elements = hnp.from_dtype(dtype, allow_nan=True, allow_infinity=True, allow_subnormal=True)
    values = data.draw(hnp.arrays(dtype, st.integers(1, 40), elements=elements))
    assert_same(lambda: printed(values))


@settings(max_examples=60, deadline=None)
@given(bits=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=40))
def test_any_double_bits_print_the_same(bits: list[int]) -> None:
    values = np.array(bits, dtype=np.uint64).view(np.float64)  # every NaN payload, every sign
    with np.errstate(over="ignore"):
        narrowed = values.astype(np.float32)
    assert_same(lambda: printed(values))
    assert_same(lambda: printed(narrowed))


def test_rounding_ties_print_to_even() -> None:
    # m / 2^k has a finite decimal expansion: many of these stop exactly half-way at digit 18
    rng = np.random.default_rng(0)
    mantissas = rng.integers(1, 2**53, 2000).astype(np.float64)
    values = mantissas / 2.0 ** rng.integers(1, 60, 2000)
    fast = streamser.serialize(values, "ascii")
    assert b"12345678.000976562" in streamser.serialize(np.array([12345678.0009765625]), "ascii")
    with python_codec():
        assert streamser.serialize(values, "ascii") == fast


def test_big_endian_views_and_casts_print_the_same() -> None:
    values = np.linspace(-3, 3, 50)
    assert_same(lambda: printed(values.astype(">f4")))
    assert_same(lambda: printed(values[::3]))
    for cast in ("float16", "float32", "float64"):
        assert_same(lambda cast=cast: (streamser.serialize(values, "ascii", cast=cast), None))


def test_long_runs_are_printed_in_chunks_on_one_line() -> None:
    values = np.arange(3 * ascii_codec._FAST_FORMAT_CHUNK + 7, dtype=np.int64) - 5
    data, _ = assert_same(lambda: printed(values))
    line = data.split(b"\n")[-2]
    assert line.count(b" ") == values.size - 1


# --- parsing ----------------------------------------------------------------------------------


def _texts(value: float) -> list[str]:
    """The ways a number is spelled in files: Torch7's own, repr, fixed and exponent forms."""
    if value != value:
        return ["nan", "-nan"]
    return [f"{value:.17g}", f"{value:.9g}", repr(value), f"{value:e}", f"{value:.3f}"]


@pytest.mark.parametrize("name", NUMERIC)
@settings(max_examples=60, deadline=None)
@given(values=st.lists(st.floats(allow_subnormal=True), min_size=1, max_size=30))
def test_printed_numbers_parse_the_same(name: str, values: list[float]) -> None:
    tokens = [text for value in values for text in _texts(value)]
    text = " ".join(tokens).encode() + b"\nrest"
    assert_same(lambda: parsed(text, name, len(tokens)))


_DECIMAL = st.from_regex(
    r"\A[+-]?([0-9]{1,30}(\.[0-9]{0,30})?|\.[0-9]{1,30})([eE][+-]?[0-9]{1,4})?\Z"
)


@pytest.mark.parametrize("name", NUMERIC)
@settings(max_examples=80, deadline=None)
@given(tokens=st.lists(_DECIMAL, min_size=1, max_size=20))
def test_decimal_tokens_parse_the_same(name: str, tokens: list[str]) -> None:
    text = " ".join(tokens).encode()
    assert_same(lambda: parsed(text, name, len(tokens)))


SPELLINGS = [
    "1_000",
    "0x1p3",
    "0X1P-2",
    "-0x1.8p1",
    "0x1p99999",
    "infinity",
    "-Infinity",
    "INF",
    "NaN",
    "nan(1)",
    "+nan",
    "-inf",
    "+inf",
    "1e",
    "e5",
    ".",
    "-",
    "+",
    "--1",
    "1.5.2",
    "1e5x",
    "1.e5",
    ".5",
    "5.",
    "1e-400",
    "1e400",
    "-0",
    "00012",
    "+7",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "40000",
    "-32769",
    "2147483648",
    "4.9406564584124654e-324",
    "2.4703282292062327e-324",
    "1." + "0" * 25 + "1",
    "123456789012345678901234567890",
    "0." + "0" * 400 + "1",
    "1\x00",
    "\xa0",
    "٣",
    "1,5",
]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("token", SPELLINGS)
def test_unusual_tokens_parse_or_fail_the_same(name: str, token: str) -> None:
    text = f"1 {token} 3\n".encode()
    assert_same(lambda: parsed(text, name, 3))


@pytest.mark.parametrize("name", NUMERIC)
@settings(max_examples=60, deadline=None)
@given(text=st.binary(max_size=60), count=st.integers(1, 8))
def test_any_bytes_parse_or_fail_the_same(name: str, text: bytes, count: int) -> None:
    assert_same(lambda: parsed(text, name, count))


@pytest.mark.parametrize(
    ("text", "count"),
    [(b"1 2", 3), (b"1 2 ", 3), (b"", 1), (b"   \n ", 1), (b"1 2 3", 3), (b"1 2 3 4_5\n", 3)],
)
def test_short_and_trailing_input_fails_the_same(text: bytes, count: int) -> None:
    for name in NUMERIC:
        assert_same(lambda name=name: parsed(text, name, count))


def test_every_half_and_its_neighbours_parse_the_same() -> None:
    halves = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64)
    halves = halves[np.isfinite(halves)]
    between = (halves[:-1] + halves[1:]) / 2  # ties: rounded to the even half
    values = np.concatenate([halves, between, np.nextafter(between, 0), np.nextafter(between, 1e9)])
    text = " ".join(f"{v:.17g}" for v in values.tolist()).encode()
    assert_same(lambda: parsed(text, "Half", values.size))


@pytest.mark.skipif(PURE, reason="the compiled loops are switched off")
def test_parsing_needs_no_more_memory_than_the_result() -> None:
    values = np.random.default_rng(1).standard_normal(200_000)
    text = streamser.serialize(values, "ascii")
    tracemalloc.start()
    try:
        loaded = streamser.deserialize(text, "ascii")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(loaded, values)
    assert peak < values.nbytes + (1 << 20)  # the array itself, and no tokens


@pytest.mark.skipif(PURE, reason="the compiled loops are switched off")
def test_plain_runs_do_not_fall_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any) -> None:
        raise AssertionError("the Python tokenizer ran")

    monkeypatch.setattr(AsciiDecoder, "_token_chunk", refuse)
    values = np.random.default_rng(2).standard_normal(1000)
    for dtype in ("f2", "f4", "f8", "i2", "i4", "i8"):
        with np.errstate(invalid="ignore"):
            array = (values * 1000).astype(dtype)
        loaded = streamser.deserialize(streamser.serialize(array, "ascii"), "ascii")
        assert loaded.tobytes() == array.tobytes()
