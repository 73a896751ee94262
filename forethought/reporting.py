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

import json
import math
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from forethought.errors import InvalidArgumentError

PACKAGES = ("forethought", "torch", "transformer-lens", "transformers", "numpy", "scikit-learn", "accelerate")


def prepare_out_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that it is a writable directory."""
    out = Path(path).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-")
        probe.close()
    except OSError as error:
        raise InvalidArgumentError(f"output directory {str(path)!r} is not writable ({error.strerror}); "
                                   "pass --out with a directory you can write to") from error
    return out


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; nothing is left behind on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(handle)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``path`` that replaces ``path`` when the block succeeds.

    On an error the temporary directory is removed and ``path`` is left as it was.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
