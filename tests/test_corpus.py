"""Oracle tests: every file of the Lua Torch7 reference corpus against its ``t7oracle/1`` JSON.

``tests/corpus`` (see its README) holds files written by real Torch7, each beside a JSON
description of the original object. :class:`Walker` checks a loaded value against it node by
node and matches objects one to one with JSON ids: a ``ref`` is the object of its first occurrence.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support import (
    CASES,
    CORPUS,
    SHARED_CORPUS,
    Case,
    assert_same_bytes,
    case_params,
    check_value,
)

import streamser

# --- the tests ----------------------------------------------------------------------------------


def test_manifest_lists_every_file() -> None:
    data_files = {p.name for p in CORPUS.iterdir() if p.suffix not in (".json", ".tsv", ".md")}
    assert {case.file for case in CASES} == data_files
    assert all(case.json == f"{case.file}.json" for case in CASES)
    assert all((CORPUS / case.json).is_file() for case in CASES)


@pytest.mark.parametrize("case", case_params(CASES))
def test_json_match(case: Case) -> None:
    check_value(case, case.load(case.load_mode))


@pytest.mark.parametrize("case", case_params(CASES))
def test_round_trip_is_byte_exact(case: Case, tmp_path: Path) -> None:
    original = case.path.read_bytes()
    value = case.load(case.load_mode)
    written = streamser.serialize(value, case.load_mode, case.referenced)
    assert_same_bytes(written, original, "serialize")
    if case.writer != "torch.serialize":
        target = tmp_path / case.file
        streamser.save(target, value, case.load_mode, case.referenced)
        assert_same_bytes(target.read_bytes(), original, "save")


@pytest.mark.parametrize("case", case_params(CASES))
def test_detected_format_matches_json(case: Case) -> None:
    check_value(case, case.load(None))


def test_copy_matches_shared_corpus() -> None:
    if not SHARED_CORPUS.is_dir():
        pytest.skip(f"{SHARED_CORPUS} is absent: nothing to compare the copy with")
    shared = sorted(p.name for p in SHARED_CORPUS.iterdir())
    assert shared == sorted(p.name for p in CORPUS.iterdir())
    changed = [n for n in shared if (SHARED_CORPUS / n).read_bytes() != (CORPUS / n).read_bytes()]
    assert changed == [], f"files differ from {SHARED_CORPUS}"


NO_MMAP_FILES = {
    "tensor_Float_views.binary.t7", "tensor_and_storage.binary.t7", "nn_linear.binary.t7",
    "tensor_Float_0d_with_storage.binary.t7", "tensor_Long_views.b32.t7", "bigfloat.binary.t7",
}  # fmt: skip
NO_MMAP_CASES = [case for case in CASES if case.file in NO_MMAP_FILES]
assert len(NO_MMAP_CASES) == len(NO_MMAP_FILES), "a NO_MMAP_FILES name is not in the manifest"


@pytest.mark.parametrize("detect", [False, True], ids=["given", "detected"])
@pytest.mark.parametrize("case", case_params(NO_MMAP_CASES))
def test_no_mmap_matches_json(case: Case, detect: bool) -> None:
    check_value(case, case.load(None if detect else case.load_mode, mmap=False))
