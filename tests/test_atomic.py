"""Saves replace a file the way ``open(path, "wb")`` would change it, but atomically (issue 13).

Symbolic links are followed (the target is replaced, the link stays), the replaced file's mode,
owner and group are kept, what ``open`` refuses is refused with the same error, every error
names the file, and temporary files belong to the save holding their lock, whatever process or
PID namespace it runs in. Tests that need two users run as root and drop privileges in a forked
child (``os.setuid`` to ``nobody``), in a folder that user owns.
"""

from __future__ import annotations

import errno
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import streamser
from streamser.io import atomic

TEMP_SUFFIX = ".streamser-tmp"
NOBODY = 65534
ROOT = Path(__file__).resolve().parents[1]
needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root (to switch users)"
)
MODES = [0o600, 0o640, 0o664, 0o755, 0o444]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(TEMP_SUFFIX))


def value(name: str) -> dict[str, Any]:
    return {"name": name, "w": np.arange(12, dtype=np.float32).reshape(3, 4)}


def name_in(path: Path) -> str:
    return str(streamser.load(path)["name"])


# --- symbolic links -------------------------------------------------------------------------------


def test_a_link_stays_a_link_and_its_target_is_replaced(tmp_path: Path) -> None:
    target, link = tmp_path / "real.t7", tmp_path / "link.t7"
    streamser.save(target, value("old"))
    link.symlink_to("real.t7")
    before = streamser.load(link)  # views of the old file's mapping
    old_inode = target.stat().st_ino
    streamser.save(link, value("new"))
    assert link.is_symlink()
    assert os.readlink(link) == "real.t7"
    assert name_in(target) == "new"
    assert target.stat().st_ino != old_inode  # replaced by a rename, not rewritten
    assert before["name"] == "old"
    assert before["w"].sum() == 66
    assert leftovers(tmp_path) == []


def test_a_chain_of_links_across_folders(tmp_path: Path) -> None:
    """link -> ../b/middle -> /abs/c/real.t7: the file at the end is replaced, in its folder."""
    for folder in ("a", "b", "c"):
        (tmp_path / folder).mkdir()
    real = tmp_path / "c" / "real.t7"
    streamser.save(real, value("old"))
    (tmp_path / "b" / "middle").symlink_to(real)
    (tmp_path / "a" / "link").symlink_to(Path("..") / "b" / "middle")
    streamser.save(tmp_path / "a" / "link", value("new"))
    assert name_in(real) == "new"
    assert (tmp_path / "a" / "link").is_symlink()
    assert (tmp_path / "b" / "middle").is_symlink()
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["link"]
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["real.t7"]


def test_a_dangling_link_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "link.t7"
    link.symlink_to("missing.t7")
    streamser.save(link, value("new"))
    assert link.is_symlink()
    assert name_in(tmp_path / "missing.t7") == "new"


def test_a_link_loop_is_refused_as_open_refuses_it(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OSError, match="symbolic links") as expected:
        open(tmp_path / "a", "wb")  # noqa: SIM115  # it fails
    with pytest.raises(OSError, match="symbolic links") as caught:
        streamser.save(tmp_path / "a", value("new"))
    assert caught.value.errno == expected.value.errno == errno.ELOOP
    assert caught.value.filename == str(tmp_path / "a")
    assert leftovers(tmp_path) == []


