"""Result files: atomic, shared with the umask's permissions, no temporaries left by killed writers, and a
failed write that names its path."""

from __future__ import annotations

import errno
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from forethought.errors import InvalidArgumentError
from forethought.reporting import atomic_directory, atomic_write, check_out_dir, prepare_out_dir, write_json


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.cpu_only
def test_files_and_directories_get_the_umask_permissions(tmp_path, umask_022):
    assert _mode(write_json(tmp_path / "report.json", {"a": 1})) == 0o644
    with atomic_directory(tmp_path / "model") as folder:
        (folder / "weights.bin").write_bytes(b"x")
    assert _mode(tmp_path / "model") == 0o755


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "checkpoint.pt"
    script = textwrap.dedent(f"""
        import os, signal
        from forethought.reporting import atomic_write
        def write(tmp):
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGKILL)
        atomic_write({str(target)!r}, write)
    """)
    for _ in range(3):
        process = subprocess.run([sys.executable, "-c", script], check=False)
        assert process.returncode == -signal.SIGKILL
    # each writer sweeps what the one before it left: one temporary at a time, never a pile
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(".checkpoint.pt.")]) == 1
    atomic_write(target, lambda tmp: tmp.write_bytes(b"whole"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert target.read_bytes() == b"whole"


def test_a_live_writers_temporary_is_kept(tmp_path):
    live = tmp_path / f".report.json.tmp-{os.getpid()}-abc.json"
    live.write_text("in progress")
    write_json(tmp_path / "report.json", {})
    assert live.exists()


def test_a_full_disk_raises_one_oserror_naming_the_path_and_leaves_nothing(tmp_path):
    def full(tmp):
        tmp.write_bytes(b"part")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "probes.csv", full)
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "probes.csv")
    assert list(tmp_path.iterdir()) == []


def test_a_torch_save_failure_becomes_an_oserror(tmp_path):
    def failed(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . PytorchStreamWriter failed writing file")

    with pytest.raises(OSError) as caught:
        atomic_write(tmp_path / "checkpoint.pt", failed)
    assert caught.value.filename == str(tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["", "   "])
def test_blank_out_dir_is_refused(path):
    with pytest.raises(InvalidArgumentError, match="--out is empty"):
        check_out_dir(path)


def test_check_out_dir_creates_nothing(tmp_path):
    assert check_out_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgumentError, match="is a file"):
        prepare_out_dir(tmp_path / "file")
