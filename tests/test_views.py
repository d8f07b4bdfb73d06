"""What tensors loaded from a file see when the file changes afterwards (issue 13).

``load(path)`` returns views of a private (copy-on-write) mapping of the file. On Linux, and
POSIX generally, such a mapping shows the file's current bytes in every page not written to:

* replacing the file by a rename (what ``save`` does, and most tools' atomic writes) or
  deleting it leaves the old inode alive while it is mapped: the views keep their bytes;
* rewriting it in place (``cp``, ``open(path, "wb")`` then ``write``) changes the inode the
  views map: they show the new bytes;
* truncating it makes the pages past the new end unbacked: touching them kills the process
  with SIGBUS (tested in a child process).

``load(path, mmap=False)`` reads the file into private memory at once (at the speed of
``np.fromfile``): nothing done to the file afterwards reaches the values. That is the mode for
files that other programs may rewrite in place.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import streamser

ROOT = Path(__file__).resolve().parents[1]
N = 1 << 16  # 512 KiB of float64: many pages


def saved(path: Path, fill: float) -> None:
    streamser.save(path, {"w": np.full(N, fill)})


def rewrite_in_place(path: Path, fill: float) -> None:
    """What ``cp new path`` does: the same inode, truncated and written again."""
    data = streamser.serialize({"w": np.full(N, fill)})
    with open(path, "r+b") as out:  # no truncation: the views never lose their pages here
        out.write(data)


@pytest.mark.parametrize("mapped", [True, False])
def test_replacing_by_rename_or_deleting_keeps_every_view(tmp_path: Path, mapped: bool) -> None:
    path = tmp_path / "m.t7"
    saved(path, 1.0)
    first = streamser.load(path, mmap=mapped)["w"]
    saved(path, 2.0)  # a rename over the file
    assert first.sum() == N
    second = streamser.load(path, mmap=mapped)["w"]
    path.unlink()
    assert (first.sum(), second.sum()) == (N, 2 * N)


def test_an_in_place_rewrite_shows_through_mapped_views_only(tmp_path: Path) -> None:
    path = tmp_path / "m.t7"
    saved(path, 1.0)
    mapped = streamser.load(path)["w"]
    copied = streamser.load(path, mmap=False)["w"]
    rewrite_in_place(path, 3.0)
    assert mapped.sum() == 3 * N  # the mapping shows the file as it is now
    assert copied.sum() == N  # private memory: the bytes read at load


def test_pages_written_through_a_view_are_the_views_own(tmp_path: Path) -> None:
    """Copy-on-write: a page the program wrote to is private, and the file never changes."""
    path = tmp_path / "m.t7"
    saved(path, 1.0)
    mapped = streamser.load(path)["w"]
    mapped[0] = 10.0
    rewrite_in_place(path, 3.0)
    assert mapped[0] == 10.0  # its page was copied when written
    assert mapped[-1] == 3.0  # the others follow the file
    assert streamser.load(path, mmap=False)["w"][0] == 3.0


_TRUNCATED = """
    import os, sys
    import streamser
    path, mode = sys.argv[1], sys.argv[2]
    w = streamser.load(path, mmap=(mode == "mapped"))["w"]
    os.truncate(path, 100)  # another program truncates the file
    print(float(w.sum()), flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGBUS"), reason="POSIX only")
@pytest.mark.parametrize("mode", ["mapped", "copied"])
def test_truncation_under_mapped_views_is_sigbus(tmp_path: Path, mode: str) -> None:
    """Touching a mapped view of a truncated file kills the process (SIGBUS), which is why
    ``save`` never truncates; ``mmap=False`` values are unaffected."""
    path = tmp_path / "m.t7"
    saved(path, 1.0)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_TRUNCATED), str(path), mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    if mode == "mapped":
        assert result.returncode == -signal.SIGBUS, (result.returncode, result.stderr[-500:])
    else:
        assert (result.returncode, result.stdout.strip()) == (0, str(float(N)))
    assert os.path.getsize(path) == 100