def test_a_folder_is_refused_as_open_refuses_it(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(IsADirectoryError) as caught:
        streamser.save(tmp_path / "dir", value("new"))
    assert caught.value.filename == str(tmp_path / "dir")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir"]


def test_a_fifo_is_written_through_not_replaced(tmp_path: Path) -> None:
    """``open(fifo, "wb")`` writes into the pipe; so does a save (nothing to rename)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    streamser.save(fifo, value("piped"))
    reader.join(timeout=30)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert streamser.deserialize(received[0])["name"] == "piped"


# --- modes, owners, umask -------------------------------------------------------------------------


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_new_file_gets_what_open_gives(tmp_path: Path, mask: int) -> None:
    with umask(mask):
        streamser.save(tmp_path / "new.t7", value("new"))
        with open(tmp_path / "opened", "wb"):
            pass
    assert stat.S_IMODE((tmp_path / "new.t7").stat().st_mode) == 0o666 & ~mask
    assert (tmp_path / "new.t7").stat().st_mode == (tmp_path / "opened").stat().st_mode


@pytest.mark.parametrize("mode", MODES, ids=oct)
def test_the_replaced_files_mode_is_kept(tmp_path: Path, mode: int) -> None:
    """Under umask 022 every mode came back 644: a private checkpoint became world-readable.
    (As root, a 0444 file is replaced, as ``open(path, "wb")`` would let root write it.)"""
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    path.chmod(mode)
    if mode == 0o444 and os.geteuid() != 0:
        pytest.skip("a non-root user may not write a 0444 file (see the unprivileged tests)")
    with umask(0o022):
        streamser.save(path, value("new"))
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert name_in(path) == "new"


def test_special_bits_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    path.chmod(0o2750)  # set-group-ID
    streamser.save(path, value("new"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o2750


@needs_root
def test_owner_and_group_are_kept_by_root(tmp_path: Path) -> None:
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    os.chown(path, NOBODY, NOBODY)
    path.chmod(0o640)
    streamser.save(path, value("new"))
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (NOBODY, NOBODY, 0o640)


# --- as an unprivileged user ----------------------------------------------------------------------


def as_user(uid: int, function: Callable[[], Any]) -> Any:
    """``function()`` in a forked child running as ``uid`` (and its group); its result, or
    the exception it raised, comes back through a pipe. The child cannot exec (it could not
    read root's Python), so everything it needs is imported here first."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_end)
        try:
            try:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                outcome: Any = ("value", function())
            except BaseException as exc:  # sent back to the parent
                outcome = ("error", exc, traceback.format_exc())
            with os.fdopen(write_end, "wb") as pipe:
                pickle.dump(outcome, pipe)
        finally:
            os._exit(0)  # never back into the test session, whatever failed
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:
        raise AssertionError("the child sent nothing back (it could not pickle its outcome)")
    outcome = pickle.loads(data)
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]


@pytest.fixture
def nobodys_folder() -> Iterator[Path]:
    """A folder owned by ``nobody`` (pytest's own are root's and closed to others)."""
    folder = Path(tempfile.mkdtemp(prefix="streamser-nobody-"))
    os.chown(folder, NOBODY, NOBODY)
    folder.chmod(0o755)
    streamser.save(folder / "warm-up.t7", value("x"))  # imports done before the fork
    (folder / "warm-up.t7").unlink()
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def owned_file(folder: Path, mode: int) -> Path:
    path = folder / "m.t7"
    streamser.save(path, value("old"))
    os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)
    return path


@needs_root
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o664, 0o755], ids=oct)
def test_an_unprivileged_save_keeps_the_mode(nobodys_folder: Path, mode: int) -> None:
    path = owned_file(nobodys_folder, mode)

    def save() -> tuple[int, int, str]:
        with umask(0o022):
            streamser.save(path, value("new"))
        info = path.stat()
        return stat.S_IMODE(info.st_mode), info.st_uid, name_in(path)

    assert as_user(NOBODY, save) == (mode, NOBODY, "new")
    assert leftovers(nobodys_folder) == []


@needs_root
def test_an_unprivileged_save_refuses_a_read_only_file_as_open_does(nobodys_folder: Path) -> None:
    path = owned_file(nobodys_folder, 0o444)

    def attempt(how: Callable[[], object]) -> tuple[type, int, str, str]:
        try:
            how()
        except OSError as exc:
            return type(exc), exc.errno, str(exc.filename), str(exc)
        raise AssertionError("not refused")

    def both() -> tuple[Any, Any]:
        return (
            attempt(lambda: open(path, "wb")),  # it fails
            attempt(lambda: streamser.save(path, value("new"))),
        )

    expected, caught = as_user(NOBODY, both)
    assert caught == expected
    assert expected[:2] == (PermissionError, errno.EACCES)
    assert name_in(path) == "old"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert leftovers(nobodys_folder) == []


