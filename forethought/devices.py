"""Device names from users: one check, so that every command and function refuses the same way.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device(None) is None
    True
"""

from __future__ import annotations

import torch

from forethought.errors import InvalidArgumentError


def resolve_device(name: str | torch.device | None) -> torch.device | None:
    """The torch device that ``name`` asks for, checked to exist on this machine.

    ``None`` (leave it to the caller), ``"auto"`` (CUDA when available, else CPU) or a torch device that exists
    on this machine (``cpu``, ``cuda``, ``cuda:N``, ``mps``); anything else raises :class:`InvalidArgumentError`.
    """
    if name is None or isinstance(name, torch.device):
        return name
    if not str(name).strip():
        raise InvalidArgumentError("device is empty; use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise InvalidArgumentError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from error
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if device.type in available and not available[device.type]():
        raise InvalidArgumentError(f"device={name!r} is not available on this machine; use auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InvalidArgumentError(f"device={name!r} does not exist: this machine has "
                                   f"{torch.cuda.device_count()} CUDA devices")
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidArgumentError(f"device={name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device
