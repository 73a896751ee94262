"""The processes of a multi-process run (``torchrun``, ``accelerate launch``), through accelerate.

:func:`current_world` is accelerate's ``PartialState`` when several processes run, and ``None`` in an ordinary
single process, where nothing is set up (one environment variable is read). Work is split with
``PartialState.split_between_processes``; small things travel with accelerate's ``gather_object`` and
``broadcast_object_list``. Only what accelerate lacks is here: moving large things to process 0 *alone*
(:func:`gather_to_main`, :func:`send_to_main`, :func:`receive_into`), and taking the process group down before
the interpreter exits (:func:`leave_world_at_exit`).

Example:
    >>> current_world() is None  # a plain Python process
    True
"""

from __future__ import annotations

import atexit
import functools
import os
from typing import Any

import torch
import torch.distributed as dist
from accelerate import PartialState

from forethought.errors import DistributedError

_GLOO_GROUPS: dict[int, Any] = {}  # id of the default group -> the gloo group made beside it


def current_world() -> Any:
    """The ``accelerate.PartialState`` when several processes run, else ``None`` (nothing is set up then).

    Under ``torchrun`` or ``accelerate launch`` without a process group yet, ``PartialState`` sets one up (gloo on
    a machine without CUDA, NCCL with it), as ``Accelerator`` would, and forethought takes it down at exit.
    """
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    state = PartialState(cpu=not torch.cuda.is_available())
    if not dist.is_initialized():
        raise DistributedError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but no process group could be set up; "
                               "start the processes with torchrun or accelerate launch")
    if not initialised:
        leave_world_at_exit()
    if dist.get_world_size() == 1:
        return None
    if state.num_processes != dist.get_world_size():
        raise DistributedError(f"accelerate counts {state.num_processes} processes where torch.distributed has "
                               f"{dist.get_world_size()}; on a machine without CUDA create accelerate's state with "
                               "cpu=True (or launch with accelerate launch --cpu)")
    _gloo_group()  # made now, while every process is here: making it is a collective
    return state


@functools.cache
def leave_world_at_exit() -> None:
    """Have :func:`leave_world` run when the interpreter exits (registered once, however often asked)."""
    atexit.register(leave_world)


def leave_world() -> None:
    """Destroy the process group, if one is still up: run at exit where forethought set the group up.

    A process that exits with its gloo group still alive can abort while its threads are torn down
    ("terminate called without an active exception"), failing a run whose work was done.
    """
    if dist.is_available() and dist.is_initialized():
        _GLOO_GROUPS.clear()
        dist.destroy_process_group()


def process_device(device: torch.device | None, world: Any) -> torch.device | None:
    """This process's own GPU when several processes ask for ``cuda`` without an index.

    Anything else is returned as it is: a plain process (``world`` is ``None``), a CPU, or an explicit ``cuda:N``.

    Example:
        >>> process_device(torch.device("cuda"), None)
        device(type='cuda')
    """
    if world is None or device is None or device.type != "cuda" or device.index is not None:
        return device
    return torch.device("cuda", world.local_process_index)


def gather_to_main(world: Any, value: Any) -> list[Any] | None:
    """Every process's picklable ``value``, in rank order, on process 0 only (the others get ``None``).

    Ours because accelerate's ``gather_object`` delivers everything to every process, through GPU memory under
    NCCL: fitted probes over a large vocabulary are big, so they go to process 0 alone, over gloo.
    """
    values = [None] * world.num_processes if world.is_main_process else None
    dist.gather_object(value, values, dst=0, group=_gloo_group())
    return values


def send_to_main(tensor: torch.Tensor) -> None:
    """Send a contiguous CPU tensor to process 0, which receives it with :func:`receive_into`.

    Ours because accelerate gathers tensors to every process, padded to one shape: activations of a whole data
    set would be held once per process. Here process 0 receives each share into its place in one buffer.
    """
    dist.send(_bytes(tensor), dst=0, group=_gloo_group())


def receive_into(tensor: torch.Tensor, source: int) -> None:
    """Receive, on process 0, what process ``source`` sent into the contiguous CPU tensor ``tensor``."""
    dist.recv(_bytes(tensor), src=source, group=_gloo_group())


def _gloo_group() -> Any:
    """``None`` when the default group is gloo, else a gloo group made beside it, once: CPU tensors travel there."""
    if "gloo" in str(dist.get_backend()):
        return None
    key = id(dist.group.WORLD)
    if key not in _GLOO_GROUPS:
        _GLOO_GROUPS[key] = dist.new_group(backend="gloo")  # a collective: every process gets here together
    return _GLOO_GROUPS[key]


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The same memory as bytes, so any dtype (bfloat16, float8) travels through gloo unchanged."""
    if not tensor.is_contiguous():
        raise ValueError("only contiguous tensors can be sent")  # an internal misuse, not a user error
    return tensor.reshape(-1).view(torch.uint8)