@needs_root
def test_an_unprivileged_save_in_a_read_only_folder(nobodys_folder: Path) -> None:
    """A new file: the PermissionError ``open`` gives, naming the file (not the temporary).
    An existing writable file: refused too, since it could only be rewritten in place; the
    error names it and says why."""
    existing = owned_file(nobodys_folder, 0o644)
    nobodys_folder.chmod(0o555)

    def attempts() -> list[tuple[Any, ...]]:
        out = []
        for how in (
            lambda: open(nobodys_folder / "new.t7", "wb"),  # noqa: SIM115  # it fails
            lambda: streamser.save(nobodys_folder / "new.t7", value("new")),
            lambda: streamser.save(existing, value("new")),
        ):
            try:
                how()
            except PermissionError as exc:
                out.append((exc.errno, exc.filename, str(exc)))
        return out

    (opened, new, old) = as_user(NOBODY, attempts)
    assert new == opened
    assert new[1] == str(nobodys_folder / "new.t7")
    assert old[:2] == (errno.EACCES, str(existing))
    assert "cannot be replaced atomically" in old[2]
    assert name_in(existing) == "old"
    assert sorted(p.name for p in nobodys_folder.iterdir()) == ["m.t7"]


@needs_root
def test_another_users_file_in_a_sticky_folder_is_refused_first(nobodys_folder: Path) -> None:
    """In a folder of mode 1777 (as /tmp) ``open`` may rewrite another user's 0666 file, but
    only its owner or the folder's may rename over it: refused before anything is written."""
    sticky = nobodys_folder / "shared"
    sticky.mkdir()
    sticky.chmod(0o1777)
    path = sticky / "m.t7"
    streamser.save(path, value("old"))  # root's
    path.chmod(0o666)

    def attempt() -> tuple[int, str, str]:
        try:
            streamser.save(path, value("new"))
        except PermissionError as exc:
            return exc.errno, str(exc.filename), str(exc)
        raise AssertionError("not refused")

    code, name, text = as_user(NOBODY, attempt)
    assert (code, name) == (errno.EPERM, str(path))
    assert "sticky" in text
    assert name_in(path) == "old"
    assert leftovers(sticky) == []


@contextmanager
def protected_symlinks() -> Iterator[None]:
    """``fs.protected_symlinks`` on for the block (most distributions have it on)."""
    setting = Path("/proc/sys/fs/protected_symlinks")
    before = setting.read_text()
    setting.write_text("1")
    try:
        yield
    finally:
        setting.write_text(before)


@needs_root
def test_a_link_open_would_not_follow_is_not_followed(nobodys_folder: Path) -> None:
    """A link another user planted in a sticky world-writable folder: ``open`` refuses to
    follow it (EACCES), and so does ``save``, whose target stays untouched."""
    victim = nobodys_folder / "victim.t7"
    streamser.save(victim, value("old"))
    os.chown(victim, 0, 0)
    sticky = nobodys_folder / "tmp"
    sticky.mkdir()
    os.chown(sticky, 0, 0)
    sticky.chmod(0o1777)
    link = sticky / "x.t7"
    as_user(NOBODY, lambda: os.symlink(victim, link))
    with protected_symlinks():
        with pytest.raises(PermissionError) as opened:
            open(link, "wb")  # noqa: SIM115  # it fails
        with pytest.raises(PermissionError) as saved:
            streamser.save(link, value("new"))
    assert (saved.value.errno, saved.value.filename) == (opened.value.errno, str(link))
    assert name_in(victim) == "old"
    assert leftovers(nobodys_folder) == []


