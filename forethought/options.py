"""The named choices that several layers share (the trainer, the hooks, the probes and the command line).

Plain Python, importable without torch, so that the command line can list them at once.

Example:
    >>> from forethought.options import MODES
    >>> MODES
    ('strict', 'cutgrad')
"""

#: Myopic gradient modes (see :func:`forethought.myopic_training.myopic`).
MODES = ("strict", "cutgrad")
#: How a position sees the past when it is ablated (see :func:`forethought.attention.ablate_past`).
ABLATIONS = ("self", "zero", "mean")
#: Where to train or run: accelerate's choice, or a named device.
DEVICES = ("auto", "cpu", "cuda", "mps")
#: Mixed precision for training.
MIXED_PRECISION = ("auto", "no", "bf16")
#: Probe methods of a sweep (see :func:`forethought.probes.probe_sweep`).
METHODS = ("vocab", "logistic", "future_lens", "ridge", "learned_prompt")
