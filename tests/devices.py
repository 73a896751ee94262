"""The device the suite runs on, and what depends on it: one place for the switch and the tolerances.

``pytest --device cuda`` (or ``FORETHOUGHT_TEST_DEVICE=cuda``, which ``scripts/test.sh`` passes through) makes every
test that builds a model, probes or tensors build them on that device; tokens stay where tests create them (the
CPU), which is the mixed-device case users meet. Without the switch everything runs on the CPU as before.
"""

from __future__ import annotations

import os

import torch

#: The suite's device; conftest's ``pytest_configure`` sets it from ``--device``.
DEVICE = torch.device(os.environ.get("FORETHOUGHT_TEST_DEVICE") or "cpu")
#: The commands of ``forethought.cli`` that take ``--device``: on a device run, tests call them with it.
DEVICE_COMMANDS = ("synthetic", "train", "myopia-gap", "probe-sweep", "compare", "lens-view", "gradient-split")


def set_device(name: str) -> torch.device:
    """Make ``name`` the suite's device, with deterministic float32 matmuls (no TF32) on CUDA."""
    global DEVICE
    DEVICE = torch.device(name)
    if DEVICE.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for, but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return DEVICE


def on_gpu() -> bool:
    """Whether the suite runs on an accelerator rather than the CPU."""
    return DEVICE.type != "cpu"


def tolerance(rtol: float, atol: float = 0.0) -> dict[str, float]:
    """``rtol``/``atol`` for ``torch.testing.assert_close`` on the suite's device.

    On the CPU they are as given. On a GPU, float32 reductions run in another order (and some kernels are not
    deterministic), so float32 comparisons get 10 times the room; float64 keeps its tolerances (give them as such).
    """
    scale = 10.0 if on_gpu() else 1.0
    return {"rtol": rtol * scale, "atol": atol * scale}


def main(argv: list[str]) -> int:
    """``forethought.cli.main(argv)``, with ``--device`` added for a device run (as a user on a GPU would type)."""
    from forethought.cli import main as cli_main

    argv = list(argv)
    if on_gpu() and argv and argv[0] in DEVICE_COMMANDS and "--device" not in argv and "--help" not in argv:
        argv += ["--device", str(DEVICE)]
    return cli_main(argv)


def one_error_line(capsys, argv: list[str]) -> str:
    """Run the CLI on ``argv`` expecting a refusal: exit code 2, one line on stderr and no traceback; that line."""
    capsys.readouterr()  # what fixtures printed while building their models
    try:
        code = main(argv)
    except SystemExit as exit:
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err.strip()