def test_an_owner_that_cannot_be_set_does_not_fail_the_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a user namespace a file of an unmapped owner shows as 65534 and ``fchown`` fails
    with EINVAL: the save goes on with the mode kept, as it does where it is not permitted."""
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    path.chmod(0o640)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)

    def unmapped(fd: int, uid: int, gid: int) -> None:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))

    monkeypatch.setattr(os, "fchown", unmapped)
    streamser.save(path, value("new"))
    assert name_in(path) == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o444], ids=oct)
def test_the_temporary_is_never_more_open_than_the_file(tmp_path: Path, mode: int) -> None:
    """While a save writes, its temporary is readable by no one the replaced file keeps out."""
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    path.chmod(mode)
    with umask(0o022), atomic.replacing(path) as raw:
        raw.write(streamser.serialize(value("new")))
        (temp,) = (p for p in tmp_path.iterdir() if p.name.endswith(TEMP_SUFFIX))
        assert stat.S_IMODE(temp.stat().st_mode) & ~mode == 0
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert name_in(path) == "new"


def test_a_name_as_long_as_open_takes(tmp_path: Path) -> None:
    """A name of 250 bytes leaves no room for the temporary's suffix: the temporary takes a
    shortened name with a checksum, and leftovers under such names are still found."""
    path = tmp_path / ("n" * 247 + ".t7")
    open(path, "wb").close()  # open takes it
    streamser.save(path, value("old"))
    prefix = atomic.temporary_prefix(path.name)
    assert len(prefix) < 250
    stale = tmp_path / f"{prefix}999999-0badc0de{TEMP_SUFFIX}"
    stale.write_bytes(b"left by a killed save")
    streamser.save(path, value("new"))
    assert name_in(path) == "new"
    assert leftovers(tmp_path) == []


@needs_root
def test_root_writes_where_open_lets_root_write(tmp_path: Path) -> None:
    """Root may write a 0444 file in a 0555 folder with ``open``, and so with ``save``."""
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    path.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        streamser.save(path, value("new"))
    finally:
        tmp_path.chmod(0o755)
    assert name_in(path) == "new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o444


# --- errors name the file -------------------------------------------------------------------------


def test_a_missing_folder_is_named_as_open_names_it(tmp_path: Path) -> None:
    path = tmp_path / "no" / "m.t7"
    with pytest.raises(FileNotFoundError) as caught:
        streamser.save(path, value("new"))
    assert caught.value.filename == str(path)


def test_fsync_and_rename_failures_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    for name, error in (("fsync", errno.EIO), ("replace", errno.EXDEV)):

        def fail(*args: object, error: int = error) -> None:
            raise OSError(error, os.strerror(error))

        with monkeypatch.context() as patch:
            patch.setattr(atomic.os, name, fail)
            with pytest.raises(OSError, match=os.strerror(error)) as caught:
                streamser.save(path, value("new"))
        assert (caught.value.errno, caught.value.filename) == (error, str(path)), name
        assert name_in(path) == "old"
        assert leftovers(tmp_path) == []


_FULL_DISK = """
    import resource, signal, sys
    import numpy as np
    import streamser
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        streamser.save(sys.argv[1], {"w": np.zeros(1 << 20)})
    except OSError as exc:
        print(exc.errno, exc.filename, exc)
