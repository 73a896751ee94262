"""What a training run needs from its process: the device check, accelerate and precision, signals, the log.

Example:
    >>> import tempfile
    >>> log = JsonLinesLog(Path(tempfile.mkdtemp()) / "log.jsonl", [{"step": 1, "loss": 2.0}])
    >>> log.append({"step": 2, "loss": 1.5})
    >>> log.path.read_text().splitlines()
    ['{"step": 1, "loss": 2.0}', '{"step": 2, "loss": 1.5}']
"""

from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from forethought.devices import resolve_device
from forethought.distributed import leave_world_at_exit
from forethought.errors import InvalidArgumentError, check_choice
from forethought.options import DEVICES
from forethought.reporting import atomic_write


def check_device(device: str) -> None:
    """Raise :class:`InvalidArgumentError` unless ``device`` is one of :data:`DEVICES` and available here."""
    check_choice("device", device, DEVICES)
    resolve_device(device)


@dataclass
class Runtime:
    """A run's ``accelerate.Accelerator``, with the device and the precision the run asked for.

    accelerate fixes a process's device and mixed precision when its first ``Accelerator`` is made; a later run in
    the same process that asks for others gets them here, with public API only: its model and batches go to
    ``device`` and its steps run under :meth:`autocast`. The accelerator does the rest (DDP, reductions, backward).

    Attributes:
        accelerator: the ``accelerate.Accelerator``, made without a mixed precision of its own.
        device: where the model and the batches go (the accelerator's own under several processes).
        bf16: whether steps and evaluations run under bfloat16 autocast.
    """

    accelerator: Any
    device: torch.device
    bf16: bool

    def autocast(self) -> AbstractContextManager:
        """bfloat16 autocast on :attr:`device` when :attr:`bf16`, else a context that changes nothing."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)


def make_runtime(device: str, mixed_precision: str) -> Runtime:
    """The :class:`Runtime` of a run on ``device`` with ``mixed_precision``.

    ``device`` is ``"auto"`` (the accelerator's), ``"cpu"``, ``"cuda"`` or ``"mps"``; ``mixed_precision="auto"``
    means bf16 autocast on a CUDA GPU that supports it, else none. DDP searches for unused parameters unless the
    caller turns it off (``runtime.accelerator.ddp_handler``).

    Example:
        >>> runtime = make_runtime("cpu", "no")
        >>> runtime.device, runtime.bf16
        (device(type='cpu'), False)
    """
    from accelerate import Accelerator, DistributedDataParallelKwargs

    check_device(device)
    several = int(os.environ.get("WORLD_SIZE", "1")) > 1 or (dist.is_available() and dist.is_initialized()
                                                               and dist.get_world_size() > 1)
    try:  # on CPUs accelerate's processes need cpu=True to meet over gloo; in one process the device is ours
        accelerator = Accelerator(cpu=not torch.cuda.is_available() or (several and device == "cpu"),
                                  kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    except ValueError as error:  # accelerate keeps a process's first device: its processes cannot move to the CPU
        raise InvalidArgumentError(f"device={device!r}: this process's accelerate state is on another device; run "
                                   "each process on its own GPU (device auto) or start them with --cpu") from error
    if accelerator.num_processes > 1:
        leave_world_at_exit()  # the process group goes down before the interpreter does
        if device not in ("auto", accelerator.device.type):
            raise InvalidArgumentError(f"device={device!r}, but the {accelerator.num_processes} processes run on "
                                       f"{accelerator.device.type}; use device auto under several processes")
    wanted = accelerator.device if device == "auto" else resolve_device(device)  # not one an earlier run left
    own = accelerator.device if wanted.type == accelerator.device.type else wanted
    bf16 = mixed_precision == "bf16" or (mixed_precision == "auto" and own.type == "cuda"
                                         and torch.cuda.is_bf16_supported())
    return Runtime(accelerator=accelerator, device=own, bf16=bf16)


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
