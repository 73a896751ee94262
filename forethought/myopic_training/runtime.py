"""What a training run needs from its process: the device check, the ``accelerate`` state, signals, the log.

Example:
    >>> import tempfile
    >>> log = JsonLinesLog(Path(tempfile.mkdtemp()) / "log.jsonl", [{"step": 1, "loss": 2.0}])
    >>> log.append({"step": 2, "loss": 1.5})
    >>> log.path.read_text().splitlines()
    ['{"step": 1, "loss": 2.0}', '{"step": 2, "loss": 1.5}']
"""

from __future__ import annotations

import json
import signal
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch

from forethought.devices import resolve_device
from forethought.distributed import leave_world_at_exit
from forethought.errors import check_choice
from forethought.options import DEVICES
from forethought.reporting import atomic_write


def check_device(device: str) -> None:
    """Raise :class:`InvalidArgumentError` unless ``device`` is one of :data:`DEVICES` and available here."""
    check_choice("device", device, DEVICES)
    resolve_device(device)


def make_accelerator(device: str, mixed_precision: str) -> Any:
    """An ``accelerate.Accelerator`` on ``device`` with ``mixed_precision``.

    ``device`` is ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``; ``mixed_precision="auto"`` means bf16 autocast
    on a CUDA GPU that supports it, else none.
    DDP searches for unused parameters unless the caller turns it off (``accelerator.ddp_handler``). An earlier
    run in this process that chose another precision or device is forgotten (a distributed state is kept).
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    check_device(device)
    on_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    precision = mixed_precision
    if precision == "auto":
        precision = "bf16" if on_cuda and torch.cuda.is_bf16_supported() else "no"
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    settings = {"cpu": device == "cpu", "mixed_precision": precision, "kwargs_handlers": [ddp]}
    try:
        accelerator = Accelerator(**settings)
    except ValueError as error:  # an earlier run in this process chose another precision
        if "already been initialized" not in str(error):
            raise
        _forget_accelerator(reset_partial_state=False)  # keeps the distributed (partial) state
        accelerator = Accelerator(**settings)
    wanted = resolve_device(device)
    if accelerator.num_processes == 1 and accelerator.device.type != wanted.type:
        # an earlier run in this process chose another device, which accelerate's process state keeps silently
        _forget_accelerator(reset_partial_state=True)
        accelerator = Accelerator(**settings)
    if accelerator.num_processes > 1:
        leave_world_at_exit()  # the process group goes down before the interpreter does
    return accelerator


def _forget_accelerator(reset_partial_state: bool) -> None:
    """Forget the accelerator state of an earlier run in this process (accelerate keeps it as a singleton)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=reset_partial_state)


class StopOnSignal(AbstractContextManager):
    """Turn SIGINT/SIGTERM into a flag (``signum``) checked after each step; a second signal acts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._previous[signum])

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class JsonLinesLog:
    """``log.jsonl``: one JSON object per step.

    On (re)start it is rewritten atomically from ``history`` (which drops records past the resumed checkpoint
    and any half-written line), then appended to.
    """

    def __init__(self, path: Path, history: list[dict]):
        self.path = path
        text = "".join(json.dumps(record) + "\n" for record in history)
        atomic_write(path, lambda tmp: tmp.write_text(text))

    def append(self, record: dict) -> None:
        """Add ``record`` as one line at the end of the log."""
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