"""


def test_a_full_disk_names_the_file(tmp_path: Path) -> None:
    """A real short write (RLIMIT_FSIZE: EFBIG, as a full disk's ENOSPC) names the target,
    not the temporary file, and leaves nothing behind."""
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_FULL_DISK), str(path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    number, filename, message = result.stdout.split(" ", 2)
    assert (int(number), filename) == (errno.EFBIG, str(path)), message
    assert "File too large" in message
    assert name_in(path) == "old"
    assert leftovers(tmp_path) == []


# --- temporaries owned by a lock ------------------------------------------------------------------

_HOLDING_SAVE = """
    import os, sys
    from pathlib import Path
    from streamser.io.atomic import replacing
    with replacing(Path(sys.argv[1])) as raw:
        raw.write(b"1\\n1\\n")  # ascii: the number 1
        print(os.getpid(), flush=True)
        sys.stdin.readline()  # hold the temporary until told to finish
    print("renamed", flush=True)
"""


def holding_save(path: Path, prefix: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*prefix, sys.executable, "-c", textwrap.dedent(_HOLDING_SAVE), str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, check=False)
    return probe.returncode == 0


@pytest.mark.parametrize(
    "namespace",
    [
        pytest.param(False, id="same-namespace"),
        pytest.param(
            True,
            id="other-pid-namespace",
            marks=pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare"),
        ),
    ],
)
def test_a_running_saves_temporary_is_never_removed(tmp_path: Path, namespace: bool) -> None:
    """A save in another process, or in another PID namespace (where its PID means nothing
    here: it was judged dead by its PID and its file removed), holds its temporary; saves
    here leave it alone, and it then replaces the file."""
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    prefix, wanted = [], None
    if namespace:  # the saving Python gets a PID that no process has here
        wanted = next(pid for pid in range(3, 1 << 22) if not Path(f"/proc/{pid}").exists())
        burn = f"i=2; while [ $i -lt {wanted} ]; do /bin/true; i=$((i+1)); done"
        prefix = ["unshare", "--pid", "--fork", "sh", "-c", burn + '; "$@"; true', "sh"]
    child = holding_save(path, prefix)
    try:
        assert child.stdout is not None
        inner_pid = int(child.stdout.readline())
        assert wanted in (None, inner_pid)  # judged by its PID, it would be a dead save's
        held = leftovers(tmp_path)
        assert len(held) == 1
        assert held[0].startswith(f".m.t7.{inner_pid}-")
        for _ in range(3):
            streamser.save(path, value("here"))  # each save cleans up after itself
        assert atomic.remove_stale_temporaries(path) == []
        assert leftovers(tmp_path) == held
        out, err = child.communicate("go\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert out.strip() == "renamed"
    assert streamser.load(path) == 1
    assert leftovers(tmp_path) == []


def test_a_killed_saves_temporary_is_removed_by_the_next_save(tmp_path: Path) -> None:
    path = tmp_path / "m.t7"
    streamser.save(path, value("old"))
    child = holding_save(path, [])
    assert child.stdout is not None
    child.stdout.readline()
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert len(leftovers(tmp_path)) == 1
    streamser.save(path, value("new"))
    assert leftovers(tmp_path) == []
    assert name_in(path) == "new"


_SAVING_LOOP = """
    import sys
    import numpy as np
    import streamser
    big = np.full(1 << 20, float(sys.argv[2]))  # 8 MiB: saves overlap
    for i in range(int(sys.argv[3])):
        streamser.save(sys.argv[1], {"who": sys.argv[2], "w": big})
    print("done")
"""


def test_two_concurrent_saves_both_succeed(tmp_path: Path) -> None:
    """Two processes saving the same file over and over: every save succeeds (none loses its
    temporary to the other's cleanup), the file is always one whole value, nothing is left."""
    path = tmp_path / "m.t7"
    streamser.save(path, {"who": "0", "w": np.zeros(1 << 20)})
    children = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(_SAVING_LOOP), str(path), who, "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for who in ("1", "2")
    ]
    seen = set()
    while any(child.poll() is None for child in children):
        loaded = streamser.load(path)
        assert float(loaded["w"][-1]) == float(loaded["who"])  # never a mixture
        seen.add(loaded["who"])
        time.sleep(0.01)
    for child in children:
        out, err = child.communicate(timeout=60)
        assert (child.returncode, out.strip()) == (0, "done"), err
    assert streamser.load(path)["who"] in ("1", "2")
    assert leftovers(tmp_path) == []
