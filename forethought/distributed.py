"""The processes of a multi-process run (``torchrun``, ``accelerate launch``), seen from one of them.

:func:`current_world` is ``None`` in an ordinary single process, so code that splits work between processes
costs nothing there: it reads one environment variable and asks ``torch.distributed`` whether a process group
exists; ``accelerate`` is imported only when processes were launched but no group was set up yet. Messages go
through a gloo group, so CPU tensors travel even when the default group is NCCL.

Example:
    >>> current_world() is None  # a plain Python process
    True
    >>> [list(share(5, rank, 2)) for rank in range(2)]  # 5 batches over 2 processes, in order
    [[0, 1, 2], [3, 4]]
"""

from __future__ import annotations

import atexit
import functools
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from forethought.errors import DistributedError

_GLOO_GROUPS: dict[int, Any] = {}  # id of the default group -> the gloo group made beside it


@dataclass(frozen=True)
class World:
    """This process's ``rank`` among ``size`` processes, and the group (gloo) their messages go through."""

    rank: int
    size: int
    group: Any = None  # None: the default group, which is gloo

    @property
    def is_main(self) -> bool:
        """Whether this is process 0, where results are gathered."""
        return self.rank == 0


def current_world() -> World | None:
    """The running processes when there are several, else ``None`` (nothing is imported or set up then).

    Under ``torchrun`` or ``accelerate launch`` without a process group yet, accelerate's ``PartialState``
    creates one (gloo on CPUs, NCCL on GPUs), as ``Accelerator`` would.
    """
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return None
        from accelerate import PartialState

        PartialState()
        if not dist.is_initialized():
            raise DistributedError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but no process group could be set up; "
                                   "start the processes with torchrun or accelerate launch")
        leave_world_at_exit()
    size = dist.get_world_size()
    if size == 1:
        return None
    return World(rank=dist.get_rank(), size=size, group=_gloo_group())


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


def _gloo_group() -> Any:
    if "gloo" in str(dist.get_backend()):
        return None
    key = id(dist.group.WORLD)
    if key not in _GLOO_GROUPS:
        _GLOO_GROUPS[key] = dist.new_group(backend="gloo")  # a collective: every process gets here together
    return _GLOO_GROUPS[key]


def process_device(device: torch.device | None, world: World | None) -> torch.device | None:
    """This process's own GPU when several processes ask for ``cuda`` without an index (``LOCAL_RANK``).

    Anything else is returned as it is: a plain process, a CPU, or an explicit ``cuda:N``.

    Example:
        >>> process_device(torch.device("cuda"), None)
        device(type='cuda')
    """
    if world is None or device is None or device.type != "cuda" or device.index is not None:
        return device
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", world.rank)))


def share(n_items: int, rank: int, size: int) -> range:
    """The contiguous part of ``range(n_items)`` that process ``rank`` of ``size`` takes.

    Parts follow rank order, so concatenating them in rank order restores the original order; the first
    ``n_items % size`` processes take one item more.
    """
    base, extra = divmod(n_items, size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def agree(world: World, failed: bool) -> int | None:
    """Wait for every process; return the lowest rank that ``failed`` (each passes its own flag), or None."""
    flags = torch.zeros(world.size, dtype=torch.int64, device="cpu")  # gloo: host tensors
    flags[world.rank] = int(failed)
    dist.all_reduce(flags, group=world.group)
    failing = flags.nonzero().flatten().tolist()
    return failing[0] if failing else None


def gather_ints(world: World, values: list[int]) -> list[list[int]]:
    """Every process's ``values`` (lists of one length), in rank order, on every process."""
    mine = torch.tensor(values, dtype=torch.int64, device="cpu")  # gloo: host tensors
    every = [torch.empty_like(mine) for _ in range(world.size)]
    dist.all_gather(every, mine, group=world.group)
    return [tensor.tolist() for tensor in every]


def broadcast_text(world: World, text: str | None) -> str | None:
    """``text`` from process 0 on every process (``None`` stays ``None``)."""
    box = [text]
    dist.broadcast_object_list(box, src=0, group=world.group)
    return box[0]


def gather_objects(world: World, value: Any, to_main: bool = False) -> list[Any] | None:
    """Every process's picklable ``value``, in rank order.

    The list arrives on every process, or (``to_main``) on process 0 only (the others get ``None``). For small
    things such as table rows; tensors travel with :func:`send_to_main`.
    """
    if not to_main:
        values: list[Any] = [None] * world.size
        dist.all_gather_object(values, value, group=world.group)
        return values
    values = [None] * world.size if world.is_main else None
    dist.gather_object(value, values, dst=0, group=world.group)
    return values


def send_to_main(world: World, tensor: torch.Tensor) -> None:
    """Send a contiguous CPU tensor to process 0, which receives it with :func:`receive_into`."""
    dist.send(_bytes(tensor), dst=0, group=world.group)


def receive_into(world: World, tensor: torch.Tensor, source: int) -> None:
    """Receive, on process 0, what process ``source`` sent into the contiguous CPU tensor ``tensor``."""
    dist.recv(_bytes(tensor), src=source, group=world.group)


def _bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The same memory as bytes, so any dtype (bfloat16, float8) travels through gloo unchanged."""
    if not tensor.is_contiguous():
        raise ValueError("only contiguous tensors can be sent")  # an internal misuse, not a user error
    return tensor.reshape(-1).view(torch.uint8)
