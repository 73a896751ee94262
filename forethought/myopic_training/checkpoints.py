"""Training checkpoints: one file with everything a run needs to resume, written atomically and read safely.

A checkpoint is a ``torch.save`` dict of tensors and plain data:

* ``format``: :data:`CHECKPOINT_FORMAT`; ``step``: optimizer steps done; ``seconds``: training time spent;
* ``config``: the settings that determine the loss curve (a resumed run must use the same ones);
* ``data_order``: the batch source's state (a seed, or a generator state);
* ``model``, ``past_model``, ``optimizer``, ``scheduler``: state dicts (``past_model`` may be ``None``);
* ``rng``: the torch, CUDA, numpy and python RNG states;
* ``history``: the log so far, one record per step.

It is written to a temporary file and renamed, and read with ``torch.load(weights_only=True)``: a file carrying a
pickled object is refused.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
    >>> _ = atomic_write(path, lambda tmp: torch.save({"format": CHECKPOINT_FORMAT, "config": {"lr": 1.0}}, tmp))
    >>> check_same_settings(path, read_checkpoint(path)["config"], {"lr": 0.5})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    forethought.errors.CheckpointError: checkpoint ... was written with other settings: lr=1.0 (now 0.5); ...
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from forethought.errors import CheckpointError
from forethought.reporting import atomic_write

CHECKPOINT_FORMAT = "forethought-train-checkpoint-v1"


def save_checkpoint(path: Path, accelerator: Any, *, step: int, settings: dict[str, Any], data_order: dict[str, Any],
                    history: list[dict], model: nn.Module, optimizer: Any, scheduler: Any,
                    past_model: nn.Module | None = None, seconds: float = 0.0) -> None:
    """Write everything needed to resume to ``path`` atomically (main process only; every process waits)."""
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "seconds": seconds,
        "config": settings,
        "data_order": data_order,
        "model": _cpu(model.state_dict()),
        "past_model": _cpu(past_model.state_dict()) if past_model is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "history": history,
    }
    atomic_write(path, lambda tmp: write_torch_file(state, tmp))


def write_torch_file(state: Any, path: Path) -> None:
    """``torch.save(state, path)``; a failed write (a full disk, ...) raises ``OSError`` naming ``path`` and the cause.

    torch reports a failed write as a ``RuntimeError`` (``[enforce fail at inline_container.cc] unexpected pos``);
    as an ``OSError`` it ends the command in one line (exit 1) like every other failed write, and
    :func:`~forethought.reporting.atomic_write` leaves the previous file as it was.
    """
    try:
        torch.save(state, path)
    except RuntimeError as error:
        full = shutil.disk_usage(Path(path).parent).free < 1 << 20
        code = errno.ENOSPC if full else errno.EIO
        detail = str(error).strip().splitlines()[-1].strip() if str(error).strip() else type(error).__name__
        raise OSError(code, f"{os.strerror(code)} ({detail})" if not full else os.strerror(code), str(path)) from error


def read_checkpoint(path: str | os.PathLike, expected_format: str = CHECKPOINT_FORMAT) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``); refuse anything else with :class:`CheckpointError`.

    ``expected_format`` is the ``"format"`` entry the checkpoint must carry (default: a training run's).

    Example:
        >>> import tempfile, pathlib
        >>> bad = pathlib.Path(tempfile.mkdtemp()) / "checkpoint.pt"
        >>> _ = bad.write_bytes(b"not a checkpoint")
        >>> read_checkpoint(bad)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        forethought.errors.CheckpointError: checkpoint ... is corrupt or truncated ...
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from error
    except Exception as error:  # noqa: BLE001 - torch raises many types for bad files
        if "unsupported global" in str(error).lower():
            raise CheckpointError(
                f"checkpoint {str(path)!r} holds pickled objects beyond tensors and plain data; refusing to "
                "load it (it may run code). Only load checkpoints you wrote yourself"
            ) from error
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({type(error).__name__}); delete it to start over"
        ) from error
    if not isinstance(state, dict) or state.get("format") != expected_format:
        found = f" (its format is {state.get('format')!r})" if isinstance(state, dict) and "format" in state else ""
        raise CheckpointError(f"{str(path)!r} is not a forethought checkpoint of kind {expected_format!r}{found}; "
                              "delete it to start over or use another directory")
    return state


def check_same_settings(path: str | os.PathLike, saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` naming every setting in ``wanted`` that the checkpoint saved differently."""
    changed = [f"{key}={saved.get(key)!r} (now {value!r})" for key, value in wanted.items() if saved.get(key) != value]
    if changed:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written with other settings: {', '.join(changed)}; resume with the same "
            "settings or start a new run in another directory"
        )


def load_checkpoint(path: Path, settings: dict[str, Any], model: nn.Module, optimizer: Any, scheduler: Any,
                    past_model: nn.Module | None = None) -> dict[str, Any]:
    """Check the settings, restore model, optimizer, scheduler, past model and RNG states; return the checkpoint.

    The checkpoint's ``step``, ``history``, ``data_order`` and ``seconds`` are the caller's to restore.
    """
    state = read_checkpoint(path)
    check_same_settings(path, state["config"], settings)
    try:
        model.load_state_dict(state["model"])
        if past_model is not None and state["past_model"] is not None:
            past_model.load_state_dict(state["past_model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not fit this model or optimizer: {str(error).splitlines()[0]}"
        ) from error
    set_rng_state(state["rng"])
    return state


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, numpy, python) as tensors and plain data (``weights_only``-loadable).

    Ours rather than ``Accelerator.save_state``'s: that writes a directory per process, with the numpy state as a
    pickled array, beside the model and optimizer but without the past model, the data order or the log; a
    checkpoint here is one file, renamed into place whole and read with ``weights_only=True``. (Seeding is
    accelerate's ``set_seed``.)
    """
    _, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _cpu(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    return {name: tensor.detach().cpu() for name, tensor in state_dict.items()}
