"""Writing results: atomic JSON/CSV/PNG files and the provenance every report carries.

Every file is written to a temporary name in the same directory and renamed into place, so an interrupted
run never leaves a half-written result.

Example:
    >>> import tempfile, json
    >>> folder = prepare_out_dir(tempfile.mkdtemp())
    >>> path = write_json(folder / "report.json", {"loss": 1.0})
    >>> json.loads(path.read_text())["loss"]
    1.0
"""

from __future__ import annotations

import errno
import json
import math
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from forethought.errors import InvalidArgumentError

#: Words of the RuntimeError by which torch.save reports a failed write (a full disk: "unexpected pos").
WRITE_FAILURES = ("writ", "unexpected pos", "inline_container", "pytorchstreamwriter")
PACKAGES = ("forethought", "torch", "transformer-lens", "transformers", "numpy", "scikit-learn", "accelerate")


def check_out_dir(path: str | os.PathLike) -> Path:
    """Raise :class:`InvalidArgumentError` unless ``path`` is, or can be created as, a writable directory.

    Creates nothing, so that a run refused later leaves no trace.

    Example:
        >>> check_out_dir("")
        Traceback (most recent call last):
        ...
        forethought.errors.InvalidArgumentError: --out is empty; pass the directory to write results in
    """
    if not str(path).strip():
        raise InvalidArgumentError("--out is empty; pass the directory to write results in")
    out = Path(path).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise InvalidArgumentError(f"--out {str(path)!r} is a file, not a directory; pass a directory")
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise InvalidArgumentError(f"output directory {str(path)!r} is not writable ({str(ancestor)!r} "
                                   f"{'is not a directory' if not ancestor.is_dir() else 'is read-only'}); "
                                   "pass --out with a directory you can write to")
    return out


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Check ``path`` as :func:`check_out_dir` does, create it if needed and check that it takes files."""
    out = check_out_dir(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
    except OSError as error:
        raise InvalidArgumentError(f"output directory {str(path)!r} is not writable ({error.strerror}); "
                                   "pass --out with a directory you can write to") from error
    return out


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; nothing is left behind on error.

    The file gets the permissions the umask allows (0644 under umask 022). Temporary files that a killed
    process left beside ``path`` are removed first. A failed write (a full disk, ...) raises an ``OSError``
    that names ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_temporaries(path)
    handle, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        try:
            write(Path(tmp))
        except OSError as error:
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        except RuntimeError as error:  # torch.save reports a failed write as a RuntimeError
            if not any(marker in str(error).lower() for marker in WRITE_FAILURES):
                raise
            full = shutil.disk_usage(path.parent).free < 1 << 20
            code = errno.ENOSPC if full else errno.EIO
            raise OSError(code, os.strerror(code), str(path)) from error
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path`` that replaces ``path`` when the block succeeds.

    On an error the temporary directory is removed and ``path`` is left as it was. The directory gets the
    permissions the umask allows (0755 under umask 022); temporaries of killed processes are removed first.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale_temporaries(out)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(out), dir=out.parent))
    try:
        yield tmp
        mask = _umask()
        for folder, _, files in os.walk(tmp):  # some writers (safetensors) create their files 0600
            for name in files:
                os.chmod(os.path.join(folder, name), 0o666 & ~mask)
            if folder != str(tmp):
                os.chmod(folder, 0o777 & ~mask)
        os.chmod(tmp, 0o777 & ~mask)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def remove_empty_tree(path: str | os.PathLike) -> bool:
    """Remove ``path`` if it is a directory that holds no file (only empty directories); return whether it did.

    A command that fails after creating its output directory but before writing anything into it leaves no trace.
    """
    out = Path(path)
    if not out.is_dir() or out.is_symlink():
        return False
    for _, _, files in os.walk(out):
        if files:
            return False
    shutil.rmtree(out, ignore_errors=True)
    return not out.exists()


def _temporary_prefix(path: Path) -> str:
    """``.NAME.tmp-PID-``: the writer's process id tells a live writer's temporary from a killed one's."""
    return f".{path.name}.tmp-{os.getpid()}-"


def _sweep_stale_temporaries(path: Path) -> None:
    """Remove temporaries of ``path`` whose writing process no longer exists."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.tmp-(\d+)-")
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return
    for sibling in siblings:
        match = pattern.match(sibling.name)
        if match is None or _process_exists(int(match.group(1))):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (NaN/inf become null, tensors and numpy scalars become numbers)."""
    text = json.dumps(_plain(data), indent=2, sort_keys=False, allow_nan=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


def write_csv(path: str | os.PathLike, frame: Any) -> Path:
    """Write a pandas DataFrame as CSV without its index."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def provenance(seed: int | None = None) -> dict[str, Any]:
    """Seed, Python and package versions, for ``report.json``."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"seed": seed, "python": platform.python_version(), "packages": versions}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):
        return _plain(value.item())
    return value
